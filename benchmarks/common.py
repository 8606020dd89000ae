"""Helpers shared by the benchmarks: machine description, percentiles, test frames."""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("MOODLENS_SHARED", ROOT.parent / "shared"))


def machine() -> dict:
    """What the numbers were measured on (the vector extensions say which kind of VM: see app.hardware)."""
    from app.hardware import describe

    return {**describe(), "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def percentiles(values, ps=(50, 95, 99)) -> dict:
    """``{"p50": .., "p95": .., ...}`` rounded to 0.01, or empty for no values."""
    if len(values) == 0:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {f"p{p}": round(float(np.percentile(arr, p)), 2) for p in ps} | {"mean": round(float(arr.mean()), 2)}


def _jittered(base: np.ndarray, truths: list, n: int, seed: int, amp=(8, 5)):
    """JPEG frames of ``base`` moved a few pixels per frame, with sensor noise; boxes move along."""
    rng = np.random.default_rng(seed)
    frames, boxes = [], []
    for i in range(n):
        dx, dy = int(amp[0] * np.sin(i / 9)), int(amp[1] * np.cos(i / 13))
        moved = np.roll(np.roll(base, dx, axis=1), dy, axis=0)
        noisy = np.clip(moved.astype(np.int16) + rng.normal(0, 3, moved.shape), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 70])
        frames.append(buf.tobytes())
        boxes.append([(x + dx, y + dy, w, h) for x, y, w, h in truths])
    return frames, boxes


def webcam_frames(image_path: Path, n: int = 120, seed: int = 0):
    """``n`` 640x480 JPEG frames of a one-face photo with head motion, and the true face box per frame."""
    from app.vision.faces import FaceDetector
    from tests.imagegen import FULL_SIZE, fit_frame

    base = fit_frame(cv2.imread(str(image_path)))
    (truth,) = FaceDetector(FULL_SIZE).detect(cv2.cvtColor(base, cv2.COLOR_BGR2GRAY))[:1]
    return _jittered(base, [truth], n, seed)


def collage_frames(n_faces: int = 4, n: int = 120, seed: int = 0):
    """``n`` 640x480 JPEG frames holding ``n_faces`` FER-2013 faces, and their true boxes per frame."""
    from tests.imagegen import fer_collage

    base, placed = fer_collage(SHARED / "fer2013", n=n_faces, face_px=130)
    return _jittered(base, [box for box, _ in placed], n, seed, amp=(4, 0))
