"""Bad input never crashes, never silently drops, never poisons a result.

Each test builds its own small corpus in a temporary folder (no binary file is committed) and checks, through the
library or the ``facekp`` command line: the exit code, that the message names the file (and point or row), that a
batch goes on, and that the good inputs of a mixed batch give the same result as alone.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import cv2
import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from helpers import cli, config, data, download, export
from .support import face_68, write_face, write_pts


@pytest.fixture(autouse=True)
def _scratch_cache(tmp_path, monkeypatch):
    """Every data set here is made up by its test: its cached crops go to the test's folder, not to data/cache."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")


GOOD = 4                                        # good faces in every corpus


def good_300w(folder: Path) -> Path:
    for i in range(GOOD):
        kp = face_68(seed=20 + i, jitter=1.0)
        write_face(folder / f"good{i}.jpg", kp, seed=i)
        write_pts(folder / f"good{i}.pts", kp)
    return folder


def bad_pts(folder: Path) -> dict[str, str]:
    """Faces whose keypoints are unusable, each with the words its reason must contain."""
    kp = face_68(seed=1)
    cases = {"inf": (3, np.inf, "finite"), "nan": (5, np.nan, "finite"), "far": (7, 1e9, "far outside"),
             "degenerate": (None, None, "degenerate"), "short": (None, None, "67 points"),
             "text": (None, None, "non-numeric")}
    for name, (point, value, _) in cases.items():
        write_face(folder / f"{name}.jpg", kp)
        bad = kp.copy()
        if point is not None:
            bad[point, 0] = value
        if name == "degenerate":
            bad[:] = 50.0
        body = "\n".join(f"{x + 1} {y + 1}" for x, y in (bad[:-1] if name == "short" else bad))
        if name == "text":
            body = body.replace("\n", "\nabc ", 1)
        n = 67 if name == "short" else 68
        (folder / f"{name}.pts").write_text(f"version: 1\nn_points: {n}\n{{\n{body}\n}}\n")
    return {f"{name}.jpg": why for name, (_, _, why) in cases.items()}


def unpaired(folder: Path) -> dict[str, str]:
    write_face(folder / "lonely.jpg", face_68())
    write_pts(folder / "orphan.pts", face_68())
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_pts(folder / "corrupt.pts", face_68())
    return {"lonely.jpg": "no .pts file", "orphan.pts": "no image", "corrupt.jpg": "corrupt"}


def assert_same_good_faces(mixed: data.Dataset, alone: data.Dataset):
    keep = np.isin(mixed.names, alone.names)
    assert keep.sum() == len(alone) == GOOD
    np.testing.assert_array_equal(mixed.keypoints[keep], alone.keypoints)
    for a, b in zip([mixed.images[i] for i in np.flatnonzero(keep)], alone.images):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------------------------
# loading data sets: every bad face is skipped and named, the good ones load as they would alone
# ---------------------------------------------------------------------------------------------------------------
def test_300w_folder_skips_and_names_every_bad_face(tmp_path):
    alone = data.load(f"300w:{good_300w(tmp_path / 'good')}", progress=False)
    mixed_dir = good_300w(tmp_path / "mixed")
    expected = bad_pts(mixed_dir) | unpaired(mixed_dir)
    mixed = data.load(f"300w:{mixed_dir}", progress=False)
    reasons = dict(mixed.skipped)
    assert sorted(reasons) == sorted(expected)
    for name, words in expected.items():
        assert words in reasons[name], (name, reasons[name])
    assert "point 3" in reasons["inf.jpg"] and "point 7" in reasons["far.jpg"] and "text.pts" in reasons["text.jpg"]
    assert_same_good_faces(mixed, alone)
    assert np.isfinite(mixed.keypoints).all()            # nothing non-finite reaches a crop or a metric


def test_pixel_limit_is_checked_before_decoding(tmp_path, monkeypatch):
    big = tmp_path / "big16.png"
    cv2.imwrite(str(big), np.full((400, 500), 40000, np.uint16))          # a 16-bit PNG: OpenCV decodes those
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    with pytest.raises(data.ImageReadError, match="over the 10,000-pixel limit") as e:
        data.read_image(big, max_pixels=10_000)
    assert e.value.path == big and not decoded


