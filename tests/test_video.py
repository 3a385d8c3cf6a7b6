"""Video: reading clips, tracking faces, fusing their distributions, the command line and the app's
video and webcam paths. Clips are generated here from the astronaut example photo."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.distributions import bin_grid, gaussian_1d, gaussian_2d
from dldl_core.examples import example_photos
from dldl_core.faces import Face
from dldl_core.fusion import AgeEvidence, PoseFilter, spread
from dldl_core.readouts import credible_interval, expectation, joint_moments
from dldl_core.tracking import FaceTracker
from dldl_core.video import VideoReadError, VideoWriter, read_video


def head() -> Image.Image:
    """The astronaut's head and shoulders."""
    return Image.open(example_photos()["astronaut"]).convert("RGB").crop((120, 20, 340, 260))


def write_clip(path, faces: int, frames: int = 12, size=(320, 240)) -> None:
    """``faces`` heads (0, 1 or 2) drifting across a grey frame, as an MP4."""
    face = head().resize((130, 142))
    with VideoWriter(path, 10, size) as w:
        for k in range(frames):
            canvas = Image.new("RGB", size, (100, 100, 100))
            for i in range(faces):
                canvas.paste(face, (10 + 170 * i + (k if i == 0 else -k), 40))
            w.write(canvas)


def _face(x: float, y: float, side: float = 50.0) -> Face:
    marks = [[x + 0.3 * side, y + 0.4 * side], [x + 0.7 * side, y + 0.4 * side], [x + 0.5 * side, y + 0.6 * side],
             [x + 0.35 * side, y + 0.8 * side], [x + 0.65 * side, y + 0.8 * side]]
    return Face([x, y, x + side, y + side], 0.99, marks)


# -- fusion -------------------------------------------------------------------------------------

def test_age_evidence_pools_with_a_bounded_effective_count():
    bins = bin_grid(0, 100, 1)
    frame = gaussian_1d(torch.tensor([30.0]), bins, torch.tensor([5.0]))[0]
    same = AgeEvidence(len(bins), correlation=1.0)
    for _ in range(20):
        same.add(frame)
    assert torch.allclose(same.fused(), frame, atol=1e-5)  # fully correlated frames: one frame's worth
    sharp = same.fused(0.05)
    assert same.effective_frames(0.05) == pytest.approx(20 / (1 + 19 * 0.05))
    width = [float(torch.diff(credible_interval(p[None], bins)[0])) for p in (frame, sharp)]
    assert width[1] < width[0] / 2 and float(expectation(sharp[None], bins)[0]) == pytest.approx(30.0, abs=0.05)
    assert AgeEvidence(3, 0.1).effective_frames() == 0
    many = AgeEvidence(len(bins), correlation=0.1)
    for _ in range(1000):
        many.add(frame)
    assert many.effective_frames() < 10  # never more than 1 / correlation frames, however long the clip
    with pytest.raises(ValueError):
        AgeEvidence(3, correlation=0.0)


def test_age_evidence_weighs_sure_frames_more_and_survives_an_impossible_bin():
    bins = bin_grid(0, 100, 1)
    sure = gaussian_1d(torch.tensor([40.0]), bins, torch.tensor([2.0]))[0]
    vague = gaussian_1d(torch.tensor([20.0]), bins, torch.tensor([15.0]))[0]
    pooled = AgeEvidence(len(bins), 1.0)
    pooled.add(sure)
    pooled.add(vague)
    assert float(expectation(pooled.fused()[None], bins)[0]) > 35  # log-linear pooling: the sure frame dominates
    pooled.add(torch.zeros(len(bins)))  # a frame with no mass anywhere cannot make the result NaN
    assert torch.isfinite(pooled.fused()).all()


def test_spread_keeps_mass_and_widens():
    bins = bin_grid(-90, 90, 3)
    joint = gaussian_2d(torch.tensor([[10.0, -5.0]]), bins, bins, torch.tensor([[3.0, 3.0]]))[0]
    wide = spread(joint, 2.0)
    assert float(wide.sum()) == pytest.approx(1.0, abs=1e-5)
    (m0,), (c0,) = joint_moments(joint[None], bins, bins)
    (m1,), (c1,) = joint_moments(wide[None], bins, bins)
    assert torch.allclose(m0, m1, atol=0.05) and c1[0, 0] > c0[0, 0] + 20
    roll = gaussian_1d(torch.tensor([0.0]), bins, torch.tensor([3.0]))[0]
    assert float(spread(roll, 1.0).max()) < float(roll.max())


