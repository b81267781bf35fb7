"""The peers of chapter 10 on the project's test and validation faces: dlib (HOG detector + the 68-point shape
predictor), MediaPipe Face Mesh (BlazeFace + a 468-point mesh) and MTCNN (a cascade of three CNNs + 5 points).

It runs in the peers' own environment (`make peers`: their pins need numpy < 2), so it does not import the
project's package: it reads the images, the iBUG ``.pts`` files and the course's CSVs itself, and takes the faces
of each split from the project's saved splits (``data/splits/*.csv``). Each method runs twice per face: end to end
(its own detector on the whole photograph; the detection overlapping the annotated face is kept) and from a shared
box (the annotated landmark box, mapped to the framing of the method's own detector by three numbers fitted on
its detections: dlib's predictor starts from it, MediaPipe sees a crop around it; MTCNN's points come out of its
own detector, so it has no shared-box run). Single-threaded, one face at a time.

Writes ``results/peers.csv`` (one row per method, setting and face: detected, NME on each comparable point set,
per-region NME where a method has the 68 points, milliseconds) and ``results/peers.json`` (versions, machine,
date, command). Usage: ``python peers/run.py [--max-faces N] [--out results]`` (FKP_DATA_DIR as for the project).
"""
import argparse
import json
import os
import platform
import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETS = {"youtube-faces-68": "test", "300w/afw": "test", "300w/helen-train": "val", "300w/lfpw-train": "val"}
# comparable point sets, as indices of the 68-point scheme (0-based); the normaliser is always the outer eye corners
SEVEN = [36, 39, 42, 45, 30, 48, 54]                   # eye corners, nose tip, mouth corners: MediaPipe has them
MESH_SEVEN = [33, 133, 362, 263, 1, 61, 291]           # the same points in MediaPipe's 468-point mesh
REGIONS = {"jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
           "mouth": range(48, 68)}


def data_root() -> Path:
    env = os.environ.get("FKP_DATA_DIR")
    return (ROOT / Path(env).expanduser()).resolve() if env else ROOT / "data"


def faces(max_faces: int | None):
    """(data set, name, image path, keypoints (68, 2) 0-based) of every face of the splits in :data:`SETS`."""
    for spec, split in SETS.items():
        table = pd.read_csv(ROOT / "data" / "splits" / f"{spec.replace('/', '_')}.csv")
        names = table.loc[table.split == split, "name"].tolist()
        if spec == "youtube-faces-68":
            folder = data_root() / "youtube-faces-68"
            rows = {}
            for part in ("training", "test"):
                df = pd.read_csv(folder / f"{part}_frames_keypoints.csv")
                rows.update({f"{part}/{n}": k for n, k in zip(df.iloc[:, 0], df.iloc[:, 1:].to_numpy(float))})
            items = [(n, folder / n, rows[n].reshape(68, 2)) for n in names if n in rows]
        else:
            folder = data_root() / "300w-subset" / spec.split("/")[1]
            images = {p.stem: p for p in folder.glob("*.[jp][pn]g")}
            items = [(n, images[n], read_pts(folder / f"{n}.pts")) for n in names if n in images]
        if len(items) < len(names):             # a copy of the data without some of the saved split's faces
            print(f"{spec}: {len(names) - len(items)} of the {split} split's {len(names)} faces are not in "
                  f"{folder}; measuring the other {len(items)}", file=sys.stderr)
        if max_faces:
            items = [items[i] for i in np.unique(np.linspace(0, len(items) - 1, max_faces).round().astype(int))]
        yield from ((spec, *item) for item in items)


def read_pts(path: Path) -> np.ndarray:
    body = re.search(r"\{(.*?)\}", path.read_text(), re.S).group(1)
    return np.array(body.split(), float).reshape(-1, 2) - 1.0


