"""Upload page: pick or drop a photo, see every face boxed and scored."""
from __future__ import annotations

import base64

import cv2
from flask import current_app, render_template
from flask_wtf import FlaskForm

from app.concurrency import run_cpu
from app.extensions import limiter
from app.upload import bp
from app.upload.analysis import ANALYZE_SCOPE, analysis_slot, analyze_limit, analyze_upload, image_from_request
from app.vision.images import ImageError
from app.vision.pipeline import STILL_SETTINGS
from app.vision.preprocess import EMOTIONS

BOX_COLOUR = (80, 200, 120)  # BGR
PREVIEW_SIDE = 2048  # the annotated photo's longest side at most (JPEG cannot exceed 65,500 px; a page needs far less)
CSRF_FAILED = "The form expired or came from another site: reload the page and choose the photo again."


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


@bp.get("/upload")
def upload_form():
    return render_template("upload.html", emotions=EMOTIONS, form=UploadForm())


@bp.post("/upload")
@limiter.shared_limit(analyze_limit, scope=ANALYZE_SCOPE)
def upload_submit():
    """Analyse the posted photo (CSRF-checked, rate-limited with the API) and show it annotated."""
    form = UploadForm()
    if not form.validate_on_submit():
        return render_template("upload.html", emotions=EMOTIONS, form=form, error=CSRF_FAILED), 400
    try:
        data, _ = image_from_request()
        result, annotated = analyze_and_annotate(data)
    except ImageError as exc:
        return render_template("upload.html", emotions=EMOTIONS, form=form, error=str(exc)), exc.status, exc.headers
    return render_template("upload.html", emotions=EMOTIONS, form=form, result=result, annotated=annotated,
                           smallest_face=STILL_SETTINGS.smallest_face(result["width"], result["height"]))