def test_pose_filter_steadies_a_still_head_and_follows_a_turn():
    bins = bin_grid(-90, 90, 3)
    rng = np.random.default_rng(0)

    def frame(yaw: float, roll: float):
        j = gaussian_2d(torch.tensor([[yaw, 0.0]]), bins, bins, torch.tensor([[4.0, 4.0]]))[0]
        return j, gaussian_1d(torch.tensor([roll]), bins, torch.tensor([4.0]))[0]

    f = PoseFilter(3.0, motion=2.0)
    raw, filtered = [], []
    for _ in range(40):
        yaw = 10 + rng.normal(0, 2)
        joint, roll = f.update(*frame(yaw, 0.0))
        raw.append(yaw)
        filtered.append(float(joint_moments(joint[None], bins, bins)[0][0, 0]))
    assert np.diff(filtered[10:]).std() < np.diff(raw[10:]).std() / 2
    turn = PoseFilter(3.0, motion=2.0)
    for k in range(30):
        _, roll = turn.update(*frame(0.0, 2.0 * k))
    assert float(expectation(roll[None], bins)[0]) > 2.0 * 29 - 4 * 2.0  # trails a 2-degree-a-frame turn by under 4 frames


# -- tracking -----------------------------------------------------------------------------------

def test_tracker_keeps_ids_through_motion_and_short_misses():
    tracker = FaceTracker(max_missed=3)
    ids = []
    for k in range(10):
        faces = [_face(20 + 2 * k, 30), _face(200 - 2 * k, 40)]
        if k in (4, 5):
            faces = faces[1:]  # the left face is missed twice
        ids.append([t.id for t in tracker.update(faces, k)])
    assert ids[0] == [1, 2] and ids[9] == [1, 2] and ids[4] == [2]
    later = tracker.update([_face(40, 30)], 20)  # back after a long absence: a new person as far as we know
    assert [t.id for t in later] == [3]


def test_tracker_does_not_swap_crossing_neighbours():
    tracker = FaceTracker()
    first = tracker.update([_face(100, 50), _face(140, 50)], 0)  # overlapping boxes
    second = tracker.update([_face(143, 50), _face(103, 50)], 1)  # listed in the other order
    assert [t.id for t in second] == [first[1].id, first[0].id]


# -- reading video ------------------------------------------------------------------------------

def test_read_video_gives_upright_frames_and_clear_errors(tmp_path):
    clip = tmp_path / "one.mp4"
    write_clip(clip, 1, frames=5)
    info, frames = read_video(clip)
    frames = list(frames)
    assert (info.width, info.height, info.fps) == (320, 240, 10.0) and len(frames) == 5
    assert frames[-1].time == pytest.approx(0.4) and frames[0].image.size == (320, 240)
    for bad, message in [(tmp_path / "missing.mp4", "no such file"), (tmp_path, "not a file")]:
        with pytest.raises(VideoReadError, match=message):
            read_video(bad)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 2000)
    with pytest.raises(VideoReadError, match="not a readable video"):
        read_video(junk)
    picture = tmp_path / "still.png"
    head().save(picture)
    info, frames = read_video(picture)  # an image is a one-frame clip to FFmpeg: fine
    assert len(list(frames)) == 1


def test_display_rotation_is_applied(tmp_path):
    import av

    clip = tmp_path / "portrait.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        image = np.zeros((48, 64, 3), np.uint8)
        image[:8, :8] = 255  # a white top-left corner
        stream.set_display_rotation(90)  # counter-clockwise, as phones store portrait clips (-90 there)
        for _ in range(3):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        out.mux(stream.encode())
    info, frames = read_video(clip)
    first = next(frames).image
    assert first.size == (48, 64) and (info.width, info.height) == (48, 64)
    pixels = np.asarray(first)
    assert pixels[-4:, :4].mean() > 200  # turned 90 degrees counter-clockwise: top-left went to bottom-left


# -- the command line and the app --------------------------------------------------------------