def kaggle_csv(path: Path, n: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    columns = [f"{k}_{a}" for k in data.SCHEME_15.names for a in "xy"]
    df = pd.DataFrame(rng.uniform(20, 75, (n, 30)).round(2), columns=columns)
    df["Image"] = [" ".join(map(str, rng.integers(0, 256, 9216))) for _ in range(n)]
    df.to_csv(path, index=False)
    return df


def test_kaggle_rows_with_bad_keypoints_or_pixels_are_skipped_by_row(tmp_path):
    df = kaggle_csv(tmp_path / "good.csv")
    alone = data.load(f"kaggle:{tmp_path / 'good.csv'}", progress=False)
    bad = pd.concat([df, df.iloc[:3]], ignore_index=True)
    bad.iloc[6, 4] = 1e9                                    # a keypoint far outside its 96x96 image
    bad.iloc[7, :30] = np.nan                               # no keypoint at all
    bad.loc[8, "Image"] = ""                                # an empty Image cell
    bad.to_csv(tmp_path / "bad.csv", index=False)
    mixed = data.load(f"kaggle:{tmp_path / 'bad.csv'}", progress=False)
    reasons = dict(mixed.skipped)
    assert "far outside" in reasons["row_00006"] and "point 2" in reasons["row_00006"]
    assert "normaliser" in reasons["row_00007"] and "Image" in reasons["row_00008"]
    np.testing.assert_array_equal(mixed.keypoints[:6], alone.keypoints)


def test_corrupt_kaggle_zip_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "training.zip").write_bytes(b"PK\x03\x04 broken")
    assert cli.main(["data", f"kaggle:{tmp_path / 'training.zip'}"]) == 1
    err = capsys.readouterr().err
    assert "training.zip" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_empty_folder_is_not_sent_to_fkp_data_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load(f"300w:{tmp_path / 'empty'}")
    assert "no .pts files" in str(e.value) and "FKP_DATA_DIR" not in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# facekp data: a bad data set is reported, the others are still listed
# ---------------------------------------------------------------------------------------------------------------
def test_facekp_data_lists_every_data_set_and_the_problems_of_each(tmp_path, monkeypatch, capsys):
    root = tmp_path / "root"
    (root / "youtube-faces-68").mkdir(parents=True)
    (root / "youtube-faces-68" / "training_frames_keypoints.csv").write_text("name,a\nx.jpg,1\n")   # wrong schema
    folder = good_300w(root / "300w-subset" / "afw")
    write_face(folder / "lonely.jpg", face_68())
    monkeypatch.setenv("FKP_DATA_DIR", str(root))
    assert cli.main(["data", "--json"]) == 1
    report = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert "training_frames_keypoints.csv" in report["youtube-faces-68"]["error"]
    assert report["300w/afw"]["faces"] == GOOD
    assert report["300w/afw"]["skipped"] == [{"path": "lonely.jpg", "reason": "no .pts file next to the image"}]


# ---------------------------------------------------------------------------------------------------------------
# models: corrupt or unsafe files are one clear line
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    inp = keras.Input((96, 96, 1))
    x = keras.layers.Dense(136)(keras.layers.Flatten()(keras.layers.AveragePooling2D(16)(inp)))
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    keras.Model(inp, x, name="tiny").save(path)
    return path


