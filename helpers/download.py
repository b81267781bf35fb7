"""``facekp download``: checksum-verified downloads, and the course archive unpacked into the data root."""
import shutil
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from . import config
from .config import sha256sum
from .data import YOUTUBE_URL, DataFormatError, not_found, parse_spec

_PORTRAITS = "https://raw.githubusercontent.com/ageitgey/face_recognition/master/examples/"
_VIDEOS = "https://raw.githubusercontent.com/OpenTalker/SadTalker/d3f6455c5776492921c41c4b0cc400532eb948ac/examples/"
FILES = {   # the demo files of chapters 08-11, from public repositories: {name: {path in the data root: URL}}
    "portraits": {"portraits/obama_official_portrait.jpg": _PORTRAITS + "obama.jpg",
                  "portraits/obama_podium.jpg": _PORTRAITS + "obama2.jpg",
                  "portraits/biden_official_portrait.jpg": _PORTRAITS + "knn_examples/train/biden/biden2.jpg",
                  "portraits/two_people.jpg": _PORTRAITS + "two_people.jpg"},
    "videos": {"videos/talking_head_1.mp4": _VIDEOS + "ref_video/WDA_KatieHill_000.mp4",
               "videos/talking_head_2.mp4": _VIDEOS + "ref_video/WDA_AlexandriaOcasioCortez_000.mp4"}}


def download_file(url: str, dest: str | Path) -> Path:
    """Download ``url`` (``file://`` too) to ``dest`` atomically, checked against the sha256 that the first download
    from that URL recorded in ``dest.sha256``: a match is reused, a mismatch deleted (``OSError``)."""
    dest, record = Path(dest), Path(f"{dest}.sha256")
    lines = record.read_text().split("\n") if record.exists() else []
    expected = lines[0].split()[0] if len(lines) > 1 and lines[1] == url and lines[0] else None
    if dest.exists() and expected and sha256sum(dest) == expected:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{dest}.part")
    with urllib.request.urlopen(url) as response, open(tmp, "wb") as f:
        size = int(response.headers.get("Content-Length") or 0) or None
        with tqdm.wrapattr(f, "write", total=size, desc=dest.name) as out:        # a progress bar
            shutil.copyfileobj(response, out, 1 << 20)
    digest = sha256sum(tmp)
    if expected and digest != expected:
        tmp.unlink()
        raise OSError(f"Checksum mismatch for {url}: expected sha256 {expected}, got {digest}. "
                      f"The download was deleted; try again, or delete {record} if the archive changed upstream.")
    tmp.replace(dest)
    record.write_text(f"{digest}  {dest.name}\n{url}\n")
    return dest


def download(name: str, root: Path | None = None, url: str | None = None) -> Path:
    """Fetch ``youtube-faces-68`` (or the files of :data:`FILES`) into ``root`` (or the data root) and return its
    folder; the other data sets need an account."""
    if name in FILES:
        if url:
            raise ValueError(f"{name} is {len(FILES[name])} files from public repositories: --url applies to "
                             "youtube-faces-68 only")
        root = Path(root or config.data_root())
        for path, file_url in tqdm(FILES[name].items(), desc=name, unit="file"):
            download_file(file_url, root / path)
        return root / name
    target = parse_spec(name, root).path
    if name != "youtube-faces-68":
        raise not_found(name, target, "It needs an account or registration; unpack it there.")
    archive = download_file(url or YOUTUBE_URL, config.PROJECT_DATA_DIR / "downloads" / "train-test-data.zip")
    staging = target.with_name(target.name + ".extracting")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(staging)              # zipfile drops absolute paths and ".." parts: nothing lands outside
    inner = next((p.parent for p in staging.rglob("training_frames_keypoints.csv")), None)
    if inner is None:
        raise DataFormatError(f"{archive}: no training_frames_keypoints.csv inside")
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(str(inner), target)
    shutil.rmtree(staging, ignore_errors=True)
    return target
