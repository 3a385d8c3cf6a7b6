import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "dldl_core", *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_age_crops_and_bad_inputs(tmp_path, utkface_test):
    chips = [str(r.path) for r in utkface_test[100:103]]
    bad = tmp_path / "photo.jpg"
    bad.write_text("not really a jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    out = tmp_path / "ages.jsonl"
    proc = _run("predict", "age", *chips, str(bad), str(empty), "--crops", "--out", str(out))
    assert proc.returncode == 1  # not every input could be read
    rows = _lines(out)
    assert [r["path"] for r in rows] == chips + [str(bad), str(empty)]
    for row in rows[:3]:
        (face,) = row["faces"]
        age = face["age"]
        assert set(age) == {"mean", "mode", "std", "interval", "probs", "novelty", "unusual"}
        assert age["unusual"] is False  # UTKFace test chips, like the training faces
        assert len(age["probs"]) == 101 and age["interval"][0] <= age["mean"] <= age["interval"][1]
        assert 0 < age["mean"] < 100
    assert "not a readable image" in rows[3]["error"] and "empty" in rows[4]["error"]
    assert "photo.jpg" in proc.stderr


def test_predict_age_with_detection(tmp_path, utkface_test):
    chip = Image.open(utkface_test[120].path).convert("RGB")
    canvas = Image.new("RGB", (500, 380), (90, 90, 90))
    canvas.paste(chip, (220, 100))
    folder = tmp_path / "photos"
    folder.mkdir()
    canvas.save(folder / "one_face.jpg", quality=95)
    Image.new("RGB", (300, 200), (30, 140, 60)).save(folder / "no_face.png")
    proc = _run("predict", "age", str(folder))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["path"]).name for r in rows] == ["no_face.png", "one_face.jpg"]
    assert rows[0]["faces"] == []
    (face,) = rows[1]["faces"]
    x0, y0, x1, y1 = face["box"]  # the chip spans x 220..420, y 100..300
    assert 220 < (x0 + x1) / 2 < 420 and 100 < (y0 + y1) / 2 < 300 and 60 < x1 - x0 < 220
    assert len(face["landmarks"]) == 5 and face["score"] > 0.9
    assert len(face["age"]["probs"]) == 101


def test_missing_weights_is_a_clear_error(tmp_path):
    img = tmp_path / "x.png"
    Image.new("RGB", (50, 50)).save(img)
    proc = _run("predict", "age", str(img), "--age-weights", str(tmp_path / "none.safetensors"))
    assert proc.returncode == 2
    assert "weights file" in proc.stderr and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_predict_pose_crops_and_faces_in_one_pass(tmp_path, utkface_test):
    from dldl_core.data import data_root, read_pose

    if not (data_root() / "pose" / "aflw2000" / "labels.csv").is_file():
        pytest.skip("AFLW2000 not found (set DLDL_DATA to the data folder)")
    row = read_pose("aflw2000")[3]
    out = tmp_path / "pose.jsonl"
    proc = _run("predict", "pose", str(row.path), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (line,) = _lines(out)
    (face,) = [f for f in line["faces"] if f["box"][0] < (row.box[0] + row.box[2]) / 2 < f["box"][2]]
    pose = face["pose"]
    assert set(pose) == {"yaw", "pitch", "roll", "cov", "roll_std", "grid", "probs"}
    assert len(pose["probs"]) == 61 and len(pose["probs"][0]) == 61
    assert pose["grid"]["yaw"] == {"start": -90.0, "stop": 90.0, "step": 3.0}
    assert abs(pose["yaw"] - row.pose[0]) < 15 and "age" not in face

    chip = Image.open(utkface_test[120].path).convert("RGB")
    canvas = Image.new("RGB", (500, 380), (90, 90, 90))
    canvas.paste(chip, (220, 100))
    photo = tmp_path / "one_face.jpg"
    canvas.save(photo, quality=95)
    proc = _run("predict", "faces", str(photo))
    assert proc.returncode == 0, proc.stderr
    (face,) = json.loads(proc.stdout)["faces"]
    assert len(face["age"]["probs"]) == 101 and abs(face["pose"]["yaw"]) < 30  # a frontal UTKFace chip

    proc = _run("predict", "faces", str(photo), "--crops")
    assert proc.returncode == 2 and "unrecognized arguments: --crops" in proc.stderr  # faces has no --crops: two framings


def test_each_task_shows_only_its_own_options():
    seg = _run("predict", "seg", "--help").stdout
    assert "--out-dir" in seg and "--weights" in seg and "--age-weights" not in seg and "--crops" not in seg
    faces = _run("predict", "faces", "--help").stdout
    assert "--age-weights" in faces and "--pose-weights" in faces and "--out-dir" not in faces
    proc = _run("predict", "multilabel", "x.png", "--out-dir", "maps")
    assert proc.returncode == 2 and "unrecognized arguments: --out-dir" in proc.stderr
