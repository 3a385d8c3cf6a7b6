"""Head pose: label construction, crops, the drawing helper and the shipped model on AFLW2000."""

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.crops import box_square, square_crop
from dldl_core.models import DistributionNet
from dldl_core.pose import euler_angles, head_axes, rotate_in_plane, rotation_matrix
from dldl_core.transforms import random_affine
from train.pose import PoseConfig, PoseTask, targets


def test_joint_head_outputs_the_grid_and_stays_small():
    spec = {"yaw_pitch": {"shape": [61, 61], "hidden": 256}, "roll": 61}
    net = DistributionNet("mobilenet_v2", spec).eval()
    out = net(torch.zeros(2, 3, 64, 64))
    assert out["yaw_pitch"].shape == (2, 61, 61) and out["roll"].shape == (2, 61)
    params = sum(p.numel() for p in net.heads["yaw_pitch"].parameters())
    assert params < 1.5e6  # a plain linear 1280 -> 61*61 layer would need 4.8M


def test_labels_follow_the_teachers_where_they_agree_and_widen_where_they_do_not():
    # rows: AFLW's (yaw, pitch, roll), teacher A's, teacher B's
    rows = torch.tensor(
        [
            [10.0, -5.0, 2.0, 4.0, 3.0, 1.0, 6.0, 5.0, 1.0],  # teachers agree: their mean, narrow
            [70.0, -5.0, 2.0, 60.0, 30.0, 40.0, 64.0, -10.0, 0.0],  # yaw agrees, pitch and roll do not
        ]
    )
    cfg = PoseConfig(labels="blend", sigma=3.0, agree=5.0, disagree=15.0)
    centre, spread = targets(rows, cfg)
    assert centre[0].tolist() == pytest.approx([5.0, 4.0, 1.0])
    assert spread[0].tolist() == pytest.approx([np.hypot(3, 1), np.hypot(3, 1), 3.0])
    assert centre[1].tolist() == pytest.approx([62.0, -5.0, 2.0])  # pitch and roll fall back to AFLW's labels
    assert spread[1, 1] == pytest.approx(np.hypot(3, 20))
    raw, raw_spread = targets(rows, PoseConfig(labels="raw"))
    assert torch.equal(raw, rows[:, :3]) and (raw_spread == 3.0).all()
    mean, _ = targets(rows, PoseConfig(labels="teachers"))
    assert mean[1].tolist() == pytest.approx([62.0, 10.0, 20.0])


def test_head_axes_follow_the_sign_convention():
    right, up, _nose = head_axes(0, 0, 0)
    assert right.tolist() == pytest.approx([1, 0]) and up.tolist() == pytest.approx([0, -1])
    assert head_axes(40, 0, 0)[2][0] < -0.5  # yaw > 0: the nose points to the image's left
    assert head_axes(0, 40, 0)[2][1] < -0.5  # pitch > 0: up (image y grows downwards)
    assert head_axes(0, 0, 30)[1][0] > 0.4  # roll > 0: clockwise, the top of the head moves right


def test_euler_angles_invert_the_rotation_and_an_image_turn_composes_with_it():
    angles = torch.tensor([[30.0, 10.0, 5.0], [-60.0, -20.0, 15.0], [0.0, 45.0, -30.0]])
    assert torch.allclose(euler_angles(rotation_matrix(angles)), angles, atol=1e-4)
    turn = torch.tensor([25.0, 25.0, -40.0])
    frontal = rotate_in_plane(torch.zeros(3, 3), turn)
    assert frontal[:, 2].tolist() == pytest.approx((-turn).tolist(), abs=1e-4)  # counter-clockwise: roll < 0
    assert frontal[:, :2].abs().max() < 1e-4
    # A turned head: the image turn is about the camera axis, not the head's, so all angles move ...
    turned = rotate_in_plane(angles[1:2], turn[:1])[0]
    assert abs(turned[1] - angles[1, 1]) > 10 and abs(turned[2] - (angles[1, 2] - 25)) > 1
    # ... and the nose keeps its angle to the camera axis while turning in the image plane.
    nose = rotation_matrix(angles[1:2])[0, :, 2], rotation_matrix(turned[None])[0, :, 2]
    assert float(nose[0][2]) == pytest.approx(float(nose[1][2]), abs=1e-5)
    image_angle = [float(torch.atan2(-n[1], n[0])) for n in nose]  # image y points down: clockwise grows
    assert np.degrees(image_angle[1] - image_angle[0]) == pytest.approx(-25.0, abs=1e-3)


def test_training_turns_images_and_labels_together():
    task = PoseTask(PoseConfig(rotate=45.0, rotate_p=1.0))
    torch.manual_seed(0)
    nan = float("nan")
    labels = torch.tensor([[10.0, 5.0, 0.0, 8.0, 4.0, 1.0, 12.0, 6.0, -1.0], [85.0, 0.0, 0.0, *[nan] * 6]] * 50)
    degrees, turned = task.rotation(labels)
    moved = degrees != 0
    assert moved[0::2].float().mean() > 0.9  # every near-frontal face is turned (rotate_p = 1)
    assert torch.equal(turned[1::2][~moved[1::2]], labels[1::2][~moved[1::2]])  # off-grid turns are not made
    assert (turned[:, :3].abs() <= 87.0).all() and torch.isnan(turned[1::2, 3:]).all()
    expected = rotate_in_plane(labels[0::2, 3:6], degrees[0::2])
    assert torch.allclose(turned[0::2, 3:6], expected)
    # random_affine turns the image the way PIL does for the same degrees (the labels' sign)
    image = np.zeros((64, 64, 3), np.uint8)
    image[8:20, 30:34] = 255
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    ours = random_affine(x, flip=False, scale=(1, 1), max_shift=0, degrees=torch.tensor([30.0]))[0].permute(1, 2, 0)
    pil = np.asarray(Image.fromarray(image).rotate(30, resample=Image.BILINEAR), float)
    assert np.abs(ours.numpy() - pil).mean() < 1.0