def box_of(kp: np.ndarray) -> np.ndarray:
    return np.r_[kp.min(0), kp.max(0)]


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def pick(boxes, truth_box, min_iou: float = 0.3):
    """Index of the detection overlapping the annotated face most (IoU ≥ ``min_iou``), else None."""
    scores = [iou(b, truth_box) for b in boxes]
    return int(np.argmax(scores)) if scores and max(scores) >= min_iou else None


def five(kp68: np.ndarray) -> np.ndarray:
    return np.stack([kp68[36:42].mean(0), kp68[42:48].mean(0), kp68[30], kp68[48], kp68[54]])


def errors(pred: dict, truth: np.ndarray) -> dict:
    """NME (fraction of the outer-eye-corner distance) of each point set ``pred`` holds: ``68`` (and regions),
    ``7`` and ``5``."""
    d = np.linalg.norm(truth[36] - truth[45])
    out = {}
    if "68" in pred:
        e = np.linalg.norm(pred["68"] - truth, axis=1) / d
        out |= {"nme68": e.mean(), **{f"nme_{r}": e[list(i)].mean() for r, i in REGIONS.items()}}
        pred = {"7": pred["68"][SEVEN], "5": five(pred["68"]), **pred}
    if "7" in pred:
        out["nme7"] = (np.linalg.norm(pred["7"] - truth[SEVEN], axis=1) / d).mean()
        pred = {"5": np.stack([pred["7"][0:2].mean(0), pred["7"][2:4].mean(0), *pred["7"][4:]]), **pred}
    out["nme5"] = (np.linalg.norm(pred["5"] - five(truth), axis=1) / d).mean()
    return out


class Dlib:
    name = "dlib"

    def __init__(self):
        import dlib
        import face_recognition_models as frm
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.dlib, self.version = dlib, dlib.__version__

    def detect(self, rgb):
        return [np.array([r.left(), r.top(), r.right(), r.bottom()], float) for r in self.detector(rgb, 1)]

    def landmarks(self, rgb, box, index=None):
        shape = self.predictor(rgb, self.dlib.rectangle(*[int(round(v)) for v in box]))
        return {"68": np.array([(p.x, p.y) for p in shape.parts()], float)}


class MediaPipe:
    name = "mediapipe"

    def __init__(self):
        import mediapipe as mp
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=5)
        self.version = mp.__version__
        self.last = None

    def detect(self, rgb):
        """Face Mesh finds faces with BlazeFace inside; the box of each mesh stands for its detection."""
        h, w = rgb.shape[:2]
        result = self.mesh.process(rgb)
        self.last = [np.array([(p.x * w, p.y * h) for p in f.landmark]) for f in result.multi_face_landmarks or []]
        return [box_of(m) for m in self.last]

    def landmarks(self, rgb, box, index=None):
        if index is not None:                                   # end to end: the mesh found with the box
            return {"7": self.last[index][MESH_SEVEN]}
        side = 1.5 * max(box[2] - box[0], box[3] - box[1])      # shared box: a crop around it, as for our networks
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
        pad = int(side)
        crop = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REPLICATE)[
            y0 + pad:y0 + pad + int(side), x0 + pad:x0 + pad + int(side)]
        self.detect(crop)
        if not self.last:
            return None
        centre = np.array([side / 2, side / 2])
        best = min(self.last, key=lambda m: np.linalg.norm(m.mean(0) - centre))
        return {"7": best[MESH_SEVEN] + [x0, y0]}


class MTCNN:
    name = "mtcnn"

    def __init__(self):
        from importlib.metadata import version

        import mtcnn
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        self.model, self.version, self.last = mtcnn.MTCNN(device="CPU:0"), version("mtcnn"), []

    def detect(self, rgb):
        self.last = self.model.detect_faces(rgb)
        return [np.array([f["box"][0], f["box"][1], f["box"][0] + f["box"][2], f["box"][1] + f["box"][3]], float)
                for f in self.last]

    def landmarks(self, rgb, box, index=None):
        if index is None:
            return None                                         # no shared-box mode: its points come with its boxes
        k = self.last[index]["keypoints"]
        eyes = sorted([k["left_eye"], k["right_eye"]])          # image left first, as the 68-point scheme
        return {"5": np.array([*eyes, k["nose"], *sorted([k["mouth_left"], k["mouth_right"]])], float)}


