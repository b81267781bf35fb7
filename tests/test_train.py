"""helpers.recipes and helpers.train: recipes are checked, runs are reproducible and survive a kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from .support import needs_real_data
from helpers import config, models, recipes, train

RECIPE = config.ROOT / "recipes" / "lenet.toml"


def toml_value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(v)


def write_experiment(path, **tables) -> str:
    """An experiment file: the LeNet recipe with the given tables' keys overridden."""
    lines = [f'base = "{RECIPE.as_posix()}"']
    for table, keys in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("name", ["lenet", "resnet50", "lenet15"])
def test_committed_recipes_load(name):
    recipe = recipes.load(config.ROOT / "recipes" / f"{name}.toml")
    assert recipe["model"]["architecture"] in recipes.ARCHITECTURES
    assert len(recipe["meta"]["sha256"]) == 64


@pytest.mark.parametrize("tables, key", [
    ({"training": {"epochz": 3}}, "training.epochz"),
    ({"training": {"epochs": 0}}, "training.epochs"),
    ({"loss": {"kind": "huber"}}, "loss.kind"),
    ({"augment": {"flip": 0.5}}, "augment"),
    ({"augment": {"flip_p": 2.0}}, "augment"),
    ({"data": {"repeat": {"300w/afw": 2}}}, "data.repeat.300w/afw"),
    ({"optimiser": {"learning_rate": 1e-3}}, "optimiser"),
    ({"training": {"frozen_bn_epochs": 150}}, "training.frozen_bn_epochs"),      # as many as the epochs
])
def test_bad_recipes_name_the_file_and_the_key(tmp_path, tables, key):
    path = write_experiment(tmp_path / "bad.toml", **tables)
    with pytest.raises(recipes.RecipeError, match=r"bad\.toml") as err:
        recipes.load(path)
    assert key in str(err.value)


def test_experiment_overrides_only_its_keys(tmp_path):
    base = recipes.load(RECIPE)
    exp = recipes.load(write_experiment(tmp_path / "flip.toml", augment={"flip_p": 0.5}))
    assert exp["augment"]["flip_p"] == 0.5 and exp["augment"]["rotation_deg"] == base["augment"]["rotation_deg"]
    assert exp["training"] == base["training"] and exp["meta"]["sha256"] != base["meta"]["sha256"]
    assert recipes.augment_params(exp).scale == tuple(base["augment"]["scale"])


def test_profiles_scale_only_epochs_and_faces():
    base = recipes.load(RECIPE)
    smoke = recipes.scaled(base, config.get_profile("smoke"))
    full = recipes.scaled(base, config.get_profile("full"))
    assert full["training"] == base["training"]
    assert smoke["training"]["epochs"] == 2 and smoke["meta"]["max_faces"] == 120
    assert {k: v for k, v in smoke.items() if k not in ("training", "meta")} == \
           {k: v for k, v in base.items() if k not in ("training", "meta")}


