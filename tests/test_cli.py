import json

from helpers import cli, config


def test_facekp_data_json_on_a_300w_folder(tiny_300w, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    assert cli.main(["data", f"300w:{tiny_300w}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["faces"] == 4 and out["people"] == 4 and out["keypoints_per_face"] == 68
    assert out["splits"]["test"]["faces"] == 4 and out["people_in_two_splits"] == 0     # an AFW-named folder


def test_facekp_data_missing_set_fails_cleanly(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path))
    assert cli.main(["data", "youtube-faces-68"]) == 1
    assert "FKP_DATA_DIR" in capsys.readouterr().err
    assert cli.main(["data"]) == 1


def test_facekp_download_from_a_local_archive(tmp_path, tiny_youtube, monkeypatch, capsys):
    import zipfile

    archive = tmp_path / "train-test-data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in (tiny_youtube / "youtube-faces-68").rglob("*"):
            if f.is_file():
                zf.write(f, str(f.relative_to(tiny_youtube / "youtube-faces-68")))
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path / "root"))
    monkeypatch.setattr(config, "PROJECT_DATA_DIR", tmp_path / "project-data")
    assert cli.main(["download", "youtube-faces-68", "--url", archive.as_uri()]) == 0
    assert (tmp_path / "root" / "youtube-faces-68" / "test_frames_keypoints.csv").exists()
    assert cli.main(["download", "300w"]) == 1
    assert "registration" in capsys.readouterr().err