def unsafe_copy(src: Path, dest: Path) -> Path:
    """``src`` with its config asking Keras to build a layer from the ``os`` module (``safe_mode`` refuses)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            blob = zin.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(blob)
                config["config"]["layers"][1].update(module="os", class_name="system", registered_name="system")
                blob = json.dumps(config).encode()
            zout.writestr(item, blob)
    return dest


@pytest.mark.parametrize("kind", ["truncated", "text", "unsafe"])
def test_bad_model_files_are_one_line(kind, model_file, tmp_path, capsys):
    path = tmp_path / f"{kind}.keras"
    if kind == "truncated":
        path.write_bytes(model_file.read_bytes()[:3000])
    elif kind == "text":
        path.write_text("not a model")
    else:
        unsafe_copy(model_file, path)
    folder = good_300w(tmp_path / "faces")
    assert cli.main(["evaluate", "--model", str(path), "--data", f"300w:{folder}", "--no-timing"]) == 1
    err = capsys.readouterr().err
    assert str(path) in err and "not found" not in err.lower() and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and len(err) < 500
    assert ("cannot be loaded" if kind == "unsafe" else "not a Keras model") in err


def test_corrupt_int8_beside_a_model_falls_back_or_is_one_line(model_file, tmp_path, capsys):
    model = tmp_path / "m.keras"
    model.write_bytes(model_file.read_bytes())
    export.int8_path(model).write_bytes(b"not onnx")
    folder = good_300w(tmp_path / "faces")
    args = ["evaluate", "--model", str(model), "--data", f"300w:{folder}", "--no-timing", "--json"]
    with pytest.warns(UserWarning, match="m.int8.onnx"):
        assert cli.main(args + ["--runtime", "auto"]) == 0               # the Keras forward pass, with a warning
    assert json.loads(capsys.readouterr().out)["runtime"] == "keras"
    assert cli.main(args + ["--runtime", "int8"]) == 1
    err = capsys.readouterr().err
    assert "m.int8.onnx" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------------------------
# facekp evaluate and predict: a batch goes on, lists what it skipped, and exits 1
# ---------------------------------------------------------------------------------------------------------------
def test_evaluate_names_the_faces_it_could_not_use(model_file, tmp_path, capsys):
    good = good_300w(tmp_path / "good")
    mixed = good_300w(tmp_path / "mixed")
    (mixed / "corrupt.jpg").write_bytes(b"GIF89a broken")
    write_pts(mixed / "corrupt.pts", face_68())
    args = ["evaluate", "--model", str(model_file), "--no-timing", "--json", "--data"]
    assert cli.main(args + [f"300w:{good}"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert cli.main(args + [f"300w:{mixed}"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["faces"] == alone["faces"] == GOOD and report["nme"] == alone["nme"]
    assert [s["path"] for s in report["skipped"]] == ["corrupt.jpg"]
    assert cli.main(args[:-2] + ["--data", f"300w:{mixed}"]) == 1        # the text report says so too
    assert "corrupt.jpg" in capsys.readouterr().err


def test_predict_folder_reports_what_it_cannot_read(model_file, tmp_path, capsys):
    folder = tmp_path / "photos"
    write_face(folder / "a.jpg", face_68(), size=(200, 160))
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(folder / "anim.gif")     # read (first frame)
    (folder / "notes.txt").write_text("not an image")                               # not an image: named
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    os.symlink(folder / "loop.png", folder / "loop.png")                            # a link to itself
    (folder / "dir.jpg").mkdir()                                                    # a folder named like an image
    write_face(folder / "dir.jpg" / "b.png", face_68(), size=(200, 160))
    out = tmp_path / "out"
    assert cli.main(["predict", str(folder), "--model", str(model_file), "--out", str(out), "--json", "--quiet"]) == 1
    report = json.loads(capsys.readouterr().out)
    done = sorted(Path(r["file"]).name for r in report["images"])
    assert done == ["a.jpg", "anim.gif", "b.png"]
    assert {Path(s["path"]).name: s["reason"] for s in report["skipped"]}.keys() == {"broken.jpg", "loop.png"}
    assert [Path(p).name for p in report["ignored"]] == ["notes.txt"]
    # the good image gives the same answer alone
    assert cli.main(["predict", str(folder / "a.jpg"), "--model", str(model_file), "--out", str(out), "--json",
                     "--quiet"]) == 0
    single = json.loads(capsys.readouterr().out)["images"][0]
    assert single["faces"] == next(r for r in report["images"] if r["file"].endswith("a.jpg"))["faces"]


def test_predict_out_naming_a_file_is_refused(model_file, tmp_path, capsys):
    write_face(tmp_path / "a.jpg", face_68())
    (tmp_path / "taken").write_text("keep me")
    assert cli.main(["predict", str(tmp_path / "a.jpg"), "--model", str(model_file), "--out",
                     str(tmp_path / "taken")]) == 1
    assert "taken" in capsys.readouterr().err and (tmp_path / "taken").read_text() == "keep me"


def test_debug_shows_the_traceback(tmp_path, capsys):
    assert cli.main(["--debug", "data", f"300w:{tmp_path}"]) == 1
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# downloads
# ---------------------------------------------------------------------------------------------------------------
def test_download_from_another_url_is_fetched_again(tmp_path):
    first, second = tmp_path / "first.zip", tmp_path / "second.zip"
    first.write_bytes(b"a bad archive")
    second.write_bytes(b"the good archive")
    dest = tmp_path / "dl" / "archive.zip"
    download.download_file(first.as_uri(), dest)
    assert download.download_file(second.as_uri(), dest).read_bytes() == b"the good archive"
    assert second.as_uri() in Path(f"{dest}.sha256").read_text()
