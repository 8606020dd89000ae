"""Property-based fuzzing of the untrusted-image path (bounded in time).

Whatever bytes arrive, decoding either returns a sane image within the limits
or raises ImageError with a message -- never anything else, never a hang.
"""
from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from app.vision.images import ImageError, decode_image

MAX_BYTES, MAX_PIXELS = 200_000, 1_000_000
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(data: bytes, want_color: bool) -> None:
    try:
        img = decode_image(data, MAX_BYTES, MAX_PIXELS, want_color=want_color)
    except ImageError as exc:
        assert str(exc) and 400 <= exc.status < 500
        return
    assert img.gray.dtype == np.uint8 and img.gray.ndim == 2
    assert 0 < img.width * img.height <= MAX_PIXELS
    if want_color:
        assert img.bgr.shape == (img.height, img.width, 3)


def encoded(fmt: str, w: int, h: int, mode: str, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    arr = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    img = Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)
    if fmt == "JPEG" and mode == "RGBA":
        img = img.convert("RGB")
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@FUZZ
@given(st.binary(max_size=4096), st.booleans())
def test_random_bytes(data, want_color):
    check(data, want_color)


@FUZZ
@given(
    fmt=st.sampled_from(["JPEG", "PNG", "WEBP"]),
    w=st.integers(1, 64), h=st.integers(1, 64),
    mode=st.sampled_from(["L", "RGB", "RGBA"]),
    seed=st.integers(0, 2**16),
    cut=st.floats(0.0, 1.0),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)), max_size=8),
    want_color=st.booleans(),
)
def test_mutated_real_images(fmt, w, h, mode, seed, cut, flips, want_color):
    """Valid files of every format, truncated and with bytes overwritten."""
    data = bytearray(encoded(fmt, w, h, mode, seed))
    for where, value in flips:
        data[int(where * (len(data) - 1))] = value
    if cut < 0.5:
        data = data[: max(1, int(len(data) * cut * 2))]
    check(bytes(data), want_color)
