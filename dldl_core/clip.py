"""Faces through a clip: detect, track, read each face's distributions and fuse them per track.

``ClipAnalyzer.frame`` takes the frames of one clip (or one webcam stream) in
order and returns, per frame, every face with its track id, the frame's own
readouts and the track's fused ones (age pooled over the frames so far, pose
filtered); ``ClipAnalyzer.tracks`` gives each track's summary. With
``every`` > 1 the detector runs on every ``every``-th frame only and the faces
of the last detection are read again in the frames between (faces move
little in a fraction of a second; the face models cost less than detection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .faces import Face, FaceDetector
from .fusion import FRAME_CORRELATION, AgeEvidence, PoseFilter
from .pose import summarize_pose
from .predict import AgePredictor, PosePredictor
from .readouts import summarize
from .tracking import FaceTracker, Track

BRIEF = ("mean", "std", "interval")  # the per-frame age readouts (the distribution itself is in the track summary)


@dataclass
class _TrackState:
    first_frame: int
    last_frame: int
    frames: int = 0
    unusual: int = 0  # frames whose face the age model's novelty bank flags
    age: AgeEvidence | None = None
    pose: PoseFilter | None = None
    last_pose: dict[str, Any] = field(default_factory=dict)


class ClipAnalyzer:
    def __init__(
        self,
        age: AgePredictor | None = None,
        pose: PosePredictor | None = None,
        detector: FaceDetector | None = None,
        every: int = 1,
        correlation: float = FRAME_CORRELATION,
        motion: float = 2.0,
        max_missed: int = 15,
    ):
        if age is None and pose is None:
            raise ValueError("ClipAnalyzer needs at least one face model")
        if every < 1:
            raise ValueError(f"every must be at least 1, not {every}")
        self.age, self.pose = age, pose
        self.detector = detector or FaceDetector(device=(age or pose).device)
        self.every, self.correlation, self.motion = every, correlation, motion
        self.tracker = FaceTracker(max_missed=max(max_missed, every))
        self.states: dict[int, _TrackState] = {}
        self._live: list[Track] = []  # the tracks of the last detection, read again until the next
        self._index = 0

    def frame(self, image: Image.Image) -> dict[str, Any]:
        """The next frame's row: its index, whether faces were detected in it, and its faces."""
        index = self._index
        self._index += 1
        detected = index % self.every == 0
        if detected:
            self._live = self.tracker.update(self.detector.detect(image), index)
        tracks = self._live
        faces = [t.face for t in tracks]
        rows: list[dict[str, Any]] = [{"track": t.id, **f.to_json()} for t, f in zip(tracks, faces)]
        age, novelty, pose = self.distributions(image, faces)
        states = [self._state(t.id, index) for t in tracks]
        if age is not None:
            raw = summarize(age, self.age.bins, self.age.level, with_probs=False)
            for i, (row, state, p, readout) in enumerate(zip(rows, states, age, raw)):
                state.age.add(p)
                row["age"] = {k: readout[k] for k in BRIEF}
                if novelty is not None:
                    row["age"].update(novelty[i])
                    state.unusual += novelty[i]["unusual"]
                row["age_fused"] = self._fused_age(state, brief=True)
        if pose is not None:
            raw = summarize_pose(pose, self.pose.bins, self.pose.step, with_probs=False)
            for i, (row, state) in enumerate(zip(rows, states)):
                row["pose"] = _angles(raw[i])
                joint, roll = state.pose.update(pose["yaw_pitch"][i], pose["roll"][i], index - state.last_frame)
                filtered = summarize_pose({"yaw_pitch": joint[None], "roll": roll[None]}, self.pose.bins, self.pose.step, with_probs=False)[0]
                row["pose_filtered"] = state.last_pose = _angles(filtered, spread=True)
        for state in states:
            state.last_frame, state.frames = index, state.frames + 1
        return {"frame": index, "detected": detected, "faces": rows}

    def distributions(
        self, image: Image.Image, faces: list[Face]
    ) -> tuple[torch.Tensor | None, list[dict[str, Any]] | None, dict[str, torch.Tensor] | None]:
        """One frame's own distributions of ``faces``: age (N, K), each face's novelty readout
        (``Novelty.readouts``) where the age model has a novelty bank, and pose (``yaw_pitch`` (N, Y, P), ``roll`` (N, R)); None for
        a model the analyzer does not have, or when there is no face."""
        if not faces:
            return None, None, None
        age = novelty = None
        if self.age is not None:
            age, feats = self.age.read([self.age.crop(image, f) for f in faces])
            novelty = self.age.novelty.readouts(feats) if self.age.novelty is not None else None
        pose = self.pose.probs([self.pose.crop(image, f) for f in faces]) if self.pose is not None else None
        return age, novelty, pose

    def _state(self, track: int, index: int) -> _TrackState:
        if track not in self.states:
            self.states[track] = _TrackState(
                index,
                index,
                age=AgeEvidence(len(self.age.bins), self.correlation) if self.age is not None else None,
                pose=PoseFilter(self.pose.step, self.motion) if self.pose is not None else None,
            )
        return self.states[track]

    def _fused_age(self, state: _TrackState, brief: bool) -> dict[str, Any]:
        """A track's fused age readout so far (``BRIEF`` keys only, or all with the probabilities),
        its frame count and, with a novelty bank, its ``unusual_frames``."""
        fused = summarize(state.age.fused()[None], self.age.bins, self.age.level, with_probs=not brief)[0]
        out = {**({k: fused[k] for k in BRIEF} if brief else fused), "frames": state.age.frames}
        if self.age.novelty is not None:
            out["unusual_frames"] = state.unusual
        return out

    def tracks(self) -> list[dict[str, Any]]:
        """One summary per track: frames seen, first and last frame, the fused age distribution
        (with its probabilities and, with a novelty bank, ``unusual_frames``: how many of the
        frames' faces looked unlike the training faces) and the last filtered pose."""
        out = []
        for track, s in sorted(self.states.items()):
            row: dict[str, Any] = {"track": track, "frames": s.frames, "first_frame": s.first_frame, "last_frame": s.last_frame}
            if s.age is not None and s.age.frames:
                row["age"] = self._fused_age(s, brief=False)
            if s.last_pose:
                row["pose"] = s.last_pose
            out.append(row)
        return out


def _angles(readout: dict[str, Any], spread: bool = False) -> dict[str, Any]:
    keys = ("yaw", "pitch", "roll") + (("cov", "roll_std") if spread else ())
    return {k: readout[k] for k in keys}


def clip_labels(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A frame row's faces as ``plots.annotate_faces`` labels them: the track's fused age and
    filtered pose (what a viewer should see), numbered by track."""
    out = []
    for face in row["faces"]:
        label = {"box": face["box"], "landmarks": face["landmarks"], "track": face["track"]}
        if "age_fused" in face:
            label["age"] = face["age_fused"]
        if "pose_filtered" in face:
            label["pose"] = face["pose_filtered"]
        out.append(label)
    return out
