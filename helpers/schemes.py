"""Keypoint schemes: names, left/right pairs for flipping, drawing connectivity, and the 68 → 15 mapping. "Left" and
"right" are the **subject's** sides, as in the Kaggle column names (``left_eye_center`` is on the *right* of a frontal
photograph). iBUG 68 indices are 0-based here (300-W numbers them 1-68): 0-16 jaw, 17-26 brows, 27-35 nose, 36-47
eyes (36-41 the subject's right eye), 48-67 mouth."""
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scheme:
    """A keypoint layout."""
    name: str                                                # "68" or "15"
    names: tuple[str, ...]                                   # one per keypoint
    flip_pairs: tuple[tuple[int, int], ...]                  # swapped by a horizontal flip; the rest stay
    polylines: tuple[tuple[tuple[int, ...], bool], ...]      # (indices, closed): the face's outline, for drawing
    normaliser: tuple[tuple[int, ...], tuple[int, ...]]      # NME divides by the distance of the groups' means
    normaliser_name: str                                     # a phrase for text and plots

    def __post_init__(self):
        if sorted(self.flip_permutation.tolist()) != list(range(len(self.names))):
            raise ValueError(f"scheme {self.name}: flip pairs do not form a permutation")

    @property
    def num_keypoints(self) -> int:
        return len(self.names)

    @property
    def flip_permutation(self) -> np.ndarray:
        """``kps[..., perm, :]`` relabels keypoints after a horizontal mirror (left ↔ right)."""
        perm = np.arange(len(self.names))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def sides(self) -> np.ndarray:
        """Per keypoint: +1 the subject's left, -1 the subject's right, 0 on the midline."""
        return np.array([1 if re.search(r"(^|_)left", n) else -1 if re.search(r"(^|_)right", n) else 0
                         for n in self.names], dtype=int)

    @property
    def edges(self) -> list[tuple[int, int]]:
        return [e for idx, closed in self.polylines for e in zip(idx, idx[1:] + (idx[:1] if closed else ()))]

    def interocular(self, keypoints: np.ndarray) -> np.ndarray:
        """Normalising distance of NME for ``keypoints`` of shape (..., K, 2) (NaN where undefined)."""
        kp = np.asarray(keypoints, dtype=np.float64)
        a, b = (kp[..., list(group), :].mean(axis=-2) for group in self.normaliser)
        return np.linalg.norm(a - b, axis=-1)


def _names_68() -> tuple[str, ...]:
    # jaw: 0 is at the subject's right ear (image left), 8 the chin, 16 the subject's left ear.
    names = [f"right_jaw_{i}" for i in range(8)] + ["chin"] + [f"left_jaw_{7 - i}" for i in range(8)]
    names += [f"right_brow_{i}" for i in range(5)] + [f"left_brow_{4 - i}" for i in range(5)]
    names += [f"nose_bridge_{i}" for i in range(4)]
    names += ["right_nostril_outer", "right_nostril", "nose_base", "left_nostril", "left_nostril_outer"]
    names += ["right_eye_outer_corner", "right_eye_top_outer", "right_eye_top_inner", "right_eye_inner_corner",
              "right_eye_bottom_inner", "right_eye_bottom_outer"]
    names += ["left_eye_inner_corner", "left_eye_top_inner", "left_eye_top_outer", "left_eye_outer_corner",
              "left_eye_bottom_outer", "left_eye_bottom_inner"]
    names += ["mouth_right_corner", "upper_lip_right_2", "upper_lip_right_1", "upper_lip_top",
              "upper_lip_left_1", "upper_lip_left_2", "mouth_left_corner", "lower_lip_left_2",
              "lower_lip_left_1", "lower_lip_bottom", "lower_lip_right_1", "lower_lip_right_2"]
    names += ["inner_lip_right_corner", "inner_upper_lip_right", "inner_upper_lip_centre", "inner_upper_lip_left",
              "inner_lip_left_corner", "inner_lower_lip_left", "inner_lower_lip_centre", "inner_lower_lip_right"]
    assert len(names) == 68
    return tuple(names)


