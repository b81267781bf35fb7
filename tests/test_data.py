import io
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config, data, download
from helpers.schemes import SCHEME_15

from .support import face_68, needs_real_data, write_face, write_pts

KAGGLE_COLUMNS = [f"{n}_{a}" for n in SCHEME_15.names for a in "xy"]


def kaggle_frame(n=5, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kp = rng.uniform(10, 85, (n, 30)).round(2)
    kp[1, 4:] = np.nan                       # an incomplete row: only both eye centres
    df = pd.DataFrame(kp, columns=KAGGLE_COLUMNS)
    df["Image"] = [" ".join(map(str, rng.integers(0, 256, 9216))) for _ in range(n)]
    return df


def test_kaggle_csv_keeps_incomplete_rows(tmp_path):
    df = kaggle_frame()
    path = tmp_path / "training.csv"
    df.to_csv(path, index=False)
    ds = data.load(f"kaggle:{path}", progress=False)
    assert len(ds) == 5 and ds.keypoints.shape == (5, 15, 2) and ds.scheme is SCHEME_15
    assert np.isnan(ds.keypoints[1, 2:]).all() and not np.isnan(ds.keypoints[1, :2]).any()
    assert not np.isnan(ds.keypoints[0]).any()
    np.testing.assert_allclose(ds.keypoints[0].ravel(), df.iloc[0, :30].to_numpy(np.float32))
    first = np.array(df.loc[0, "Image"].split(), dtype=np.uint8).reshape(96, 96)
    np.testing.assert_array_equal(ds.images[0], first)


def test_kaggle_zip_and_bad_rows(tmp_path):
    df = kaggle_frame(4)
    df.loc[2, "Image"] = "1 2 3"                     # truncated pixel string
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    path = tmp_path / "training.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("training.csv", buf.getvalue())
    ds = data.load(f"kaggle:{path}", progress=False)
    assert len(ds) == 3
    assert ds.skipped and ds.skipped[0][0] == "row_00002" and "9216" in ds.skipped[0][1]


def test_kaggle_wrong_schema_names_file_and_columns(tmp_path):
    path = tmp_path / "training.csv"
    kaggle_frame(2).drop(columns=["nose_tip_x"]).to_csv(path, index=False)
    with pytest.raises(data.DataFormatError, match=r"training\.csv.*nose_tip_x"):
        data.load(f"kaggle:{path}")


def test_kaggle_missing_explains_where(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="kaggle") as e:
        data.load("kaggle", root=tmp_path)
    assert "FKP_DATA_DIR" in str(e.value) and "training.csv" in str(e.value)


def test_read_pts_is_converted_to_zero_based(tmp_path):
    path = tmp_path / "a.pts"
    path.write_text("version: 1\nn_points: 3\n{\n1 1\n10.5 20\n3 4\n}\n")
    np.testing.assert_allclose(data.read_pts(path), [[0, 0], [9.5, 19], [2, 3]])
    path.write_text("version: 1\nn_points: 4\n{\n1 1\n10.5 20\n3 4\n}\n")
    with pytest.raises(data.DataFormatError, match="4 points"):
        data.read_pts(path)
    path.write_text("hello")
    with pytest.raises(data.DataFormatError, match="not an iBUG"):
        data.read_pts(path)


def test_300w_folder_loads_and_reports_bad_files(tiny_300w):
    (tiny_300w / "broken_1.jpg").write_text("this is not a JPEG")
    write_pts(tiny_300w / "broken_1.pts", face_68())
    (tiny_300w / "empty_1.jpg").write_bytes(b"")
    write_pts(tiny_300w / "empty_1.pts", face_68())
    write_pts(tiny_300w / "orphan_1.pts", face_68())                  # no image at all
    outside = face_68()
    outside[0] = [-20, 50]
    write_face(tiny_300w / "out_1.jpg", face_68())
    write_pts(tiny_300w / "out_1.pts", outside)
    ds = data.load(f"300w:{tiny_300w}", progress=False)
    assert len(ds) == 5
    skipped = dict(ds.skipped)
    assert set(skipped) == {"broken_1.jpg", "empty_1.jpg", "orphan_1.pts"}
    assert "empty" in skipped["empty_1.jpg"] and "no image" in skipped["orphan_1.pts"]
    assert "decodable" in skipped["broken_1.jpg"]
    assert any("out_1" in w and "outside" in w for w in ds.warnings)
    assert list(ds.identities) == sorted(ds.identities) and "img0_1" in ds.identities
    # the keypoints are the 0-based values that were written 1-based
    np.testing.assert_allclose(ds.keypoints[list(ds.names).index("img2_1.jpg")], face_68(seed=12, jitter=1.0),
                               atol=1e-3)
    assert "skipped 3" in ds.report()


def test_youtube_layout_merges_both_csvs(tiny_youtube):
    ds = data.load("youtube-faces-68", root=tiny_youtube, progress=False)
    assert len(ds) == 6                                               # 7 rows, one image missing
    assert ds.skipped == [("test/Gone_Man_01.jpg", "listed in test_frames_keypoints.csv but missing from test/")]
    assert ds.num_people == 4
    assert sorted(set(ds.identities)) == ["Ann_Lee", "Bob_Ray", "Cy_Di", "Eve_Ox"]
    assert ds.names[0] == "training/Ann_Lee_00.jpg" and len(set(ds.names)) == len(ds)
    assert ds.images[0].ndim == 3 and ds.images[0].shape[2] == 3
    assert len(data.load("youtube-faces-68", max_faces=3, root=tiny_youtube, progress=False)) == 3


def test_youtube_wrong_schema(tiny_youtube):
    csv = tiny_youtube / "youtube-faces-68" / "test_frames_keypoints.csv"
    csv.write_text("name,a,b\nx.jpg,1,2\n")
    with pytest.raises(data.DataFormatError, match=r"test_frames_keypoints\.csv.*136 keypoint columns"):
        data.load("youtube-faces-68", root=tiny_youtube, progress=False)


def test_missing_data_set_says_where_and_how(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as e:
        data.load("youtube-faces-68", root=tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "FKP_DATA_DIR" in msg and "train-test-data.zip" in msg


def test_identity_from_file_name():
    assert data.youtube_identity("Luis_Fonsi_21.jpg") == "Luis_Fonsi"
    assert data.youtube_identity("Mary_J_Blige_00.jpg") == "Mary_J_Blige"


def test_unknown_spec():
    with pytest.raises(ValueError, match="Unknown data set"):
        data.load("celeba")


def test_download_file_verifies_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"keypoints" * 1000)
    out = download.download_file(src.as_uri(), tmp_path / "dl" / "a.bin")
    assert out.read_bytes() == src.read_bytes()
    (tmp_path / "dl" / "b.bin.sha256").write_text("0" * 64 + f"  b.bin\n{src.as_uri()}\n")
    with pytest.raises(OSError, match="Checksum mismatch"):
        download.download_file(src.as_uri(), tmp_path / "dl" / "b.bin")
    assert not (tmp_path / "dl" / "b.bin").exists() and not (tmp_path / "dl" / "b.bin.part").exists()


def test_download_without_published_checksum_records_and_checks_it(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"version one")
    dest = tmp_path / "dl" / "a.bin"
    download.download_file(src.as_uri(), dest)
    assert (tmp_path / "dl" / "a.bin.sha256").read_text().split()[0] == config.sha256sum(src)
    src.write_bytes(b"version two, changed upstream")
    dest.unlink()
    with pytest.raises(OSError, match="Checksum mismatch"):
        download.download_file(src.as_uri(), dest)


def test_download_youtube_archive_end_to_end(tmp_path, tiny_youtube, monkeypatch):
    """The real download path on a local archive in the course's layout."""
    archive = tmp_path / "train-test-data.zip"
    folder = tiny_youtube / "youtube-faces-68"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in folder.rglob("*"):
            if f.is_file():
                zf.write(f, "data/" + str(f.relative_to(folder)))
        for member in ("../evil.txt", "/tmp/evil.txt", "a/../../evil.txt"):     # never lands outside the target
            zf.writestr(member, "evil")
    monkeypatch.setattr(data.config, "PROJECT_DATA_DIR", tmp_path / "project-data")
    target_root = tmp_path / "fresh"
    out = download.download("youtube-faces-68", root=target_root, url=archive.as_uri())
    assert out == target_root / "youtube-faces-68"
    assert len(data.load("youtube-faces-68", root=target_root, progress=False)) == 6
    assert (tmp_path / "project-data" / "downloads" / "train-test-data.zip.sha256").exists()
    assert not list(tmp_path.glob("**/evil.txt")) and not Path("/tmp/evil.txt").exists()


def test_demo_files_download_into_the_data_root_and_are_checked(tmp_path, monkeypatch):
    """The portraits' and clips' download path, on local files standing in for the public repositories."""
    sources = {}
    for i, path in enumerate(("videos/talking_head_1.mp4", "videos/talking_head_2.mp4")):
        sources[path] = tmp_path / "upstream" / f"clip{i}.mp4"
        sources[path].parent.mkdir(exist_ok=True)
        sources[path].write_bytes(bytes([i]) * 100)
    monkeypatch.setitem(download.FILES, "videos", {p: f.as_uri() for p, f in sources.items()})
    root = tmp_path / "data"
    assert download.download("videos", root=root) == root / "videos"
    assert (root / "videos" / "talking_head_2.mp4").read_bytes() == bytes([1]) * 100
    assert (root / "videos" / "talking_head_1.mp4.sha256").read_text().split()[0] == config.sha256sum(
        sources["videos/talking_head_1.mp4"])
    sources["videos/talking_head_1.mp4"].write_bytes(b"changed upstream")     # a later download is checked
    (root / "videos" / "talking_head_1.mp4").unlink()
    with pytest.raises(OSError, match="Checksum mismatch"):
        download.download("videos", root=root)
    with pytest.raises(ValueError, match="--url"):
        download.download("portraits", root=root, url="file:///elsewhere")


def test_300w_download_explains_registration(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="registration"):
        download.download("300w", root=tmp_path)


@needs_real_data
def test_real_youtube_faces_counts():
    ds = data.load("youtube-faces-68", progress=False)
    assert len(ds) == 4301 and ds.num_people == 416 and not ds.skipped


def test_index_lists_faces_without_reading_images(tiny_youtube, tiny_300w):
    idx = data.index("youtube-faces-68", root=tiny_youtube)
    assert len(idx) == 7 and set(idx["part"]) == {"training", "test"}          # the CSV rows, missing file too
    assert idx.loc[idx["name"] == "test/Ann_Lee_30.jpg", "identity"].item() == "Ann_Lee"
    w = data.index(f"300w:{tiny_300w}")
    assert list(w["name"]) == [f"img{i}_1" for i in range(4)] and (w["name"] == w["identity"]).all()


def test_kaggle_keeps_every_labelled_coordinate(tmp_path):
    df = kaggle_frame(3)
    df.loc[0, KAGGLE_COLUMNS[5:]] = np.nan                # both eye centres (the normaliser) and one more value
    df.loc[2, KAGGLE_COLUMNS] = np.nan                     # nothing labelled: skipped, and said so
    df.to_csv(tmp_path / "training.csv", index=False)
    ds = data.load(f"kaggle:{tmp_path}", progress=False)
    assert len(ds) == 2 and ds.keypoints[0, 2, 0] == np.float32(df.loc[0, KAGGLE_COLUMNS[4]])
    assert np.isnan(ds.keypoints[0]).sum() == 25 and not np.isnan(ds.keypoints[1, :2]).any()   # row 1: eyes only
    assert ds.skipped == [("row_00002", "the points of the normaliser (eye centres) are missing")]
    assert len(data.index(f"kaggle:{tmp_path / 'training.csv'}")) == 3


def test_loaders_apply_the_pixel_limit(tiny_youtube, tiny_300w):
    ds = data.load(f"300w:{tiny_300w}", max_pixels=100 * 100, progress=False)     # the faces are 120x100
    assert len(ds) == 0 and len(ds.skipped) == 4
    assert all("120x100" in why and "pixel limit" in why for _, why in ds.skipped)
    assert len(data.load("youtube-faces-68", root=tiny_youtube, max_pixels=120 * 100, progress=False)) == 6


def test_read_image_names_the_file(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    with pytest.raises(data.ImageReadError, match=r"a\.jpg: empty file") as e:
        data.read_image(tmp_path / "a.jpg")
    assert isinstance(e.value, ValueError) and e.value.reason.startswith("empty file")
    ihdr = b"IHDR" + (60000).to_bytes(4, "big") * 2 + b"\x08\x02\0\0\0"         # 60000² RGB pixels
    (tmp_path / "big.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\r" + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
                                       + b"\0\0\0\0IEND" + zlib.crc32(b"IEND").to_bytes(4, "big"))   # no pixel data
    with pytest.raises(data.ImageReadError, match="60000x60000 image is over the"):
        data.read_image(tmp_path / "big.png")                                 # refused before decoding


def test_parse_spec(tmp_path):
    root = tmp_path
    assert data.parse_spec("youtube-faces-68", root) == ("youtube-faces-68", root / "youtube-faces-68")
    assert data.parse_spec("300w/lfpw-train", root) == ("300w", root / "300w-subset" / "lfpw-train")
    assert data.parse_spec("300w", root) == ("300w", root / "300w-subset")
    assert data.parse_spec("300w:/any/folder") == ("300w", Path("/any/folder"))
    assert data.parse_spec("kaggle:/p/training.csv") == ("kaggle", Path("/p/training.csv"))
    assert data.parse_spec("kaggle", root).path == root / "kaggle"
    for bad in ("celeba", "youtube-faces-68/x", "300w:", "kaggle/x"):
        with pytest.raises(ValueError, match="Unknown data set"):
            data.parse_spec(bad)


@needs_real_data
def test_real_lfpw_train_loads():
    assert "300w/lfpw-train" in data.available()
    idx = data.index("300w/lfpw-train")
    assert len(idx) == 805 and idx["identity"].is_unique and set(idx["part"]) == {"lfpw-train"}
    ds = data.load("300w/lfpw-train", max_faces=8, progress=False)
    assert len(ds) == 8 and not ds.skipped and ds.keypoints.shape == (8, 68, 2)
