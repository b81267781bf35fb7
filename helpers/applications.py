"""What keypoints are for (chapter 11): head pose, face alignment, blink and speech signals, an AR overlay. Each takes
68 keypoints (K, 2) in image pixels (0-based pixel centres) and the image or its size."""
import cv2
import numpy as np

from .schemes import five_points      # also importable as helpers.applications.five_points
from .shape import similarity

# A generic 3D face in arbitrary units (about 0.2 mm: its outer eye corners, 450 apart, lie ~90 mm apart on an adult),
# six points at the indices of the 68-point scheme:
# the model of S. Mallick, "Head Pose Estimation using OpenCV and Dlib" (LearnOpenCV, 2016), with y pointing down
# and z away from the camera, so that a frontal face has the identity rotation.
POSE_POINTS = (30, 8, 36, 45, 48, 54)     # nose tip, chin, outer eye corners (image left, right), mouth corners
FACE_3D = np.array([(0.0, 0.0, 0.0), (0.0, 330.0, 65.0), (-225.0, -170.0, 135.0), (225.0, -170.0, 135.0),
                    (-150.0, 150.0, 125.0), (150.0, 150.0, 125.0)])
# ArcFace's five-point template for 112×112 crops (Deng et al., CVPR 2019; insightface): the eye centres on the
# image's left and right, the nose tip, the mouth corners on the image's left and right.
TEMPLATE_112 = np.array([(38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                         (70.7299, 92.2041)])


def camera(width: int, height: int) -> np.ndarray:
    """A pinhole camera for a photograph of unknown origin: focal length the image width, centred, no distortion."""
    return np.array([[width, 0, (width - 1) / 2], [0, width, (height - 1) / 2], [0, 0, 1]], dtype=np.float64)


def head_pose(keypoints, width: int, height: int, focal: float | None = None) -> dict:
    """Yaw (+: turned to the image's right), pitch (+: up) and roll (+: clockwise) in degrees of a face (68, 2) by
    ``cv2.solvePnP`` of :data:`FACE_3D`; also its rotation and translation vectors, for drawing. ``focal``: the
    focal length in pixels (default: :func:`camera`'s guess, the image width)."""
    pts = np.asarray(keypoints, np.float64)[list(POSE_POINTS)]
    if not np.isfinite(pts).all():
        raise ValueError("head pose needs the nose tip, chin, outer eye corners and mouth corners")
    cam = camera(width, height)                     # start frontal, at the distance the eye corners' spacing says
    if focal is not None:
        cam[0, 0] = cam[1, 1] = focal
    z = cam[0, 0] * 450.0 / max(np.linalg.norm(pts[3] - pts[2]), 1e-6)
    tvec0 = np.array([(pts[0, 0] - cam[0, 2]) * z / cam[0, 0], (pts[0, 1] - cam[1, 2]) * z / cam[0, 0], z])
    ok, rvec, tvec = cv2.solvePnP(FACE_3D, pts, cam, None, np.zeros(3), tvec0, useExtrinsicGuess=True,
                                  flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        raise ValueError("cv2.solvePnP found no pose for these keypoints")
    angles = cv2.RQDecomp3x3(cv2.Rodrigues(rvec)[0])[0]            # degrees about x, y, z
    return {"yaw": float(-angles[1]), "pitch": float(-angles[0]), "roll": float(angles[2]),
            "rvec": rvec.ravel(), "tvec": tvec.ravel()}


def pose_json(keypoints, width: int, height: int) -> dict | None:
    """Yaw, pitch and roll rounded to 0.1° for JSON output, or None where the pose cannot be solved."""
    try:
        pose = head_pose(keypoints, width, height)
    except ValueError:
        return None
    return {k: round(pose[k], 1) for k in ("yaw", "pitch", "roll")}


def draw_pose(image: np.ndarray, keypoints, pose: dict | None = None, length: float = 300.0) -> np.ndarray:
    """A copy of RGB ``image`` with the head's axes from the nose tip (x red, y green, z blue towards the camera)."""
    h, w = image.shape[:2]
    pose = pose or head_pose(keypoints, w, h)
    ends = np.array([(0, 0, 0), (length, 0, 0), (0, -length, 0), (0, 0, -length)], np.float64)
    p = cv2.projectPoints(ends, pose["rvec"], pose["tvec"], camera(w, h), None)[0].reshape(-1, 2)
    out, thick = image.copy(), max(2, round(max(h, w) / 250))
    for end, colour in zip(p[1:], ((230, 40, 40), (40, 180, 40), (40, 90, 230))):
        cv2.line(out, tuple(np.round(p[0]).astype(int)), tuple(np.round(end).astype(int)), colour, thick, cv2.LINE_AA)
    return out


def alignment(keypoints, size: int = 112) -> np.ndarray:
    """The 2×3 similarity mapping a face's :func:`five_points` onto :data:`TEMPLATE_112` scaled to ``size``."""
    a, t = similarity(five_points(keypoints), TEMPLATE_112 * size / 112)
    return np.hstack([a, t[:, None]])


def align_face(image: np.ndarray, keypoints, size: int = 112) -> np.ndarray:
    """An upright ``size``² crop with eyes, nose and mouth where the template puts them (face recognition's input);
    black beyond the image's edges."""
    return cv2.warpAffine(image, alignment(keypoints, size), (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def _ratio(kp, vertical, horizontal) -> float:
    v = np.mean([np.linalg.norm(kp[a] - kp[b]) for a, b in vertical])
    return float(v / max(np.linalg.norm(kp[horizontal[0]] - kp[horizontal[1]]), 1e-9))


def eye_aspect_ratio(keypoints) -> float:
    """Eye aspect ratio (Soukupová & Čech, 2016), both eyes' mean: lid distances / width; ~0.3 open, ~0 closed."""
    kp = np.asarray(keypoints, np.float64)
    return float(np.mean([_ratio(kp, [(o + 1, o + 5), (o + 2, o + 4)], (o, o + 3)) for o in (36, 42)]))


def mouth_ratio(keypoints) -> float:
    """The mouth opening ratio: the three inner-lip distances over the inner corners' distance (0 closed)."""
    return _ratio(np.asarray(keypoints, np.float64), [(61, 67), (62, 66), (63, 65)], (60, 64))


def blinks(ear, drop: float = 0.75, min_frames: int = 2) -> list[tuple[int, int]]:
    """Blinks in a series of eye aspect ratios: runs of at least ``min_frames`` frames below ``drop`` × the
    series' median (the open eye of this face and camera), as (first, last) frame pairs. NaN frames are open."""
    ear = np.asarray(ear, np.float64)
    closed = np.nan_to_num(ear, nan=np.inf) < drop * np.nanmedian(ear)
    edges = np.flatnonzero(np.diff(np.r_[0, closed.astype(int), 0]))
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_frames]


def _glasses_layer(size: int = 112, scale: int = 4) -> np.ndarray:
    """Glasses (lenses round the template's eye centres, bridge, temples) in its frame: RGBA, ``size * scale``²."""
    s = size * scale
    layer = np.zeros((s, s, 4), np.uint8)
    (lx, ly), (rx, ry) = TEMPLATE_112[:2] * scale * size / 112
    w, h = int(15 * scale * size / 112), int(11 * scale * size / 112)
    for cx, cy in ((lx, ly), (rx, ry)):
        cv2.ellipse(layer, (int(cx), int(cy)), (w, h), 0, 0, 360, (40, 60, 90, 90), -1, cv2.LINE_AA)    # tint
        cv2.ellipse(layer, (int(cx), int(cy)), (w, h), 0, 0, 360, (20, 20, 20, 255), 2 * scale, cv2.LINE_AA)
    cv2.line(layer, (int(lx + w), int(ly)), (int(rx - w), int(ry)), (20, 20, 20, 255), 2 * scale, cv2.LINE_AA)
    for x0, x1 in ((lx - w, lx - w - 9 * scale), (rx + w, rx + w + 9 * scale)):
        cv2.line(layer, (int(x0), int(ly - 2 * scale)), (int(x1), int(ly - 4 * scale)), (20, 20, 20, 255), 2 * scale,
                 cv2.LINE_AA)
    return layer


def draw_glasses(image: np.ndarray, keypoints, scale: int = 4) -> np.ndarray:
    """A copy of RGB ``image`` with glasses warped onto the face by the inverse of its :func:`alignment`."""
    layer = _glasses_layer(112, scale)
    m = cv2.invertAffineTransform(alignment(keypoints, 112 * scale))
    h, w = image.shape[:2]
    warped = cv2.warpAffine(layer, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    alpha = warped[..., 3:] / 255.0
    return (image * (1 - alpha) + warped[..., :3] * alpha + 0.5).astype(np.uint8)