def calibrate(pairs) -> tuple[float, float, float]:
    """The detector's box relative to the landmark box, as three numbers (side ratio, centre shift in sides):
    medians over the faces it detected. The shared-box run gives each method the landmark box mapped this way, so
    its landmark stage sees the framing it was trained on."""
    t, d = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    side_t, side_d = (t[:, 2:] - t[:, :2]).max(1), (d[:, 2:] - d[:, :2]).max(1)
    shift = ((d[:, :2] + d[:, 2:]) - (t[:, :2] + t[:, 2:])) / 2 / side_t[:, None]
    return float(np.median(side_d / side_t)), *np.median(shift, axis=0).tolist()


def calibrated(box, calibration) -> np.ndarray:
    scale, dx, dy = calibration
    side = (box[2:] - box[:2]).max()
    centre = (box[:2] + box[2:]) / 2 + np.array([dx, dy]) * side
    return np.r_[centre - scale * side / 2, centre + scale * side / 2]


def run(method, items) -> tuple[list[dict], tuple]:
    """Every face end to end, then (for dlib and MediaPipe) from the calibrated landmark box."""
    rows, pairs, images = [], [], {}
    for spec, name, path, truth in items:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        t0 = time.perf_counter()
        boxes = method.detect(rgb)
        t1 = time.perf_counter()
        i = pick(boxes, box_of(truth))
        pred = None if i is None else method.landmarks(rgb, boxes[i], i)
        t2 = time.perf_counter()
        if i is not None:
            pairs.append((box_of(truth), boxes[i]))
        rows.append({"method": method.name, "data": spec, "face": name, "setting": "end to end",
                     "detected": pred is not None, "ms_detect": 1e3 * (t1 - t0), "ms_landmarks": 1e3 * (t2 - t1),
                     **(errors(pred, truth) if pred else {})})
    if method.name == "mtcnn" or not pairs:
        return rows, None
    calibration = calibrate(pairs)
    for spec, name, path, truth in items:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        t3 = time.perf_counter()
        pred = method.landmarks(rgb, calibrated(box_of(truth), calibration))
        rows.append({"method": method.name, "data": spec, "face": name, "setting": "shared box",
                     "detected": pred is not None, "ms_landmarks": 1e3 * (time.perf_counter() - t3),
                     **(errors(pred, truth) if pred else {})})
    return rows, calibration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-faces", type=int, default=None, help="faces per data set (default: all)")
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--methods", nargs="+", default=["dlib", "mediapipe", "mtcnn"])
    args = parser.parse_args()
    items = list(faces(args.max_faces))
    rows, versions = [], {}
    for cls in (Dlib, MediaPipe, MTCNN):
        if cls.name in args.methods:
            method = cls()
            start = time.time()
            found, calibration = run(method, items)
            rows += found
            versions[cls.name] = {"version": method.version, "box_calibration": calibration}
            print(f"{cls.name} {method.version}: {len(items)} faces in {time.time() - start:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows)
    table.round({c: 5 for c in table.columns if c.startswith("nme")} | {"ms_detect": 2, "ms_landmarks": 2}).to_csv(
        out / "peers.csv", index=False)
    (out / "peers.json").write_text(json.dumps({
        "command": "make peers  (peers/run.py " + " ".join(sys.argv[1:]) + ")", "methods": versions,
        "python": platform.python_version(), "numpy": np.__version__, "opencv": cv2.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "threads": "one (OMP_NUM_THREADS=1, TensorFlow single-threaded)", "faces": len(items),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=2) + "\n")
    print(f"wrote {out / 'peers.csv'} ({len(table)} rows) and {out / 'peers.json'}")


if __name__ == "__main__":
    main()
