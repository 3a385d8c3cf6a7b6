"""The Gradio app through its HTTP API, as gradio_client users call it."""

import json

import pytest

from dldl_core.examples import example_photos


@pytest.fixture(scope="module")
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


def test_analyze_faces_endpoint(client):
    from gradio_client import handle_file

    photos = example_photos()
    annotated, chart, poses, table, download, status = client.predict(handle_file(str(photos["astronaut"])), api_name="/analyze_faces")
    assert status.startswith("1 face found")
    assert annotated and chart and poses
    with open(download) as f:
        result = json.load(f)
    (face,) = result["faces"]
    # An adult (about 36 when photographed; the shipped model reads her younger, see the README).
    assert 12 <= face["age"]["mean"] <= 70 and len(face["age"]["probs"]) == 101
    assert face["age"]["interval"][0] <= face["age"]["mean"] <= face["age"]["interval"][1]
    # She faces the camera, head tilted a little and turned slightly to the image's right.
    pose = face["pose"]
    assert abs(pose["yaw"]) < 35 and abs(pose["pitch"]) < 30 and abs(pose["roll"]) < 30
    assert len(pose["probs"]) == 61 and pose["cov"][0][0] > 0
    row = dict(zip(table["headers"], table["data"][0]))
    assert row["face"] == 1 and row["yaw °"] == pose["yaw"] and row["novelty"] == face["age"]["novelty"]
    assert face["age"]["unusual"] is False and "unlike" not in status  # a frontal studio portrait (novelty 1.96)


def test_no_face_and_bad_file(client, tmp_path):
    from gradio_client import handle_file

    *_, status = client.predict(handle_file(str(example_photos()["coffee (no face)"])), api_name="/analyze_faces")
    assert status == "No face found in this photo."
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(Exception, match="Could not read"):
        client.predict(handle_file(str(bad)), api_name="/analyze_faces")


def test_analyze_objects_endpoint(client):
    from gradio_client import handle_file

    chart, named, download = client.predict(handle_file(str(example_photos()["astronaut"])), api_name="/analyze_objects")
    assert chart and named.startswith("**Objects:**")
    with open(download) as f:
        result = json.load(f)
    assert len(result["scores"]) == 20 and abs(sum(result["scores"].values()) - 1) < 1e-2
    assert result["labels"][:1] == ["person"]  # a portrait of an astronaut


def test_fifty_faces_and_a_huge_photo(tmp_path, utkface_test):
    """Called in-process: the event function itself, with what users upload at the extremes."""
    from PIL import Image

    import app

    grid = Image.new("RGB", (1300, 650), (100, 100, 100))
    for i, row in enumerate(utkface_test[::6][:50]):
        grid.paste(Image.open(row.path).convert("RGB").resize((120, 120)), (10 + (i % 10) * 129, 10 + (i // 10) * 129))
    grid.save(tmp_path / "fifty.jpg", quality=92)
    annotated, _, _, rows, download, status = app.analyze_faces(str(tmp_path / "fifty.jpg"))
    assert 45 <= len(rows) <= 50, status
    assert f"Charts show the first {app.MAX_CHARTS}" in status
    with open(download) as f:
        assert len(json.load(f)["faces"]) == len(rows)

    huge = Image.new("RGB", (10000, 10000), (200, 190, 180))
    huge.paste(Image.open(utkface_test[120].path).convert("RGB").resize((2000, 2000)), (4000, 3000))
    huge.save(tmp_path / "huge.jpg", quality=85)
    annotated, *_, status = app.analyze_faces(str(tmp_path / "huge.jpg"))
    assert status.startswith("1 face found")
    assert max(Image.open(annotated).size) == 1600  # the returned picture is downscaled too


def test_analyze_scene_endpoint(client):
    from gradio_client import handle_file

    overlay, unc, legend, status = client.predict(handle_file(str(example_photos()["coffee (no face)"])), 0.6, api_name="/analyze_scene")
    assert overlay and unc and status.startswith("Mean uncertainty")
    assert legend.count("%") == 11 and "Road" in legend and "rgb(128, 64, 128)" in legend


def test_scene_overlay_opacity(tmp_path):
    """The opacity slider re-blends the kept maps without running the model: 0 is the photo, 1 the class colours."""
    import numpy as np
    from PIL import Image

    import app
    from dldl_core.seg import colourize

    path = tmp_path / "street.png"
    Image.new("RGB", (300, 200), (90, 120, 150)).save(path)
    *_, kept, _ = app.analyze_scene(str(path), 0.5)
    image, classes, colours = kept
    assert classes.shape == (200, 300)
    def pixels(path: str) -> np.ndarray:  # the app hands back JPEG files
        return np.asarray(Image.open(path), dtype=float)

    assert np.abs(pixels(app.reblend(kept, 0.0)) - np.asarray(image)).mean() < 2
    assert np.abs(pixels(app.reblend(kept, 1.0)) - colourize(classes, colours)).mean() < 4
    assert app.reblend(None, 0.5) is None


def test_unusual_faces_are_named_in_the_status():
    import app

    faces = [{"age": {"unusual": False}}, {"age": {"unusual": True}}, {"age": {}}]
    assert app._unusual_note(faces) == " Face #2 looks unlike the faces the age model learned from: the age may be further off than its range says."
    assert "Faces #1, #2 look" in app._unusual_note([{"age": {"unusual": True}}] * 2)
    assert app._unusual_note(faces[:1]) == ""


def test_tracks_mostly_unlike_the_training_faces_are_named():
    import app

    assert app._unusual_frames_note({"frames": 9, "unusual_frames": 5}) == " (unlike the training faces in 5 of them: the age may be further off)"
    assert app._unusual_frames_note({"frames": 10, "unusual_frames": 5}) == ""  # half is not most
    assert app._unusual_frames_note({"frames": 3}) == ""  # weights without a novelty bank beside them
