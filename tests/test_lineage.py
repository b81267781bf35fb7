"""helpers.train.lineage: a warm-started run's history and totals include the run it started from."""
from __future__ import annotations

import json

import pandas as pd

from helpers import train


def _run(folder, epochs, best, seconds, init_from=None):
    folder.mkdir(parents=True)
    pd.DataFrame({"epoch": range(epochs), "loss": 1.0, "lr": 1e-3, "nme": 0.1, "rmse_px": 1.0,
                  "seconds": seconds, "val_loss": 1.0, "val_nme": [0.2 - 0.001 * i for i in range(epochs)],
                  "val_rmse_px": 1.0}).to_csv(folder / "log.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"epochs_run": epochs, "best_epoch": best,
                                                     "train_seconds": epochs * seconds, "init_from": init_from,
                                                     "stopped_by": "epochs"}))
    (folder / "best.keras").write_bytes(b"")
    return folder


def test_lineage_counts_the_parent_up_to_its_best_epoch(tmp_path):
    parent = _run(tmp_path / "a", epochs=10, best=6, seconds=10.0)
    child = _run(tmp_path / "b", epochs=4, best=3, seconds=5.0, init_from=str(parent / "best.keras"))
    history, summary = train.lineage(child)
    assert list(history["epoch"]) == list(range(10))             # 6 parent epochs, then the child's 4
    assert summary["epochs_run"] == 10 and summary["best_epoch"] == 9
    assert summary["train_seconds"] == 6 * 10.0 + 4 * 5.0
    assert [r["epochs_run"] for r in summary["lineage"]] == [10, 4]

    published = tmp_path / "models"
    published.mkdir()
    history.to_csv(published / "m_history.csv", index=False)
    (published / "m_summary.json").write_text(json.dumps(summary))
    grandchild = _run(tmp_path / "c", epochs=2, best=2, seconds=1.0, init_from=str(published / "m.keras"))
    h2, s2 = train.lineage(grandchild)
    # the published lineage up to its best epoch (6 + 3 epochs), then the grandchild's 2
    assert len(h2) == 9 + 2 and s2["train_seconds"] == 60.0 + 15.0 + 2.0
    assert [r["epochs_run"] for r in s2["lineage"]] == [10, 4, 2]


def test_a_run_without_parent_is_its_own_lineage(tmp_path):
    run = _run(tmp_path / "a", epochs=3, best=2, seconds=2.0)
    history, summary = train.lineage(run)
    assert len(history) == 3 and summary["epochs_run"] == 3 and summary["best_epoch"] == 2


def test_runs_table_describes_each_run():
    from helpers import train

    summary = {"lineage": [
        {"epochs_run": 10, "best_epoch": 8, "train_seconds": 600, "stopped_by": "epochs", "loss": "mae",
         "learning_rate": 1e-3, "augment": {}, "init_from": None},
        {"epochs_run": 5, "best_epoch": 5, "train_seconds": 120, "stopped_by": "time_limit", "loss": "wing",
         "learning_rate": 1e-4, "augment": {"flip_p": 0.0, "scale": [0.95, 1.05]}, "init_from": "models/a.keras",
         "freeze_bn": True}]}
    table = train.runs_table(summary)
    assert table.index.tolist() == [1, 2] and table["minutes"].tolist() == [10.0, 2.0]
    assert table.loc[1, "augmentation"] == "chapter 03 defaults (with flips)"
    assert table.loc[2, "augmentation"] == "flip_p=0, scale=(0.95, 1.05)"
    assert table.loc[1, "started from"] == "random weights" and table.loc[2, "loss"] == "wing"
    assert table["batch norm"].tolist() == ["trained", "frozen"]
    assert train.describe_augment(None) == "not recorded" and train.describe_augment("off") == "off"


def test_model_record_describes_its_lineage():
    from helpers import config, train

    summary = {"profile": "full", "epochs_run": 15, "stopped_by": "time_limit", "best_epoch": 14,
               "train_seconds": 900, "best_val_nme": 0.0619, "lineage": [{}, {}]}
    text = train.ModelRecord(None, None, summary, "committed", config.MODELS_DIR / "lenet.keras").describe()
    assert text.splitlines()[0] == "model: committed (models/lenet.keras)"
    assert "15 epochs in 2 run(s)" in text and "15.0 min" in text and "6.19 %" in text


def test_a_run_published_over_its_own_start_is_not_counted_twice(tmp_path):
    parent = _run(tmp_path / "a", epochs=10, best=6, seconds=10.0)
    committed = tmp_path / "models"
    committed.mkdir()
    history, summary = train.lineage(parent)
    history.to_csv(committed / "m_history.csv", index=False)
    (committed / "m_summary.json").write_text(json.dumps(summary))
    child = _run(tmp_path / "b", epochs=4, best=3, seconds=5.0, init_from=str(committed / "m.keras"))
    record = json.loads((child / "summary.json").read_text()) | {"finished": "2026-11-23T13:53:27+00:00"}
    (child / "summary.json").write_text(json.dumps(record))
    history, summary = train.lineage(child)
    assert [r["epochs_run"] for r in summary["lineage"]] == [10, 4]
    # publish: the committed record now ends with the child itself, which still names it as its start
    history.to_csv(committed / "m_history.csv", index=False)
    (committed / "m_summary.json").write_text(json.dumps(summary))
    again, summary2 = train.lineage(child)
    assert [r["epochs_run"] for r in summary2["lineage"]] == [10, 4] and len(again) == len(history)
