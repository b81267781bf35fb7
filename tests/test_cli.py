import json
import os

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


def test_facekp_train_turns_on_xla_auto_clustering_unless_told_otherwise(monkeypatch, capsys):
    summary = {"best_epoch": 1, "epochs_run": 1, "stopped_by": "epochs", "best_val_nme": 0.1, "train_seconds": 6}
    seen = []
    monkeypatch.setattr(cli.train, "train", lambda *a, **k: seen.append(os.environ.get("TF_XLA_FLAGS"))
                        or cli.train.RunResult(config.ROOT / "x", summary, None))
    monkeypatch.setenv("TF_XLA_FLAGS", "")                  # recorded, so that the value cli sets is undone
    monkeypatch.delenv("TF_XLA_FLAGS")
    assert cli.main(["train", "recipes/lenet.toml"]) == 0
    monkeypatch.setenv("TF_XLA_FLAGS", "")                  # a setting of the user's own (here: XLA off) is kept
    assert cli.main(["train", "recipes/lenet.toml"]) == 0
    assert seen == [config.XLA_FLAGS, ""] and "validation NME 10.00 %" in capsys.readouterr().out
