from __future__ import annotations

from pathlib import Path

import pytest

from dldl_core.data import data_root, read_pose, read_utkface

ROOT = Path(__file__).resolve().parent.parent
AGE_WEIGHTS = ROOT / "weights" / "age.safetensors"
POSE_WEIGHTS = ROOT / "weights" / "pose.safetensors"


@pytest.fixture(scope="session")
def utkface_test():
    """UTKFace test rows, or a skip when ../shared/data (or $DLDL_DATA) is absent."""
    if not (data_root() / "age" / "utkface" / "labels.csv").is_file():
        pytest.skip(f"UTKFace not found under {data_root()} (set DLDL_DATA to the data folder)")
    rows = read_utkface(split="test")
    return rows[:: max(1, len(rows) // 300)][:300]  # an even spread over the (age-sorted) list


@pytest.fixture(scope="session")
def utkface_test_readouts(utkface_test, age_predictor):
    """The shipped age model's readouts of the ``utkface_test`` chips, read once for the session."""
    from PIL import Image

    return age_predictor.predict_crops([Image.open(r.path) for r in utkface_test])


@pytest.fixture(scope="session")
def aflw_val():
    """AFLW's val rows (in-the-wild photos), or a skip when the data is absent."""
    if not (data_root() / "pose" / "aflw" / "labels.csv").is_file():
        pytest.skip(f"AFLW not found under {data_root()} (set DLDL_DATA to the data folder)")
    return read_pose("aflw", split="val")


@pytest.fixture(scope="session")
def aflw_wild_photos(aflw_val, age_predictor):
    """200 AFLW val photos with the faces detection finds on them, detected once for the session."""
    from benchmarks.age import _detected

    return _detected(aflw_val, 200, age_predictor.device)


@pytest.fixture(scope="session")
def aflw_wild_readouts(aflw_wild_photos, age_predictor):
    """The shipped age model's readouts of ``aflw_wild_photos`` (the most confident face of each)."""
    from benchmarks.age import _wild

    return _wild(age_predictor, aflw_wild_photos)


@pytest.fixture(scope="session")
def app_url():
    """The Gradio app served in-process on a free local port, once for the session."""
    import app

    app.demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True)
    try:
        yield app.demo.local_url
    finally:
        app.demo.close()


@pytest.fixture(scope="session")
def age_predictor():
    from dldl_core.predict import AgePredictor

    return AgePredictor(AGE_WEIGHTS, "cpu")


@pytest.fixture(scope="session")
def aflw2000(aflw2000_all):
    """200 AFLW2000 rows spread over the set."""
    rows = aflw2000_all
    return rows[:: len(rows) // 200][:200]


@pytest.fixture(scope="session")
def aflw2000_all():
    """All 1,969 AFLW2000 rows, or a skip when the data is absent."""
    if not (data_root() / "pose" / "aflw2000" / "labels.csv").is_file():
        pytest.skip(f"AFLW2000 not found under {data_root()} (set DLDL_DATA to the data folder)")
    return read_pose("aflw2000")


@pytest.fixture(scope="session")
def pose_weights():
    return POSE_WEIGHTS


@pytest.fixture(scope="session")
def pose_predictor():
    from dldl_core.predict import PosePredictor

    return PosePredictor(POSE_WEIGHTS, "cpu")
