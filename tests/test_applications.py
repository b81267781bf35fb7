"""Applications: head pose on synthetic projections and under rotation and mirroring, alignment onto the template,
the eye and mouth ratios on hand-made points, blinks in a series, and the glasses overlay."""
import cv2
import numpy as np
import pytest

from helpers import applications as apps
from helpers.schemes import SCHEME_68
from .support import face_68

W, H = 640, 480


def projected(yaw=0.0, pitch=0.0, roll=0.0, distance=3000.0) -> np.ndarray:
    """68 keypoints (NaN but the six pose points) of the 3D model seen at known angles (this module's signs)."""
    rot = [cv2.Rodrigues(np.array(v, np.float64))[0] for v in
           ([0, 0, np.deg2rad(roll)], [0, -np.deg2rad(yaw), 0], [-np.deg2rad(pitch), 0, 0])]
    rvec = cv2.Rodrigues(rot[0] @ rot[1] @ rot[2])[0]
    pts = cv2.projectPoints(apps.FACE_3D, rvec, np.array([0, 0, distance]), apps.camera(W, H), None)[0]
    kp = np.full((68, 2), np.nan)
    kp[list(apps.POSE_POINTS)] = pts.reshape(-1, 2)
    return kp


@pytest.mark.parametrize("angles", [(0, 0, 0), (25, 0, 0), (0, 15, 0), (0, 0, -20), (-30, -10, 12)])
def test_pose_recovers_known_angles(angles):
    pose = apps.head_pose(projected(*angles), W, H)
    np.testing.assert_allclose([pose["yaw"], pose["pitch"], pose["roll"]], angles, atol=0.1)


def test_pose_signs_follow_the_image():
    right = projected(yaw=20)
    assert right[30, 0] > right[[36, 45], 0].mean()          # turned to the image's right: the nose leads
    up, front = projected(pitch=20), projected()
    assert front[30, 1] - front[36, 1] > up[30, 1] - up[36, 1] + 5    # looking up: the eyes come down to the nose


def test_roll_follows_an_in_plane_rotation_and_mirroring_negates_yaw_and_roll():
    kp = projected(yaw=15, pitch=5, roll=3)
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    theta = np.deg2rad(10)                                        # clockwise on screen (y points down)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    turned = (kp - centre) @ rot.T + centre
    before, after = apps.head_pose(kp, W, H), apps.head_pose(turned, W, H)
    assert after["roll"] - before["roll"] == pytest.approx(10, abs=0.1)
    assert after["yaw"] == pytest.approx(before["yaw"], abs=0.1)
    mirrored = kp.copy()
    mirrored[:, 0] = W - 1 - mirrored[:, 0]
    mirrored = mirrored[SCHEME_68.flip_permutation]
    m = apps.head_pose(mirrored, W, H)
    assert m["yaw"] == pytest.approx(-before["yaw"], abs=0.1) and m["roll"] == pytest.approx(-before["roll"], abs=0.1)
    assert m["pitch"] == pytest.approx(before["pitch"], abs=0.1)


def test_alignment_puts_the_eyes_on_the_template():
    kp = face_68(w=300, h=260) + [50, 40]
    angle = np.deg2rad(17)
    kp = (kp - 200) @ (1.3 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])).T + 220
    m = apps.alignment(kp, 112)
    moved = apps.five_points(kp) @ m[:, :2].T + m[:, 2]
    assert np.abs(moved[:2] - apps.TEMPLATE_112[:2]).max() < 4.0          # a similarity fits 5 points closely
    image = np.zeros((500, 500, 3), np.uint8)
    assert apps.align_face(image, kp, 96).shape == (96, 96, 3)


def test_eye_and_mouth_ratios_on_hand_made_points():
    kp = np.zeros((68, 2))
    for o, cx in ((36, 100.0), (42, 200.0)):                    # eyes 60 wide, lids 9 and 9 apart: EAR 0.15
        kp[o:o + 6] = [(cx - 30, 50), (cx - 10, 45.5), (cx + 10, 45.5), (cx + 30, 50), (cx + 10, 54.5), (cx - 10, 54.5)]
    assert apps.eye_aspect_ratio(kp) == pytest.approx(0.15)
    kp[60:68] = [(120, 150), (135, 145), (150, 145), (165, 145), (180, 150), (165, 157), (150, 157), (135, 157)]
    assert apps.mouth_ratio(kp) == pytest.approx(12 / 60)


def test_blinks_are_runs_below_the_open_level():
    ear = np.full(60, 0.3)
    ear[10:14] = 0.1                                             # a blink of 4 frames
    ear[30] = 0.12                                               # one frame: noise, not a blink
    ear[45:48] = np.nan                                          # lost frames count as open
    ear[50:53] = 0.15
    assert apps.blinks(ear) == [(10, 13), (50, 52)]


def test_glasses_are_drawn_near_the_eyes_only():
    image = np.full((400, 500, 3), 200, np.uint8)
    kp = face_68(w=200, h=180) + [150, 120]
    out = apps.draw_glasses(image, kp)
    assert out.shape == image.shape and out.dtype == np.uint8
    changed = np.argwhere(np.abs(out.astype(int) - image).sum(-1) > 10)
    assert len(changed) > 500
    eyes = apps.five_points(kp)[:2]
    width = np.linalg.norm(eyes[1] - eyes[0])
    lo, hi = eyes.min(0) - 1.2 * width, eyes.max(0) + 1.2 * width
    assert (changed[:, ::-1] >= lo).all() and (changed[:, ::-1] <= hi).all()
