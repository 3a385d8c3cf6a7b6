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
    annotated, chart, table, download, status = client.predict(handle_file(str(photos["astronaut"])), api_name="/analyze_faces")
    assert status.startswith("1 face found")
    assert annotated and chart
    with open(download) as f:
        result = json.load(f)
    (face,) = result["faces"]
    # An adult (about 36 when photographed; the shipped model reads her younger, see the README).
    assert 12 <= face["age"]["mean"] <= 70 and len(face["age"]["probs"]) == 101
    assert face["age"]["interval"][0] <= face["age"]["mean"] <= face["age"]["interval"][1]
    assert table["data"][0][0] == 1


def test_no_face_and_bad_file(client, tmp_path):
    from gradio_client import handle_file

    *_, status = client.predict(handle_file(str(example_photos()["coffee (no face)"])), api_name="/analyze_faces")
    assert status == "No face found in this photo."
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(Exception, match="Could not read"):
        client.predict(handle_file(str(bad)), api_name="/analyze_faces")
