"""helpers.train.write_model_cards: models/README.md's generated section and the metrics JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import config, export, models, train
from helpers.data import sha256sum


def test_model_cards_are_measured_from_the_committed_files(tiny_300w, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.setattr(train, "CARD_SPLITS", {"tiny AFW": (f"300w:{tiny_300w}", None)})
    path = tmp_path / "lenet.keras"
    models.compile_model(models.lenet("68", filters=(4, 8, 8, 8), units=16), "68").save(path)
    (tmp_path / "lenet_summary.json").write_text(json.dumps({"profile": "smoke", "epochs_run": 3,
                                                             "stopped_by": "epochs", "train_seconds": 120}))
    rng = np.random.default_rng(0)
    export.export_int8(path, calibration_images=(rng.random((8, 96, 96)) * 255).astype(np.uint8))
    readme = tmp_path / "README.md"
    readme.write_text(f"# Models\n\nintro stays\n\n{train.CARD_START}\nold numbers\n{train.CARD_END}\n\ntail stays\n")

    train.write_model_cards(names=("lenet", "resnet50"), readme=readme, repeats=2)   # no resnet50 here: skipped
    text = readme.read_text()
    assert text.startswith("# Models\n\nintro stays") and text.rstrip().endswith("tail stays")
    assert "old numbers" not in text and "resnet50.keras" not in text
    assert sha256sum(path) in text and "lenet.int8.onnx" in text and "| tiny AFW | 4 |" in text
    metrics = json.loads((tmp_path / "lenet_metrics.json").read_text())
    assert metrics["sha256"] == sha256sum(path)
    assert set(metrics["speed"]) == {"keras", "onnx", "int8"}
    row = metrics["splits"]["tiny AFW"]
    assert row["faces"] == 4 and row["nme"] > 0 and row["int8_nme"] == pytest.approx(row["nme"], rel=0.5)
    assert f"{row['nme']:.2f}" in text

    readme.write_text("no markers")
    with pytest.raises(ValueError, match="markers"):
        train.write_model_cards(names=("lenet",), readme=readme, repeats=2)
