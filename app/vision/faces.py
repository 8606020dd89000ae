"""Face detection with OpenCV's Haar cascade, tuned for speed.

A full scan runs on a reduced, equalised grayscale copy of the frame and maps
boxes back to full-frame pixels. Between full scans, a stream can ask for a
*local* scan around faces it already tracks: each region is scaled so the face
is just above the cascade's window, with the search limited to sizes near the
tracked one -- a fraction of a millisecond per face.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

Box = tuple[int, int, int, int]  # x, y, w, h in full-frame pixels
CASCADE_WINDOW = 24  # the frontal-face cascade's window: no face smaller than this is found in the scanned copy
FOUND_FACE_PX = 40   # a face this wide in the scanned copy is found reliably (measured; at 24-35 px, some are)


@dataclass(frozen=True)
class DetectorSettings:
    """Knobs of the detector; the defaults are measured on 640x480 webcam frames."""

    scan_width: int = 320          # full scans run on a copy at most this wide
    min_face: int = 40             # smallest face reported, in full-frame pixels
    # Stills: scan the image itself up to this many pixels, a larger one scaled down to this many (never below
    # scan_width); the scan's cost grows with them. 0: the copy at most scan_width wide, as for live frames.
    max_scan_pixels: int = 0
    scale_factor: float = 1.1
    min_neighbors: int = 5
    local_margin: float = 0.5      # region around a tracked face, as a fraction of its size
    local_face_px: int = 36        # a tracked face is scaled to about this many pixels

    def scan_scale(self, width: int, height: int) -> float:
        """The scale of the copy a full scan of a ``width`` x ``height`` image runs on (at most 1)."""
        scale = self.scan_width / float(width)
        if self.max_scan_pixels:
            scale = max(scale, math.sqrt(self.max_scan_pixels / (width * height)))
        return min(1.0, scale)

    def smallest_face(self, width: int, height: int) -> int:
        """The width, in image pixels, from which a full scan of a ``width`` x ``height`` image finds faces reliably."""
        return max(self.min_face, math.ceil(FOUND_FACE_PX / self.scan_scale(width, height)))


def default_cascade_path() -> str:
    return str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")


class FaceDetector:
    """Haar-cascade face detector. Not thread-safe: use one per thread or stream."""

    def __init__(self, settings: DetectorSettings | None = None, cascade_path: str | None = None):
        self.settings = settings or DetectorSettings()
        path = cascade_path or default_cascade_path()
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load Haar cascade {path}")

    def _run(self, gray: np.ndarray, min_size: int, max_size: int = 0) -> np.ndarray:
        found = self.cascade.detectMultiScale(
            gray,
            scaleFactor=self.settings.scale_factor,
            minNeighbors=self.settings.min_neighbors,
            minSize=(min_size, min_size),
            maxSize=(max_size, max_size) if max_size else (0, 0),
        )
        return np.asarray(found, dtype=np.float64).reshape(-1, 4)

    def detect(self, gray: np.ndarray) -> list[Box]:
        """All faces in a full frame, largest first."""
        s = self.settings
        h, w = gray.shape[:2]
        scale = s.scan_scale(w, h)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        min_size = max(20, round(s.min_face * scale))
        if min(size) < max(min_size, CASCADE_WINDOW):  # a strip thinner than the smallest face
            return []
        small = gray if scale == 1.0 else cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        small = cv2.equalizeHist(small)
        boxes = self._run(small, min_size) / scale
        return _sorted_boxes(boxes, w, h)

    def detect_near(self, gray: np.ndarray, tracked: list[Box]) -> list[Box | None]:
        """Look for each tracked face near where it was; None where it is gone."""
        s = self.settings
        h, w = gray.shape[:2]
        out: list[Box | None] = []
        for (x, y, bw, bh) in tracked:
            size = max(bw, bh)
            m = s.local_margin * size
            x0, y0 = max(0, int(x - m)), max(0, int(y - m))
            x1, y1 = min(w, int(x + bw + m)), min(h, int(y + bh + m))
            if x1 - x0 < 24 or y1 - y0 < 24:
                out.append(None)
                continue
            scale = min(1.0, s.local_face_px / float(size))
            roi = gray[y0:y1, x0:x1]
            if scale < 1.0:
                roi = cv2.resize(roi, (max(24, round((x1 - x0) * scale)), max(24, round((y1 - y0) * scale))),
                                 interpolation=cv2.INTER_AREA)
            roi = cv2.equalizeHist(roi)
            expected = size * scale
            found = self._run(roi, max(20, int(expected * 0.7)), int(expected * 1.45) + 1)
            if len(found) == 0:
                out.append(None)
                continue
            # The candidate whose centre is nearest the old one.
            cx, cy = (x + bw / 2 - x0) * scale, (y + bh / 2 - y0) * scale
            best = min(found, key=lambda b: (b[0] + b[2] / 2 - cx) ** 2 + (b[1] + b[3] / 2 - cy) ** 2)
            bx, by, bw2, bh2 = best / scale
            out.append(_clip((bx + x0, by + y0, bw2, bh2), w, h))
        return out


def _clip(b, w: int, h: int) -> Box:
    x, y, bw, bh = (int(round(v)) for v in b)
    x, y = max(0, x), max(0, y)
    return (x, y, max(1, min(bw, w - x)), max(1, min(bh, h - y)))


def _overlap(a: Box, b: Box) -> bool:
    """True when ``b``'s centre lies inside ``a`` or ``a``'s inside ``b``: one face, two boxes."""
    def centre_in(outer: Box, inner: Box) -> bool:
        cx, cy = inner[0] + inner[2] / 2, inner[1] + inner[3] / 2
        return outer[0] <= cx <= outer[0] + outer[2] and outer[1] <= cy <= outer[1] + outer[3]

    return centre_in(a, b) or centre_in(b, a)


def suppress_overlaps(boxes: list[Box]) -> list[Box]:
    """Keep the first of any boxes that overlap (Haar often boxes one face twice, e.g. its lower half)."""
    kept: list[Box] = []
    for box in boxes:
        if not any(_overlap(k, box) for k in kept):
            kept.append(box)
    return kept


def _sorted_boxes(boxes: np.ndarray, w: int, h: int) -> list[Box]:
    out = sorted((_clip(b, w, h) for b in boxes), key=lambda b: -b[2] * b[3])
    return suppress_overlaps(out)
