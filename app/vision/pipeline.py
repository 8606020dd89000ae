"""analyze(image) -> faces with box, label and scores; and the per-stream variant."""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from app.vision.emotions import EmotionModel
from app.vision.faces import Box, DetectorSettings, FaceDetector, suppress_overlaps
from app.vision.images import DecodedImage, decode_image
from app.vision.preprocess import prepare_face
from app.vision.tracking import FaceTracker

# Stills get a more thorough scan than live frames: the photo itself up to 1 megapixel (faces from about 40
# pixels wide), a larger one scaled down to 1 megapixel (``smallest_face``: about 140 pixels in a 12-megapixel
# phone photo, 4032x3024, against 250 for the 640-pixel-wide copy the scan ran on before). Scanning more
# pixels finds smaller faces but also patterns on clothing that look like faces in enlarged photos (2 and 4
# megapixel copies found 1-3 such in the shared photos enlarged 2-3 times; 1 megapixel, none), and costs more.
STILL_SETTINGS = DetectorSettings(scan_width=640, min_face=32, scale_factor=1.1, min_neighbors=8,
                                  max_scan_pixels=1_000_000)


class DetectorPool:
    """Loaded face detectors, each lent to one thread at a time.

    An OpenCV cascade must not run in two threads at once, and loading one
    costs about 25 ms, so detectors are kept and lent rather than made per
    thread: a live stream's analysis runs on a fresh thread whenever the stream
    was idle. The pool holds as many detectors per settings as were ever in
    use at once. No lock: ``deque.append`` and ``deque.pop`` are atomic, in
    native threads and green ones alike (under eventlet, analyses run in
    native pool threads while ``threading.Lock`` is green).
    """

    def __init__(self):
        self._idle: dict[DetectorSettings, deque[FaceDetector]] = {}

    @contextmanager
    def borrow(self, settings: DetectorSettings) -> Iterator[FaceDetector]:
        idle = self._idle.get(settings)
        if idle is None:
            idle = self._idle.setdefault(settings, deque())
        try:
            detector = idle.pop()
        except IndexError:
            detector = FaceDetector(settings)
        try:
            yield detector
        finally:
            idle.append(detector)


detectors = DetectorPool()


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000.0, 2)


def classify(model: EmotionModel, gray: np.ndarray, boxes: list[Box]) -> np.ndarray:
    """Probabilities (N, 7) for the faces at ``boxes`` in one batch."""
    if not boxes:
        return np.zeros((0, len(model.labels)), np.float32)
    return model.predict(np.stack([prepare_face(gray, b) for b in boxes]))


def face_record(model: EmotionModel, box: Box, probs: np.ndarray, track_id: int | None = None) -> dict:
    record = {"box": [int(v) for v in box], "label": model.labels[int(np.argmax(probs))], "scores": model.scores(probs)}
    if track_id is not None:
        record = {"id": track_id, **record}
    return record


def analyze_image(image: DecodedImage, model: EmotionModel, max_faces: int = 32,
                  settings: DetectorSettings = STILL_SETTINGS) -> dict:
    """Every face of a still image: ``{"faces": [...], "width", "height", "timings_ms"}``."""
    t0 = time.perf_counter()
    with detectors.borrow(settings) as detector:
        boxes = detector.detect(image.gray)[:max_faces]
    t_detect = _ms(t0)
    t1 = time.perf_counter()
    probs = classify(model, image.gray, boxes)
    faces = [face_record(model, b, p) for b, p in zip(boxes, probs)]
    faces.sort(key=lambda f: (f["box"][0], f["box"][1]))
    return {"faces": faces, "width": image.width, "height": image.height,
            "timings_ms": {"detect": t_detect, "classify": _ms(t1)}}


class StreamAnalyzer:
    """Analyses one client's live frames: tracking, local re-detection, smoothing.

    A full scan runs on the first frame, every ``full_scan_every`` frames, and
    whenever a tracked face is lost; in between, faces are re-found near where
    they were, which costs a fraction of a full scan.
    """

    def __init__(self, model: EmotionModel, max_bytes: int, max_pixels: int, max_faces: int = 16,
                 full_scan_every: int = 8, settings: DetectorSettings | None = None, smoothing: float = 0.6):
        self.model = model
        self.max_bytes, self.max_pixels, self.max_faces = max_bytes, max_pixels, max_faces
        self.full_scan_every = max(1, full_scan_every)
        self.settings = settings or DetectorSettings()
        self.tracker = FaceTracker(smoothing=smoothing)
        self.frames = 0
        self._since_full = 0

    def _find_faces(self, gray: np.ndarray) -> list[Box]:
        with detectors.borrow(self.settings) as detector:
            visible = [t.box for t in self.tracker.visible()]
            if visible and self._since_full < self.full_scan_every:
                found = detector.detect_near(gray, visible)
                # Every tracked face found again, and no two on the same face: skip the full scan.
                if all(b is not None for b in found) and len(suppress_overlaps(found)) == len(found):  # type: ignore[arg-type]
                    self._since_full += 1
                    return found  # type: ignore[return-value]
            self._since_full = 1
            return detector.detect(gray)[: self.max_faces]

    def process(self, data: bytes) -> dict:
        """Decode, detect, classify and track one JPEG frame.

        Returns ``{"faces": [{"id", "box", "label", "scores"}], "width", "height",
        "timings_ms": {"decode", "detect", "classify", "total"}}``; raises
        ``ImageError`` for a bad frame (the stream's state is left unchanged).
        """
        t0 = time.perf_counter()
        image = decode_image(data, self.max_bytes, self.max_pixels, want_color=False)
        t_decode = _ms(t0)
        t1 = time.perf_counter()
        boxes = self._find_faces(image.gray)
        t_detect = _ms(t1)
        t2 = time.perf_counter()
        probs = classify(self.model, image.gray, boxes)
        tracks = self.tracker.update(boxes, probs)
        faces = [face_record(self.model, t.box, t.probs, t.id) for t in tracks]
        t_classify = _ms(t2)
        self.frames += 1
        return {"faces": faces, "width": image.width, "height": image.height,
                "timings_ms": {"decode": t_decode, "detect": t_detect, "classify": t_classify, "total": _ms(t0)}}
