import os

import numpy as np
import pandas as pd
import pytest

from helpers import config, splits

from .support import needs_real_data


def people(n):
    return np.array([f"person_{i}" for i in range(n) for _ in range(3)])


def test_identity_disjoint_and_roughly_proportional():
    ids = people(2000)
    lab = splits.assign_splits(ids)
    for a in splits.SPLITS:
        for b in splits.SPLITS:
            if a < b:
                assert not set(ids[lab == a]) & set(ids[lab == b])
    share = pd.Series(lab).value_counts(normalize=True)
    assert abs(share["train"] - 0.8) < 0.04 and abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.1) < 0.03


def test_stable_under_reordering_and_growth():
    ids = people(300)
    lab = splits.assign_splits(ids)
    order = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(splits.assign_splits(ids[order]), lab[order])
    grown = np.r_[ids, people(400)[len(ids):]]
    np.testing.assert_array_equal(splits.assign_splits(grown)[: len(ids)], lab)


def test_seeded():
    ids = people(300)
    assert not np.array_equal(splits.assign_splits(ids, seed=1), splits.assign_splits(ids, seed=2))
    np.testing.assert_array_equal(splits.assign_splits(ids, seed=1), splits.assign_splits(ids, seed=1))


def test_rules_per_data_set():
    assert splits.fractions_for("300w/afw") == (0.0, 0.0, 1.0)
    assert splits.fractions_for("300w:/some/where/afw") == (0.0, 0.0, 1.0)
    assert splits.fractions_for("300w/helen-train")[2] == 0.0
    assert set(splits.assign_splits(people(50), (0, 0, 1))) == {"test"}
    with pytest.raises(ValueError):
        splits.assign_splits(people(5), (0.5, 0.2, 0.2))


def test_save_splits(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "SPLITS_DIR", tmp_path)
    path = splits.save_splits("300w/afw", ["b.jpg", "a.jpg"], ["b", "a"], ["test", "test"])
    df = pd.read_csv(path)
    assert path.name == "300w_afw.csv" and list(df["name"]) == ["a.jpg", "b.jpg"]


def test_load_faces_from_folder_and_cache(tiny_youtube, monkeypatch, tmp_path):
    monkeypatch.setenv("FKP_DATA_DIR", str(tiny_youtube))
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    by_split = splits.load_splits("youtube-faces-68", progress=False)
    assert sum(len(f) for f in by_split.values()) == 6
    table = splits.split_table(by_split)
    assert table.attrs["people_in_two_splits"] == 0 and table["faces"].sum() == 6
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    again = splits.load_faces("youtube-faces-68", progress=False)        # from the cache
    assert len(again) == 6 and again.source == "youtube-faces-68"
    with pytest.raises(ValueError, match="split"):
        splits.load_faces("youtube-faces-68", "training")



@needs_real_data
def test_load_splits_uses_its_seed():
    """Another seed gives another split, the same one load_faces gives for that seed."""
    a, b = (splits.load_splits("youtube-faces-68", seed=s, progress=False) for s in (42, 7))
    assert set(a["test"].identities) != set(b["test"].identities)
    same = splits.load_faces("youtube-faces-68", "test", seed=7, progress=False)
    assert list(same.names) == list(b["test"].names)

@needs_real_data
def test_real_youtube_split_is_identity_disjoint():
    by_split = splits.load_splits("youtube-faces-68", progress=False)
    table = splits.split_table(by_split)
    assert table["faces"].sum() == 4301 and table["people"].sum() == 416
    assert table.attrs["people_in_two_splits"] == 0


def test_cache_writes_do_not_collide(tiny_youtube, monkeypatch, tmp_path):
    """Two processes building the same cache at once must both succeed (each writes its own temporary)."""
    import multiprocessing as mp

    monkeypatch.setenv("FKP_DATA_DIR", str(tiny_youtube))
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        sizes = pool.starmap(_build_faces, [(str(tmp_path / "cache"),)] * 4)
    assert sizes == [6] * 4
    assert [p.name.count(".") for p in (tmp_path / "cache").iterdir()] == [1]      # one .npz, no leftovers


def _build_faces(cache_dir):
    from pathlib import Path

    config.CACHE_DIR = Path(cache_dir)
    return len(splits.load_faces("youtube-faces-68", progress=False))


def test_rules_for_every_300w_folder():
    assert splits.fractions_for("300w/lfpw-train") == splits.fractions_for("300w/helen-train") == (0.9, 0.1, 0.0)
    assert splits.fractions_for("300w:/else/where/lfpw-train") == (0.9, 0.1, 0.0)
    with pytest.raises(ValueError, match="one folder at a time"):
        splits.fractions_for("300w")                        # all folders at once would train on AFW


def test_cache_is_keyed_on_content(tiny_300w, monkeypatch, tmp_path):
    """A .pts edited in place, its size and modification time kept, still gives new faces, not the cache's."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    spec = f"300w:{tiny_300w}"
    before, fingerprint = splits.load_faces(spec, progress=False), splits.data_fingerprint([spec])
    pts = tiny_300w / "img0_1.pts"
    st = pts.stat()
    lines = pts.read_text().splitlines()
    x, y = lines[3].split()
    lines[3] = f"{y} {x}"                                   # same characters, another point
    pts.write_text("\n".join(lines) + "\n")
    os.utime(pts, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert pts.stat().st_size == st.st_size and pts.stat().st_mtime_ns == st.st_mtime_ns
    assert splits.data_fingerprint([spec]) != fingerprint
    after = splits.load_faces(spec, progress=False)
    i = list(after.names).index("img0_1.jpg")
    assert not np.allclose(after.keypoints[i], before.keypoints[i])
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_corrupt_cache_is_reported_and_rebuilt(tiny_youtube, monkeypatch, tmp_path):
    monkeypatch.setenv("FKP_DATA_DIR", str(tiny_youtube))
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    good = splits.load_faces("youtube-faces-68", progress=False)
    (cached,) = (tmp_path / "cache").glob("*.npz")
    for junk in (b"", b"not a zip at all", cached.read_bytes()[:1000]):
        cached.write_bytes(junk)
        with pytest.warns(UserWarning, match="unreadable cache"):
            again = splits.load_faces("youtube-faces-68", progress=False)
        np.testing.assert_array_equal(again.images, good.images)
        np.testing.assert_array_equal(splits.load_faces("youtube-faces-68", progress=False).keypoints,
                                      good.keypoints)          # the rebuilt cache reads back


def test_fingerprint_covers_every_spec(tiny_youtube, tiny_300w, monkeypatch):
    monkeypatch.setenv("FKP_DATA_DIR", str(tiny_youtube))
    both = splits.data_fingerprint(["youtube-faces-68", f"300w:{tiny_300w}"])
    assert len(both) == 64 and both == splits.data_fingerprint(["youtube-faces-68", f"300w:{tiny_300w}"])
    assert both != splits.data_fingerprint("youtube-faces-68")
    (tiny_300w / "img1_1.jpg").write_bytes(b"changed")
    assert both != splits.data_fingerprint(["youtube-faces-68", f"300w:{tiny_300w}"])
