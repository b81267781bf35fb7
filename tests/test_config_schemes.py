from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.notebook import count, rounded
from helpers.schemes import MAP_68_TO_15, SCHEME_15, SCHEME_68, get_scheme, to_15


def test_data_root_env_relative_to_project(monkeypatch, tmp_path):
    monkeypatch.setenv("FKP_DATA_DIR", "../somewhere")
    assert config.data_root() == (config.ROOT / "../somewhere").resolve()
    monkeypatch.setenv("FKP_DATA_DIR", str(tmp_path))
    assert config.data_root() == tmp_path.resolve()
    monkeypatch.delenv("FKP_DATA_DIR")
    assert config.data_root() == config.PROJECT_DATA_DIR


def test_profiles(monkeypatch):
    monkeypatch.setenv("FKP_PROFILE", "smoke")
    assert config.get_profile().name == "smoke"
    assert config.get_profile("full").max_faces is None
    assert config.get_profile("quick", max_epochs=3).epochs(150) == 3
    smoke, quick, full = (config.get_profile(n) for n in ("smoke", "quick", "full"))
    assert smoke.max_faces < quick.max_faces
    # outside smoke, a profile scales training only: the chapters describe and evaluate every face
    assert quick.data_max_faces is quick.eval_max_faces is full.data_max_faces is full.eval_max_faces is None
    assert smoke.data_max_faces and smoke.eval_max_faces
    assert [p.epochs(150) for p in (smoke, quick, full)] == [2, 15, 150]
    assert smoke.epochs(1) == quick.epochs(1) == full.epochs(1) == 1
    monkeypatch.setenv("FKP_PROFILE", "huge")
    with pytest.raises(ValueError, match="FKP_PROFILE"):
        config.get_profile()


def test_paths_do_not_depend_on_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert (config.ROOT / "helpers" / "config.py").exists()
    assert config.FIGURES_DIR == config.ROOT / "figures"


@pytest.mark.parametrize("scheme", [SCHEME_68, SCHEME_15])
def test_flip_permutation_is_an_involution_that_swaps_sides(scheme):
    perm = scheme.flip_permutation
    assert np.array_equal(perm[perm], np.arange(scheme.num_keypoints))
    assert np.array_equal(scheme.sides[perm], -scheme.sides)
    assert (scheme.sides == 1).sum() == (scheme.sides == -1).sum() > 0


def test_68_scheme_landmarks():
    assert SCHEME_68.names[8] == "chin" and SCHEME_68.names[30] == "nose_bridge_3"
    assert SCHEME_68.flip_permutation[36] == 45 and SCHEME_68.flip_permutation[48] == 54
    assert SCHEME_68.flip_permutation[30] == 30
    assert len(SCHEME_68.edges) == 16 + 4 + 4 + 3 + 6 + 6 + 6 + 12 + 8


def test_to_15_mapping():
    kp = np.zeros((68, 2), np.float32)
    kp[:, 0] = np.arange(68)
    kp[:, 1] = 100 + np.arange(68)
    out = to_15(kp)
    assert out.shape == (15, 2)
    assert out[0, 0] == pytest.approx(np.mean(range(42, 48)))     # left eye centre: subject's left eye
    assert out[1, 0] == pytest.approx(np.mean(range(36, 42)))
    idx = {n: i for i, n in enumerate(SCHEME_15.names)}
    assert out[idx["nose_tip"], 0] == 30 and out[idx["mouth_left_corner"], 0] == 54
    assert out[idx["left_eye_outer_corner"], 0] == 45 and out[idx["right_eyebrow_outer_end"], 0] == 17
    # the mapping respects flipping: mapping then relabelling == relabelling then mapping
    flipped68 = kp[SCHEME_68.flip_permutation]
    np.testing.assert_allclose(to_15(flipped68), out[SCHEME_15.flip_permutation])
    assert len(MAP_68_TO_15) == 15
    with pytest.raises(ValueError):
        to_15(np.zeros((15, 2)))


def test_get_scheme():
    assert get_scheme(68) is SCHEME_68 and get_scheme("15") is SCHEME_15
    with pytest.raises(ValueError):
        get_scheme("5")


def test_interocular():
    kp = np.zeros((68, 2))
    kp[45] = [30, 40]
    assert SCHEME_68.interocular(kp) == pytest.approx(50.0)


def test_prose_counts_agree_in_number():
    assert count(1, "face") == "1 face"
    assert count(0, "face") == "0 faces"
    assert count(1234, "face") == "1,234 faces"
    assert count(2, "person", "people") == "2 people" and count(1, "person", "people") == "1 person"


def test_tables_show_a_dash_where_a_value_does_not_exist():
    shown = rounded(pd.DataFrame({"lag": [1.23456, np.nan, -0.001], "n": [3, 4, 5]}), 2)
    assert shown["lag"].tolist() == ["1.23", "—", "0.00"] and shown["n"].tolist() == [3, 4, 5]


def test_paths_are_shown_from_the_repository_root():
    assert config.shown(config.RUNS_DIR / "x") == Path("models/runs/x")
    outside = config.ROOT.parent / "elsewhere"
    assert config.shown(outside) == outside
