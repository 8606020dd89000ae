"""Upload page: pick or drop a photo, see every face boxed and scored."""
from __future__ import annotations

import base64

import cv2
from flask import current_app, render_template, request
from flask_wtf import FlaskForm
from werkzeug.exceptions import HTTPException

from app.concurrency import run_cpu
from app.errors import body_over_limit, retry_after, retry_after_headers, wait_words
from app.extensions import limiter
from app.security import form_expired
from app.upload import bp
from app.upload.analysis import (
    ANALYZE_SCOPE,
    ONE_PER_REQUEST,
    RETRY_AFTER_SECONDS,
    UploadBusy,
    analysis_slot,
    analyze_limit,
    analyze_upload,
    image_from_request,
)
from app.vision.images import ImageError, ImageTooLarge, UnsupportedImage, sniff_format
from app.vision.pipeline import STILL_SETTINGS
from app.vision.preprocess import EMOTIONS

BOX_COLOUR = (80, 200, 120)  # BGR
PREVIEW_SIDE = 2048  # the annotated photo's longest side at most (JPEG cannot exceed 65,500 px; a page needs far less)
CSRF_FAILED = form_expired("choose the photo again")
# Only a request made by hand (the page sends the photo and one token) has more fields than Flask's limit.
FORM_TOO_MUCH = ("The form sent too much besides the photo (too many fields, or a field that is too large): "
                 "reload the page and choose the photo again.")
MB = 1024 * 1024
# The page's wording of the decoder's refusals (the API keeps the decoder's precise ones), by a word in them.
PLAIN_ERRORS = (
    (ONE_PER_REQUEST, "Choose one photo at a time: the page analyses a single photo."),
    ("sent as text", "The photo arrived as text, not as a file: choose the photo again."),  # only by hand
    ("no file", "Choose a photo first."),
    ("empty", "This file is empty: choose the photo again."),
    ("not an image", "This file is not a photo: choose a JPEG, PNG or WebP photo."),
    ("scans", ("This JPEG is saved in an unusual way that is not accepted (too many progressive scans): "
               "save it again as an ordinary JPEG.")),
    ("corrupt", "This file is damaged or incomplete: try saving the photo again."),
    ("truncated", "This file is damaged or incomplete: try saving the photo again."),
    ("no pixels", "This file is damaged or incomplete: try saving the photo again."),
    # The decoder's own structure limits; after "corrupt", so Pillow's words ("... text chunks") read as damage.
    ("markers", ("This JPEG is saved in an unusual way that is not accepted (too much data before the picture): "
                 "save it again as an ordinary JPEG.")),
    ("chunks", ("This PNG is saved in an unusual way that is not accepted (split into too many pieces): "
                "save it again as an ordinary PNG.")),
)


class UploadForm(FlaskForm):
    """The upload form: the file is read from the request itself; this carries the CSRF token."""


def annotate(bgr, faces) -> str:
    """The photo with numbered boxes, at most ``PREVIEW_SIDE`` pixels long, as a JPEG data URL (kept in memory only)."""
    k = min(1.0, PREVIEW_SIDE / max(bgr.shape[:2]))
    if k < 1.0:
        size = (max(1, round(bgr.shape[1] * k)), max(1, round(bgr.shape[0] * k)))
        img = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
    else:
        img = bgr.copy()
    thickness = max(2, round(max(img.shape[:2]) / 400))
    for i, face in enumerate(faces, start=1):
        x, y, w, h = (round(v * k) for v in face["box"])
        cv2.rectangle(img, (x, y), (x + w, y + h), BOX_COLOUR, thickness)
        label = f"{i} {face['label']}"
        scale = max(0.5, w / 250)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, y - th - 2 * thickness)
        cv2.rectangle(img, (x, top), (x + tw + 2 * thickness, top + th + 2 * thickness), BOX_COLOUR, -1)
        cv2.putText(img, label, (x + thickness, top + th + thickness), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20),
                    thickness, cv2.LINE_AA)
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
    if not ok:
        raise ImageError("the annotated photo could not be drawn")
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode()


def analyze_and_annotate(data: bytes) -> tuple[dict, str]:
    """(analysis, annotated photo) of uploaded bytes, in one analysis slot; the decoded photo ends with it."""
    with analysis_slot():
        result, image = analyze_upload(data)
        annotated = run_cpu(current_app.config["ASYNC_MODE"], annotate, image.bgr, result["faces"])
        del image  # before the slot is free for the next photo
    return result, annotated


