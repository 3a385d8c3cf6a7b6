"""Faces across frames: each detection is given the id of the track it continues, or a new one.

Detections are matched to the tracks seen in the last ``max_missed`` frames by
one optimal assignment (``scipy.optimize.linear_sum_assignment``) on a cost
that combines box overlap and landmark distance; a pair is matched only when
its boxes overlap by at least ``min_iou``. A track not matched for more than
``max_missed`` frames ends, so a person who leaves and comes back later gets
a new id, while a short miss (a blink of the detector, a hand in front of the
face) keeps the old one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from .crops import box_iou
from .faces import Face


def _landmark_distance(a: Face, b: Face) -> float:
    """Mean landmark distance in units of the box size (0 = same place)."""
    size = max(1.0, ((a.box[2] - a.box[0]) + (a.box[3] - a.box[1])) / 2)
    return float(np.linalg.norm(np.subtract(a.landmarks, b.landmarks), axis=1).mean() / size)


@dataclass
class Track:
    id: int
    face: Face  # the last detection
    last_frame: int
    frames: int = 1  # frames with a detection


class FaceTracker:
    def __init__(self, min_iou: float = 0.3, max_missed: int = 15):
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, faces: list[Face], frame: int) -> list[Track]:
        """The track of each face (in the order given), after ending tracks unseen for too long."""
        self.tracks = [t for t in self.tracks if frame - t.last_frame <= self.max_missed]
        matched: dict[int, Track] = {}
        if faces and self.tracks:
            iou = np.array([[box_iou(f.box, t.face.box) for t in self.tracks] for f in faces])
            dist = np.array([[_landmark_distance(f, t.face) for t in self.tracks] for f in faces])
            cost = (1.0 - iou) + 0.5 * np.minimum(dist, 1.0)
            for i, j in zip(*linear_sum_assignment(cost)):
                if iou[i, j] >= self.min_iou:
                    matched[int(i)] = self.tracks[j]
        out = []
        for i, face in enumerate(faces):
            track = matched.get(i)
            if track is None:
                track = Track(self._next_id, face, frame)
                self._next_id += 1
                self.tracks.append(track)
            else:
                track.face, track.last_frame, track.frames = face, frame, track.frames + 1
            out.append(track)
        return out