def test_in_plane_rotation_moves_the_predicted_roll_by_the_angle(aflw2000_all, pose_predictor):
    """Median over 100 AFLW2000 faces with |yaw| < 30: turning the image by 20 degrees either way
    moves the predicted roll by the turn (composed with the face's pose) within 3 degrees."""
    faces = [r for r in aflw2000_all if abs(r.pose[0]) < 30][::5][:100]
    assert len(faces) == 100
    gaps = []
    for degrees in (20.0, -20.0):
        upright, turned = [], []
        for r in faces:
            image = Image.open(r.path).convert("RGB")
            x0, y0, x1, y1 = r.box
            upright.append(pose_predictor.crop_from_box(image, list(r.box)))
            rotated = image.rotate(degrees, resample=Image.BILINEAR, center=((x0 + x1) / 2, (y0 + y1) / 2))
            turned.append(pose_predictor.crop_from_box(rotated, list(r.box)))
        before = torch.tensor([[o["yaw"], o["pitch"], o["roll"]] for o in pose_predictor.predict_crops(upright)])
        after = torch.tensor([[o["yaw"], o["pitch"], o["roll"]] for o in pose_predictor.predict_crops(turned)])
        expected = rotate_in_plane(before, torch.full((100,), degrees))
        gaps.append((after[:, 2] - expected[:, 2]).abs())
    assert float(torch.cat(gaps).median()) < 3.0


def test_square_crop_is_upright_and_pads_outside_black():
    image = Image.new("RGB", (100, 80), (200, 200, 200))
    image.paste((255, 0, 0), (40, 30, 60, 50))
    centre, side = box_square([40, 30, 60, 50], {"dx": 0.0, "dy": 0.0, "side": 5.0})
    assert centre == (50.0, 40.0) and side == 100.0
    crop = np.asarray(square_crop(image, centre, side, 50))
    assert crop.shape == (50, 50, 3)
    assert tuple(crop[25, 25]) == (255, 0, 0) and tuple(crop[2, 25]) == (0, 0, 0)  # rows 0-4 lie above the image


def test_shipped_pose_model_on_aflw2000(aflw2000, pose_predictor):
    """Regression guard on 200 AFLW2000 images (the full figures are in benchmarks/pose.py)."""
    crops = [pose_predictor.crop_from_box(Image.open(r.path).convert("RGB"), list(r.box)) for r in aflw2000]
    out = pose_predictor.predict_crops(crops)
    err = np.abs(np.array([[o["yaw"], o["pitch"], o["roll"]] for o in out]) - np.array([r.pose for r in aflw2000]))
    assert err.mean() < 6.0
    for o in out:
        p = np.asarray(o["probs"])
        assert p.shape == (61, 61) and abs(p.sum() - 1) < 1e-2
        assert o["cov"][0][0] > 0 and o["cov"][1][1] > 0 and o["cov"][0][1] == o["cov"][1][0]


def test_mirrored_face_negates_yaw_and_roll(aflw2000, pose_weights):
    """The model itself, without the mirror averaging that would make this hold by construction."""
    from dldl_core.predict import PosePredictor

    pose_predictor = PosePredictor(pose_weights, "cpu")
    pose_predictor.tta_flip = False
    turned = [r for r in aflw2000 if 20 < abs(r.pose[0]) < 60 and abs(r.pose[2]) > 5][:8]
    assert len(turned) == 8
    gaps = []
    for r in turned:
        image = Image.open(r.path).convert("RGB")
        x0, y0, x1, y1 = r.box
        mirrored_box = [image.width - x1, y0, image.width - x0, y1]
        a, b = pose_predictor.predict_crops(
            [pose_predictor.crop_from_box(image, list(r.box)), pose_predictor.crop_from_box(image.transpose(Image.FLIP_LEFT_RIGHT), mirrored_box)]
        )
        assert np.sign(a["yaw"]) == np.sign(r.pose[0]) == -np.sign(b["yaw"])  # the data's sign convention, end to end
        gaps.append([a["yaw"] + b["yaw"], a["roll"] + b["roll"], a["pitch"] - b["pitch"]])
    # Typical faces agree within a few degrees (a hard one may not: the median over eight is checked).
    assert (np.median(np.abs(gaps), 0) < 3).all(), gaps


def test_card_describes_the_shipped_pose_model(pose_predictor):
    card = pose_predictor.card
    assert card.task == "pose" and card.metrics["test"]["mae"] <= 5.0
    assert {"dx", "dy", "side"} <= set(card.input.crop.from_detector)
    assert "teachers" in card.data["labels"] or "AFLW" in card.data["labels"]