@bp.app_template_filter("mb")
def megabytes(size: int, over: int | None = None) -> str:
    """``size`` bytes in MB to one decimal, no trailing ".0"; a size ``over`` a limit never reads as that limit."""
    tenths = round(size * 10 / MB)
    if over is not None:
        tenths = max(tenths, round(over * 10 / MB) + 1)
    return f"{tenths / 10:.1f}".removesuffix(".0")


def _format_name(exc: UnsupportedImage, data: bytes | None) -> str | None:
    """The refused file's format ("GIF"): as the decoder named it, else from the first bytes, else what the
    form said the file is. Never parses the upload: this runs on the request's thread (an event loop's, under
    eventlet), not through ``run_cpu``."""
    kind = exc.format or (sniff_format(data[:32]) if data else None)
    if kind:
        return kind
    upload = request.files.get("image")
    mimetype = (upload.mimetype if upload else "") or ""
    if mimetype.startswith("image/"):
        return mimetype.removeprefix("image/").split("+")[0].removeprefix("x-").upper()
    return None


def plain_message(exc: ImageError, data: bytes | None) -> str:
    """What the page says of a refused photo: plain words, the sizes in MB (``data``: the bytes, if read)."""
    if isinstance(exc, UploadBusy):
        return f"The server is busy analysing other photos: try again in {RETRY_AFTER_SECONDS} seconds."
    if isinstance(exc, ImageTooLarge):
        limit = current_app.config["MAX_UPLOAD_BYTES"]
        if data is not None and len(data) > limit:
            return f"This photo is {megabytes(len(data), over=limit)} MB; the limit is {megabytes(limit)} MB."
        pixels = current_app.config["MAX_IMAGE_PIXELS"]
        return (f"This photo has too many pixels (the limit is {pixels / 1e6:g} megapixels): "
                "save a smaller copy and try again.")
    if isinstance(exc, UnsupportedImage):
        kind = _format_name(exc, data)
        what = f"{kind} files are" if kind else "This kind of file is"
        return f"{what} not supported: use a JPEG, PNG or WebP photo."
    text = str(exc).lower()
    return next((plain for word, plain in PLAIN_ERRORS if word in text),
                "This photo could not be analysed: try another one.")


def refused(error: str, status: int, headers=(), form: UploadForm | None = None):
    """The upload page again, with its form and ``error``; names the file that was sent when the form can be
    read and holds one (of several, none is named: the message is about them all)."""
    try:
        uploads = request.files.getlist("image") if status != 413 else []
    except HTTPException:  # a body over MAX_CONTENT_LENGTH (refused first for the rate limit, say) is never read
        uploads = []
    filename = uploads[0].filename if len(uploads) == 1 else None
    form = form or UploadForm(formdata=None)
    return render_template("upload.html", emotions=EMOTIONS, form=form, error=error, filename=filename), status, headers


def http_error_page(exc: HTTPException):
    """The upload page for an HTTP error on ``POST /upload``: 413 (body over the limit, refused before
    the view reads it, or a form with too many fields) or 429 (rate limit), with the form and a plain
    message; else None."""
    if exc.code == 413 and not body_over_limit():  # small enough: too many form fields, or one too large
        return refused(FORM_TOO_MUCH, 413)
    if exc.code == 413:
        limit = current_app.config["MAX_UPLOAD_BYTES"]
        size = request.content_length  # the whole form: the photo and a few hundred bytes more
        error = (f"This photo is {megabytes(size, over=limit)} MB; the limit is {megabytes(limit)} MB." if size
                 else f"This photo is larger than the limit of {megabytes(limit)} MB.")
        return refused(error, 413)
    if exc.code == 429:
        seconds = retry_after()  # None: the limits' storage (Redis) is away, and the page says "a moment"
        wait = wait_words(seconds)
        headers = retry_after_headers(seconds)
        return refused(f"Too many photos in a short time: {wait} and try again.", 429, headers)
    return None


@bp.get("/upload")
def upload_form():
    return render_template("upload.html", emotions=EMOTIONS, form=UploadForm())


@bp.post("/upload")
@limiter.shared_limit(analyze_limit, scope=ANALYZE_SCOPE)
def upload_submit():
    """Analyse the posted photo (CSRF-checked, rate-limited with the API) and show it annotated."""
    form = UploadForm()
    if not form.validate_on_submit():
        return refused(CSRF_FAILED, 400, form=form)
    data = None
    try:
        data, _ = image_from_request()
        result, annotated = analyze_and_annotate(data)
    except ImageError as exc:
        return refused(plain_message(exc, data), exc.status, exc.headers, form=form)
    return render_template("upload.html", emotions=EMOTIONS, form=form, result=result, annotated=annotated,
                           smallest_face=STILL_SETTINGS.smallest_face(result["width"], result["height"]))
