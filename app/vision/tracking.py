"""Per-stream face tracks: stable ids across frames and smoothed scores."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from app.vision.faces import Box


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: Box
    probs: np.ndarray
    missed: int = 0
    hits: int = 1


class FaceTracker:
    """Greedy IoU matching of detections to tracks, with exponential score smoothing.

    ``smoothing`` is the weight of the past: 0 shows raw per-frame scores,
    0.6 (the default) settles a change of expression in about three frames.
    A track survives ``max_missed`` frames without a matching face.
    """

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, smoothing: float = 0.6):
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.smoothing = smoothing
        self.tracks: list[Track] = []
        self._ids = itertools.count(1)

    def update(self, boxes: list[Box], probs: np.ndarray) -> list[Track]:
        """Match this frame's faces to tracks; returns the tracks seen in this frame, in box order."""
        pairs = sorted(
            ((iou(t.box, b), ti, bi) for ti, t in enumerate(self.tracks) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        track_for_box: dict[int, Track] = {}
        used_tracks: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.iou_threshold:
                break
            if ti in used_tracks or bi in track_for_box:
                continue
            used_tracks.add(ti)
            track = self.tracks[ti]
            a = self.smoothing
            track.probs = a * track.probs + (1 - a) * probs[bi]
            track.box, track.missed, track.hits = boxes[bi], 0, track.hits + 1
            track_for_box[bi] = track
        for ti, track in enumerate(self.tracks):
            if ti not in used_tracks:
                track.missed += 1
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        for bi, box in enumerate(boxes):
            if bi not in track_for_box:
                track = Track(next(self._ids), box, np.asarray(probs[bi], np.float32).copy())
                self.tracks.append(track)
                track_for_box[bi] = track
        return [track_for_box[bi] for bi in range(len(boxes))]

    def visible(self) -> list[Track]:
        """Tracks matched in the latest frame."""
        return [t for t in self.tracks if t.missed == 0]
