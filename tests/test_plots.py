import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.distributions import bin_grid, gaussian_1d
from dldl_core.plots import age_chart, age_label, annotate_faces, class_chart
from dldl_core.readouts import summarize


def _face(box, age):
    probs = gaussian_1d(torch.tensor([float(age)]), bin_grid(0, 100, 1), 4.0)
    return {"box": box, "score": 0.99, "age": summarize(probs, bin_grid(0, 100, 1))[0]}


def test_annotation_draws_boxes_and_downscales_huge_images():
    image = Image.new("RGB", (4000, 3000), (255, 255, 255))
    out = annotate_faces(image, [_face([1000, 1000, 1600, 1800], 30)])
    assert out.size == (1600, 1200)
    a = np.asarray(out)
    assert (a[400:720, 400] != 255).any()  # the box's left edge, scaled by 0.4
    assert (np.asarray(image) == 255).all()  # the input is left untouched


def test_age_chart_has_one_panel_per_face_up_to_the_limit():
    faces = [_face([0, 0, 10, 10], 20 + i) for i in range(8)]
    fig = age_chart(faces, max_faces=6)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6
    assert visible[0].get_title() == f"face #1: {age_label(faces[0]['age'])}"
    assert age_label(faces[0]["age"]) == "20 y (15-25)"
    empty = age_chart([])
    assert any(t.get_text() == "no face found" for t in empty.axes[0].texts)


def _posed_face(box, yaw, pitch, roll):
    from dldl_core.distributions import gaussian_2d
    from dldl_core.pose import summarize_pose

    bins = bin_grid(-90, 90, 3)
    joint = gaussian_2d(torch.tensor([[yaw, pitch]]), bins, bins, torch.tensor([[4.0, 6.0]]))
    pose = summarize_pose({"yaw_pitch": joint, "roll": gaussian_1d(torch.tensor([roll]), bins, 3.0)}, bins, 3.0)[0]
    return {"box": box, "score": 0.99, "landmarks": None, "pose": pose}


def test_pose_chart_marks_the_expected_pose_and_axes_are_drawn():
    from dldl_core.plots import pose_chart, pose_label

    face = _posed_face([100, 100, 300, 300], 30.0, -12.0, 5.0)
    assert pose_label(face["pose"]) == "yaw 30° pitch -12° roll 5°"
    fig = pose_chart([face])
    (ax,) = [a for a in fig.axes if a.get_visible()]
    marker = next(line for line in ax.lines if line.get_marker() == "+")
    assert marker.get_xdata()[0] == pytest.approx(30.0, abs=0.1) and marker.get_ydata()[0] == pytest.approx(-12.0, abs=0.1)
    lo, hi = ax.get_xlim()
    assert lo < 30 < hi and hi - lo < 90  # zoomed on the distribution's mass
    out = np.asarray(annotate_faces(Image.new("RGB", (400, 400), (255, 255, 255)), [face]))
    # yaw 30: the nose axis (blue) runs from the box centre towards the image's left
    left, right = out[195:206, 130:190], out[195:206, 210:270]
    blue = lambda a: ((a[..., 2] > 200) & (a[..., 0] < 100)).sum()
    assert blue(left) > 10 and blue(right) == 0


def test_uncertainty_image_runs_from_dark_to_bright():
    from dldl_core.plots import uncertainty_image

    img = np.asarray(uncertainty_image(np.array([[0.0, 0.5, 1.0, 2.0]])))
    assert img.shape == (1, 4, 3) and img.dtype == np.uint8
    brightness = img.sum(-1)
    assert brightness[0, 0] < 30 < brightness[0, 1] < brightness[0, 2] and (img[0, 3] == img[0, 2]).all()  # clipped at 1


def test_class_chart_ranks_none_of_these_among_the_classes():
    result = {"scores": {"person": 0.29, "car": 0.11, "dog": 0.05}, "labels": ["person"], "none": 0.18}
    ax = class_chart(result, 0.15).axes[0]
    names = [t.get_text() for t in ax.get_yticklabels()]
    assert names == ["dog", "car", "none of these", "person"]  # best at the top
    assert ax.patches[2].get_hatch() and ax.patches[3].get_hatch() is None
    plain = {k: v for k, v in result.items() if k != "none"}  # a model without the output: no such bar
    assert [t.get_text() for t in class_chart(plain).axes[0].get_yticklabels()] == ["dog", "car", "person"]
