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
