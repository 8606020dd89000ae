"""Shared by the page and the API: read an uploaded image, analyse it."""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from flask import current_app, request

from app.concurrency import run_cpu
from app.upload import bp
from app.vision.images import SUPPORTED_MIME, DecodedImage, ImageError, UnsupportedImage, decode_image
from app.vision.pipeline import analyze_image

ANALYZE_SCOPE = "analyze"  # the API and the upload page share one per-client budget
# A large photo takes hundreds of MB while it is decoded and analysed: at most UPLOAD_CONCURRENCY at once.
SLOTS = "upload_slots"  # app.extensions key of the semaphore
SLOT_WAIT_SECONDS = 2.0  # a request waits this long for a free slot, then is answered 503
RETRY_AFTER_SECONDS = 2
# Names some browsers and tools give JPEG; the bytes are identified by decoding them anyway.
MIME_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}
ONE_PER_REQUEST = "send one image per request"  # the page words it for a person by this phrase


class UploadBusy(ImageError):
    """Every analysis slot stayed taken: the server is busy, the photo is not at fault."""

    status = 503
    headers = (("Retry-After", str(RETRY_AFTER_SECONDS)),)

    def __init__(self):
        super().__init__(f"the server is busy analysing other photos: try again in {RETRY_AFTER_SECONDS} seconds")


@bp.record_once
def _make_slots(state) -> None:
    state.app.extensions[SLOTS] = threading.BoundedSemaphore(state.app.config["UPLOAD_CONCURRENCY"])


@contextmanager
def analysis_slot() -> Iterator[None]:
    """Hold one of the ``UPLOAD_CONCURRENCY`` slots for decoding and analysing an upload.

    Waits up to ``SLOT_WAIT_SECONDS`` for one, then raises UploadBusy (503, ``Retry-After``).
    Whatever holds the decoded image must be let go before the block ends.
    """
    slots = current_app.extensions[SLOTS]
    if not slots.acquire(timeout=SLOT_WAIT_SECONDS):
        current_app.logger.warning("upload refused (503): all %d analysis slots stayed busy for %s s",
                                   current_app.config["UPLOAD_CONCURRENCY"], SLOT_WAIT_SECONDS)
        raise UploadBusy()
    try:
        yield
    finally:
        slots.release()


def analyze_limit() -> str:
    """The per-client rate limit of image analysis (``ANALYZE_RATE_LIMIT``)."""
    return current_app.config["ANALYZE_RATE_LIMIT"]


def image_from_request(field: str = "image") -> tuple[bytes, str | None]:
    """The uploaded bytes: multipart field ``field``, or a raw ``image/*`` body."""
    content_type = (request.mimetype or "").lower()
    content_type = MIME_ALIASES.get(content_type, content_type)
    if content_type == "multipart/form-data":
        return _image_from_form(field)
    if content_type.startswith("image/"):
        if content_type not in SUPPORTED_MIME:
            raise UnsupportedImage(f"unsupported image type {content_type}; send JPEG, PNG or WebP")
        return request.get_data(cache=False), content_type
    if not content_type:
        raise UnsupportedImage("missing Content-Type: send multipart/form-data with an 'image' field or a raw image/jpeg, image/png or image/webp body")
    raise UnsupportedImage(f"unsupported Content-Type {content_type}: send multipart/form-data with an 'image' field or a raw image/jpeg, image/png or image/webp body")


def _image_from_form(field: str) -> tuple[bytes, str | None]:
    """The one file part named ``field``; several, or one sent as text (no filename), are refused saying so."""
    uploads = request.files.getlist(field)
    texts = request.form.getlist(field)  # Werkzeug files a part without a filename as a text field
    if len(uploads) + len(texts) > 1:
        raise ImageError(f"{len(uploads) + len(texts)} parts in the form field '{field}': {ONE_PER_REQUEST}")
    if texts:
        raise ImageError(f"no file in the form field '{field}': it was sent as text (a part without a filename), "
                         f"not as a file; send the image as a file, e.g. curl -F {field}=@photo.jpg")
    if not uploads:
        raise ImageError(f"no file in the form field '{field}'")
    upload = uploads[0]
    data = upload.read()  # emptiness is in the bytes: a part's own Content-Length is rarely sent
    if not data and not upload.filename:  # a browser's form with no photo chosen
        raise ImageError(f"no file in the form field '{field}'")
    declared = (upload.mimetype or "").lower()
    declared = MIME_ALIASES.get(declared, declared)
    if declared.startswith("image/") and declared not in SUPPORTED_MIME:
        raise UnsupportedImage(f"unsupported image type {declared}; send JPEG, PNG or WebP")
    return data, declared or None


def analyze_upload(data: bytes) -> tuple[dict, DecodedImage]:
    """Decode and analyse uploaded bytes; returns (result, decoded image). Call it in ``analysis_slot()``.

    The work runs through ``run_cpu``: under eventlet it must not block the
    event loop that every other client (and every live stream) shares.
    """
    cfg = current_app.config
    return run_cpu(cfg["ASYNC_MODE"], _analyze, data, current_app.extensions["emotion_model"],
                   cfg["MAX_UPLOAD_BYTES"], cfg["MAX_IMAGE_PIXELS"])


def _analyze(data: bytes, model, max_bytes: int, max_pixels: int) -> tuple[dict, DecodedImage]:
    t0 = time.perf_counter()
    image = decode_image(data, max_bytes, max_pixels, want_color=True)
    decode_ms = round((time.perf_counter() - t0) * 1000, 2)
    result = analyze_image(image, model, max_faces=32)
    result["timings_ms"] = {"decode": decode_ms, **result["timings_ms"],
                            "total": round((time.perf_counter() - t0) * 1000, 2)}
    return result, image