def _predict_video(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dldl_core", "predict", "video", *args], check=False, capture_output=True, text=True, timeout=600)


def test_predict_video_tracks_two_people_and_fuses_their_age(tmp_path):
    clip, annotated = tmp_path / "two.mp4", tmp_path / "annotated.mp4"
    write_clip(clip, 2, frames=12)
    run = _predict_video(str(clip), "--annotated", str(annotated), "--every", "2")
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    frames = [r for r in rows if "frame" in r]
    tracks = [r for r in rows if "track" in r and "frame" not in r]
    assert len(frames) == 12 and [r["frame"] for r in frames] == list(range(12))
    assert [r["detected"] for r in frames[:4]] == [True, False, True, False]
    assert all(sorted(f["track"] for f in r["faces"]) == [1, 2] for r in frames)
    assert [t["track"] for t in tracks] == [1, 2] and all(t["frames"] == 12 for t in tracks)
    last = frames[-1]["faces"][0]
    assert {"age", "age_fused", "pose", "pose_filtered"} <= set(last)
    assert last["age_fused"]["frames"] == 12
    assert isinstance(last["age"]["novelty"], float) and isinstance(last["age"]["unusual"], bool)
    unusual = sum(next(f for f in r["faces"] if f["track"] == last["track"])["age"]["unusual"] for r in frames)
    assert next(t for t in tracks if t["track"] == last["track"])["age"]["unusual_frames"] == unusual
    assert last["age_fused"]["unusual_frames"] == unusual  # what the webcam's lines read as they go
    own = [next(f for f in r["faces"] if f["track"] == last["track"])["age"] for r in frames]
    assert min(a["mean"] for a in own) <= last["age_fused"]["mean"] <= max(a["mean"] for a in own)
    # Pooled as the frames' consensus, not as 12 independent readings (whose product would be
    # about sqrt(12) = 3.5 times narrower): the fused interval is about as wide as a frame's own.
    widths = [np.diff(a["interval"])[0] for a in own]
    assert 0.6 * min(widths) <= np.diff(last["age_fused"]["interval"])[0] <= max(widths) + 1
    assert abs(sum(tracks[0]["age"]["probs"]) - 1) < 1e-3
    info, out = read_video(annotated)
    assert (info.width, info.height) == (320, 240) and len(list(out)) == 12
    assert "\r" not in run.stderr  # not a terminal: no progress bar


def test_predict_video_without_faces_and_with_bad_files(tmp_path):
    empty, junk = tmp_path / "empty.mp4", tmp_path / "junk.mp4"
    write_clip(empty, 0, frames=4)
    run = _predict_video(str(empty))
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(rows) == 4 and all(r["faces"] == [] for r in rows)
    junk.write_text("not a video")
    run = _predict_video(str(junk), str(empty), "--quiet")
    assert run.returncode == 1
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert rows[0] == {"path": str(junk), "error": f"{junk}: not a readable video" + rows[0]["error"].split("not a readable video")[1]}
    assert len(rows) == 5 and "1 of 2 clips read" in run.stderr
    bad = _predict_video(str(empty), "--every", "0")
    assert bad.returncode == 2 and "--every must be at least 1" in bad.stderr
    same = _predict_video(str(empty), "--annotated", str(empty))
    assert same.returncode == 2 and "it would be overwritten" in same.stderr and empty.stat().st_size > 1000


def test_app_video_and_webcam_paths(tmp_path):
    import app

    clip = tmp_path / "one.mp4"
    write_clip(clip, 1, frames=10)
    annotated, chart, result, status = app.analyze_video(str(clip), 2)
    assert "10 frames" in status and "1 face track" in status and "#1:" in status
    _, frames = read_video(annotated)
    assert len(list(frames)) == 10
    saved = json.loads(Path(result).read_text())
    assert len(saved["frames"]) == 10 and saved["tracks"][0]["age"]["frames"] == 10
    assert len(chart.axes) >= 1 and chart.axes[0].get_title().startswith("face #1")
    # the webcam: a session's analyzer carried from frame to frame in its state
    session = None
    _, frames = read_video(clip)
    for frame in list(frames)[:5]:
        view, text, session = app.webcam_frame(frame.image, session)
    assert view.size == (320, 240) and text.startswith("**#1**") and "from 5 frames" in text
    _, text2, other_session = app.webcam_frame(head(), None)  # another browser: its own tracks
    assert other_session is not session and "from 1 frames" in text2
    assert app.webcam_frame(None, session)[1] == ""
    with pytest.raises(app.gr.Error, match="Could not read that file"):
        app.analyze_video(str(tmp_path / "missing.mp4"))