_PAIRS_68 = tuple([(i, 16 - i) for i in range(8)] + [(17 + i, 26 - i) for i in range(5)]           # jaw, brows
                  + [(31, 35), (32, 34), (36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46)]  # nostrils, eyes
                  + [(48, 54), (49, 53), (50, 52), (55, 59), (56, 58), (60, 64), (61, 63), (65, 67)])  # lips

SCHEME_68 = Scheme(
    name="68", names=_names_68(), flip_pairs=_PAIRS_68,
    polylines=tuple((tuple(range(a, b)), closed) for a, b, closed in (
        (0, 17, False), (17, 22, False), (22, 27, False), (27, 31, False),   # jaw, right and left brow, nose bridge
        (30, 36, True), (36, 42, True), (42, 48, True),                      # lower nose, right and left eye
        (48, 60, True), (60, 68, True))),                                    # outer and inner lips
    normaliser=((36,), (45,)), normaliser_name="outer eye corners (points 36 and 45)",
)

SCHEME_15 = Scheme(
    name="15",
    names=("left_eye_center", "right_eye_center", "left_eye_inner_corner", "left_eye_outer_corner",
           "right_eye_inner_corner", "right_eye_outer_corner", "left_eyebrow_inner_end", "left_eyebrow_outer_end",
           "right_eyebrow_inner_end", "right_eyebrow_outer_end", "nose_tip", "mouth_left_corner",
           "mouth_right_corner", "mouth_center_top_lip", "mouth_center_bottom_lip"),       # Kaggle's column names
    flip_pairs=((0, 1), (2, 4), (3, 5), (6, 8), (7, 9), (11, 12)),
    polylines=(((3, 0, 2), False), ((5, 1, 4), False),      # eyes: outer - centre - inner
               ((7, 6), False), ((9, 8), False), ((11, 13, 12, 14), True)),     # brows, mouth
    normaliser=((0,), (1,)), normaliser_name="eye centres",
)

# 68 → 15: each Kaggle point as the mean of one or more iBUG points (0-based).
MAP_68_TO_15: tuple[tuple[int, ...], ...] = (
    (42, 43, 44, 45, 46, 47), (36, 37, 38, 39, 40, 41),   # left, right eye centre (subject's left eye: 42-47)
    (42,), (45,), (39,), (36,),                            # left eye inner / outer, right eye inner / outer corner
    (22,), (26,), (21,), (17,),                            # left brow inner / outer, right brow inner / outer end
    (30,), (54,), (48,), (51,), (57,),                     # nose tip, mouth left / right corner, top / bottom lip
)

SCHEMES = {"68": SCHEME_68, "15": SCHEME_15}


def get_scheme(name: str | int | Scheme) -> Scheme:
    """A scheme by name (``"68"``, ``15``) or itself."""
    if isinstance(name, Scheme):
        return name
    if str(name) not in SCHEMES:
        raise ValueError(f"Unknown keypoint scheme {name!r}; choose from {sorted(SCHEMES)}")
    return SCHEMES[str(name)]


def to_15(keypoints68: np.ndarray) -> np.ndarray:
    """Map (..., 68, 2) iBUG keypoints to the thesis' 15 Kaggle keypoints (..., 15, 2)."""
    kp = np.asarray(keypoints68, dtype=np.float32)
    if kp.shape[-2:] != (68, 2):
        raise ValueError(f"expected (..., 68, 2) keypoints, got {kp.shape}")
    return np.stack([kp[..., list(group), :].mean(axis=-2) for group in MAP_68_TO_15], axis=-2)


def five_points(keypoints68) -> np.ndarray:
    """(..., 5, 2) from (..., 68, 2): eye centres (image left first), nose tip, mouth corners (MTCNN's, ArcFace's)."""
    kp = np.asarray(keypoints68, np.float64)
    return np.stack([kp[..., 36:42, :].mean(-2), kp[..., 42:48, :].mean(-2), kp[..., 30, :], kp[..., 48, :],
                     kp[..., 54, :]], axis=-2)