def test_write_atomic_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "f.json"
    config.write_atomic(path, "old")

    def die(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        config.write_atomic(path, "new")
    assert path.read_text() == "old"


def _weights(run_dir) -> str:
    return json.loads((run_dir / "summary.json").read_text())["weights_sha256"]


def _comparable(run_dir) -> dict:
    s = json.loads((run_dir / "summary.json").read_text())
    for key in ("train_seconds", "finished"):
        s.pop(key)
    return s


@needs_real_data
@pytest.mark.parametrize("frozen_bn_epochs", [0, 1])
def test_killed_run_resumes_to_the_same_model_and_summary(tmp_path, frozen_bn_epochs):
    """Two runs from scratch agree bit for bit; a run killed mid-epoch and resumed agrees with them (with a frozen
    batch-norm epoch: killed just before it starts)."""
    recipe = write_experiment(tmp_path / "tiny.toml", training={"batch_size": 8, "frozen_bn_epochs": frozen_bn_epochs})
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train.train(recipe, "smoke", a, quiet=True)
    train.train(recipe, "smoke", b, quiet=True)
    assert _weights(a) == _weights(b)

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_XLA_FLAGS": ""}     # facekp train's XLA off, as in a and b
    proc = subprocess.Popen([sys.executable, "-m", "helpers.cli", "train", recipe, "--profile", "smoke",
                             "--out", str(c)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env, cwd=config.ROOT)
    for line in proc.stdout:                     # the first epoch is done and backed up: kill in the second
        if "epoch 1:" in line:
            time.sleep(0.5)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = json.loads(str(np.load(c / "backup.npz")["state"]))
    assert state["epochs_done"] == 1 and not (c / "summary.json").exists()
    with pytest.warns(UserWarning, match="after epoch 1: its model.keras is the best epoch so far"):
        models.resolve_model_path(c / "model.keras")                      # using it says what it is
    train.train(recipe, "smoke", c, quiet=True)
    assert models.unfinished_after(c) is None and models.unfinished_after(tmp_path) is None
    assert _weights(c) == _weights(a)
    assert _comparable(c) == _comparable(a)
    history = (c / "history.csv").read_text().splitlines()
    assert len(history) == 3                     # header + two epochs, none repeated
    assert ("batch norm frozen for epochs 2-2" in (c / "train.log").read_text()) == bool(frozen_bn_epochs)
    changes = "training.batch_size=8" + (", training.frozen_bn_epochs=1" if frozen_bn_epochs else "")
    assert train.experiments_table([c])["changes"].tolist() == [changes]     # training keys count too


@needs_real_data
def test_finished_run_is_not_trained_again_and_another_recipe_is_refused(tmp_path):
    recipe = write_experiment(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    first = train.train(recipe, "smoke", out, quiet=True)
    again = train.train(recipe, "smoke", out, quiet=True)
    assert again.summary["weights_sha256"] == first.summary["weights_sha256"]
    assert len(again.history) == first.summary["epochs_run"]
    versions = first.summary["versions"]               # what bitwise reproduction depends on is recorded
    assert versions[versions["backend"]] != "?" and first.summary["machine"] == config.machine()
    other = write_experiment(tmp_path / "other.toml", loss={"kind": "wing"})
    with pytest.raises(recipes.RecipeError, match="another recipe"):
        train.train(other, "smoke", out, quiet=True)
    # models/README.md is written from run folders: the command, the recipe check, measured test NME
    readme = train.models_readme(tmp_path)
    assert f"--out models/run`" in readme and "| `run` |" in readme and "settings: match" in readme
    assert readme.count("(≤") == 0 and "YouTube-Faces test NME %" in readme      # no target for this name
    text = (tmp_path / "tiny.toml").read_text()
    (tmp_path / "tiny.toml").write_text("# a comment does not change the recipe\n" + text)
    assert "settings: match" in train.models_readme(tmp_path)
    (tmp_path / "tiny.toml").write_text(text + "[optimizer]\nlearning_rate = 0.002\n")
    assert "do NOT match" in train.models_readme(tmp_path)


@needs_real_data
def test_a_chapter_trains_in_a_child_process_what_the_command_line_trains(tmp_path, monkeypatch, capsys):
    recipe = write_experiment(tmp_path / "tiny.toml", training={"batch_size": 8})
    here = train.train(recipe, "smoke", tmp_path / "here", quiet=True)        # this process: no XLA, as smoke's child
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    monkeypatch.delenv("TF_XLA_FLAGS", raising=False)                          # a setting of yours would be kept
    child = train.train_in_child(recipe, "smoke")
    assert child.run_dir == tmp_path / "runs" / "tiny-smoke"
    assert child.summary["weights_sha256"] == here.summary["weights_sha256"]
    assert child.history.epoch.tolist() == here.history.epoch.tolist()
    assert "epoch 1:" in capsys.readouterr().out                               # its log, as it comes
    write_experiment(tmp_path / "tiny.toml", training={"batch_size": 8}, loss={"kind": "mse"})
    again = train.train_in_child(recipe, "smoke")                              # the recipe changed: from scratch
    assert "retraining it from scratch" in capsys.readouterr().out
    assert again.summary["settings"]["loss"]["kind"] == "mse"
    with pytest.raises(ValueError, match="named profile"):
        train.train_in_child(recipe, config.get_profile("smoke", max_faces=10))


def write_kaggle_csv(path, n: int = 60, seed: int = 0) -> np.ndarray:
    """A Kaggle-format training.csv of ``n`` synthetic 96×96 faces; two thirds of the rows miss 11 keypoints."""
    from helpers.schemes import SCHEME_15, to_15
    from .support import face_68

    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kp = to_15(face_68(70, 70, jitter=1.0, seed=i)) + 13
        image = rng.integers(0, 80, (96, 96))
        for x, y in kp.astype(int):
            image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = 255
        values = kp.ravel().astype(object)
        if i % 3:
            values[4:26] = ""                  # only eye centres, nose tip and mouth: as in most Kaggle rows
        rows.append(",".join(map(str, values)) + "," + " ".join(map(str, image.ravel())))
    header = ",".join(f"{n}_{a}" for n in SCHEME_15.names for a in "xy") + ",Image"
    path.parent.mkdir(parents=True)
    path.write_text(header + "\n" + "\n".join(rows) + "\n")


def test_fifteen_point_recipe_trains_on_a_kaggle_csv_with_missing_labels(tmp_path, monkeypatch):
    write_kaggle_csv(tmp_path / "data" / "kaggle" / "training.csv")
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    result = train.train(config.ROOT / "recipes" / "lenet15.toml", "smoke", tmp_path / "run", quiet=True)
    s = result.summary
    assert s["train_source"] == "kaggle" and list(s["val_faces"]) == ["kaggle"]
    assert s["epochs_run"] == 2 and np.isfinite(s["best_val_nme"])
    assert np.isfinite(result.history["loss"]).all()              # missing labels are masked, never NaN
    model = models.load_model(result.model_path)
    assert model.output_shape == (None, 30)


@needs_real_data
def test_repeat_enters_a_data_set_k_times(tmp_path):
    smoke = config.get_profile("smoke")
    once = recipes.scaled(recipes.load(RECIPE), smoke)
    thrice = recipes.scaled(recipes.load(write_experiment(tmp_path / "b.toml", data={
        "repeat": {"300w/helen-train": 3}})), smoke)
    (t1, v1), (t3, v3) = train.training_data(once), train.training_data(thrice)
    assert len(t3) > len(t1) and (len(t3) - len(t1)) % 2 == 0 and v3.keys() == v1.keys()
    assert t1.source == "youtube-faces-68+300w/helen-train+300w/lfpw-train"
    assert t3.source == "youtube-faces-68+300w/helen-train*3+300w/lfpw-train"
    names, counts = np.unique(t3.names, return_counts=True)
    assert set(counts) == {1, 3} and (len(t3) - len(t1)) == 2 * int(np.sum(counts == 3))


def test_missing_data_sets_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="300w/helen-train"):
        train.training_data(recipes.scaled(recipes.load(RECIPE), config.get_profile("smoke")))


def test_a_clone_with_only_youtube_faces_trains_on_it_and_says_so(tiny_youtube, monkeypatch):
    monkeypatch.setenv("FKP_DATA_DIR", str(tiny_youtube))
    recipe = recipes.scaled(recipes.load(RECIPE), config.get_profile("smoke"))
    with pytest.warns(UserWarning, match="300w/helen-train, 300w/lfpw-train not found"):
        resolved = train.resolve_data(recipe)
    assert resolved["data"]["train"] == resolved["data"]["validation"] == ["youtube-faces-68"]
    assert resolved["meta"]["missing_data"] == ["300w/helen-train", "300w/lfpw-train"]
    assert recipes.content_hash(resolved) != recipes.content_hash(recipe)       # a run of other data
    assert train.resolve_data(resolved) is resolved                             # nothing left to resolve


@needs_real_data
def test_with_all_data_the_recipe_is_unchanged():
    recipe = recipes.scaled(recipes.load(RECIPE), config.get_profile("smoke"))
    assert train.resolve_data(recipe) is recipe


@needs_real_data
def test_an_unreadable_backup_is_a_clear_error(tmp_path):
    recipe = write_experiment(tmp_path / "tiny.toml")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "backup.npz").write_bytes(b"PK\x03\x04 not a backup")
    with pytest.raises(recipes.RecipeError, match="cannot be resumed.*--restart"):
        train.train(recipe, "smoke", tmp_path / "run", quiet=True)


def test_a_table_given_as_a_value_is_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(f'base = "{RECIPE.as_posix()}"\ntraining = 3\n')
    with pytest.raises(recipes.RecipeError, match=r"bad\.toml: \[training\] is not a recipe table"):
        recipes.load(path)


def test_evaluating_chapters_use_the_committed_model_in_every_profile(tmp_path, monkeypatch):
    committed = tmp_path / "lenet"
    committed.mkdir()
    (committed / train.FILES["summary"]).write_text(json.dumps({"best_epoch": 3}))
    (committed / train.FILES["history"]).write_text("epoch,val_nme\n1,0.1\n")
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    trained = []
    monkeypatch.setattr(train, "train_in_child", lambda *a, **k: trained.append(a) or "trained")
    run = train.saved_or_trained("lenet", "smoke", prefer_saved=True)
    assert run.run_dir == committed and run.summary["best_epoch"] == 3 and not trained
    assert train.saved_or_trained("lenet", "full").run_dir == committed
    assert train.saved_or_trained("lenet", "smoke") == "trained"                   # a training chapter
    assert train.saved_or_trained("lenet", "smoke", True, prefer_saved=True) == "trained"   # TRAIN = True
    with pytest.raises(FileNotFoundError, match="facekp train recipes/resnet50.toml"):
        train.saved_or_trained("resnet50", "full", prefer_saved=True)        # not hours of training unasked
    assert train.saved_or_trained("resnet50", "full", True) == "trained"
