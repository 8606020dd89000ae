"""POST /api/v1/analyze: one image in, every face with box, label and scores out."""
from __future__ import annotations

from flask import jsonify

from app.extensions import limiter
from app.upload import bp
from app.upload.analysis import ANALYZE_SCOPE, analysis_slot, analyze_limit, analyze_upload, image_from_request
from app.vision.images import ImageError


@bp.post("/api/v1/analyze")
@limiter.shared_limit(analyze_limit, scope=ANALYZE_SCOPE)
def analyze():
    """Multipart field ``image`` or a raw image body -> 200 ``{"faces", "width", "height", "timings_ms"}``.

    Errors: 400 not an image or corrupt, 413 too many bytes or pixels,
    415 unsupported type, 429 more than ``ANALYZE_RATE_LIMIT`` from one client, 503 (with
    ``Retry-After``) ``UPLOAD_CONCURRENCY`` analyses already running and none ending in time;
    all as ``{"error": "..."}``. No CSRF token: it reads no cookie and changes nothing.
    """
    try:
        data, _ = image_from_request()
        with analysis_slot():
            result = analyze_upload(data)[0]  # the decoded image is let go at once, with the slot
    except ImageError as exc:
        return jsonify(error=str(exc)), exc.status, exc.headers
    return jsonify(result)
