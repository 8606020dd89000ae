"""Test images made on the fly: encoded photos, odd formats, FER-2013 collages."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from app.vision.faces import DetectorSettings, FaceDetector
from app.vision.preprocess import EMOTIONS
from app.vision.tracking import iou

# Reference detector for "a face the full-size detector finds": full resolution, fine steps.
FULL_SIZE = DetectorSettings(scan_width=100_000, min_face=30, scale_factor=1.1, min_neighbors=5)


def encode(img: np.ndarray, ext: str = ".jpg", **params) -> bytes:
    flags = []
    if ext == ".jpg":
        flags = [cv2.IMWRITE_JPEG_QUALITY, params.get("quality", 85)]
    ok, buf = cv2.imencode(ext, img, flags)
    assert ok
    return buf.tobytes()


def fit_frame(img: np.ndarray, size=(640, 480)) -> np.ndarray:
    """Scale a photo so its height fills a 640x480 frame, centred, padded grey."""
    w, h = size
    scale = h / img.shape[0]
    resized = cv2.resize(img, (max(1, round(img.shape[1] * scale)), h), interpolation=cv2.INTER_AREA)
    frame = np.full((h, w, 3), 96, np.uint8)
    rw = min(w, resized.shape[1])
    x0 = (w - rw) // 2
    sx = (resized.shape[1] - rw) // 2
    frame[:, x0:x0 + rw] = resized[:, sx:sx + rw]
    return frame


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small PNG whose header claims width x height pixels (decoding it would need GBs)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    idat = zlib.compress(row * 64, 9)  # a few rows; the header is what matters
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def pil_bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def exif_rotated_jpeg(bgr: np.ndarray, orientation: int = 6) -> bytes:
    """A JPEG whose stored pixels are rotated so that EXIF ``orientation`` shows ``bgr`` upright."""
    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    stored = {6: img.transpose(Image.Transpose.ROTATE_90), 8: img.transpose(Image.Transpose.ROTATE_270),
              3: img.transpose(Image.Transpose.ROTATE_180)}[orientation]
    exif = Image.Exif()
    exif[0x0112] = orientation
    return pil_bytes(stored, "JPEG", exif=exif.tobytes(), quality=90)


def fer_collage(fer_dir: Path, n: int = 6, face_px: int = 144, seed: int = 7, frame=(640, 480)):
    """Place ``n`` labelled FER-2013 test crops, scaled up, on one frame.

    Only crops that the full-size detector finds on their own are used, so the
    collage tests whether a detector loses faces the full-size one finds.
    Returns (frame BGR, [(box, label)]).
    """
    files = sorted((fer_dir / "test").glob("*/*.png"))
    order = np.random.default_rng(seed).permutation(len(files))
    reference = FaceDetector(FULL_SIZE)
    w, h = frame
    cols = max(1, (w - 16) // (face_px + 40))
    canvas = np.full((h, w), 128, np.uint8)
    placed = []
    for idx in order:
        if len(placed) == n:
            break
        crop = cv2.imread(str(files[idx]), cv2.IMREAD_GRAYSCALE)
        if crop is None or crop.std() < 10:
            continue
        i = len(placed)
        x = 20 + (i % cols) * (face_px + 40)
        y = 30 + (i // cols) * (face_px + 50)
        if y + face_px > h or x + face_px > w:
            break
        trial = canvas.copy()
        trial[y:y + face_px, x:x + face_px] = cv2.resize(crop, (face_px, face_px), interpolation=cv2.INTER_CUBIC)
        boxes = reference.detect(trial)
        wanted = placed + [((x, y, face_px, face_px), files[idx].parent.name)]
        # Keep the crop only if the full-size detector finds every face placed so far.
        if len(boxes) == len(wanted) and all(max(iou(b, t) for b in boxes) > 0.4 for t, _ in wanted):
            canvas, placed = trial, wanted
    assert all(label in EMOTIONS for _, label in placed)
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), placed
