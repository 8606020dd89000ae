"""Error responses: JSON under /api/, a friendly page elsewhere."""
from __future__ import annotations

import math
import re
import time

from flask import jsonify, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wsgi import LimitedStream

from app.extensions import limiter

UPLOAD_SUBMIT = "upload.upload_submit"
ANALYZE = "upload.analyze"
BARE_LIMIT = re.compile(r"\d+ per \d+ \w+")  # Flask-Limiter's description of a limit hit ("30 per 1 minute")


def wants_json() -> bool:
    return request.path.startswith("/api/")


def init_app(app) -> None:
    """Register one handler for every HTTP error."""

    @app.errorhandler(HTTPException)
    def handle_http(exc: HTTPException):
        if wants_json():
            message = exc.description or exc.name
            headers = ()
            if exc.code == 413 and body_over_limit():
                message = f"request too large: the limit is {app.config['MAX_UPLOAD_BYTES']} bytes"
            elif exc.code == 413:
                message = (f"request refused: more than {app.config['MAX_FORM_PARTS']} form fields, or a form "
                           f"field (not a file) over {app.config['MAX_FORM_MEMORY_SIZE']} bytes")
                if request.endpoint == ANALYZE:  # Werkzeug does not say which field: name the likely one
                    message += ("; an image sent without a filename (curl -F image=<photo.jpg) is such a field: "
                                "send it as a file, curl -F image=@photo.jpg")
            if exc.code == 429:
                seconds = retry_after()  # in words as on the pages ("wait about 58 minutes"); exact in Retry-After
                message = (f"too many requests from this client (limit: {exc.description}): {wait_words(seconds)}, "
                           "then try again")
                headers = retry_after_headers(seconds)
            return jsonify(error=message), exc.code, headers
        if request.endpoint == UPLOAD_SUBMIT:
            # A photo over the size limit (refused before the view reads it) or one too many: the upload
            # page again, with its form and a plain message, not a bare error page.
            from app.upload.routes import http_error_page

            page = http_error_page(exc)
            if page is not None:
                return page
        headers = retry_after_headers(retry_after()) if exc.code == 429 else ()
        return render_template("error.html", code=exc.code, title=exc.name, message=_plain(exc)), exc.code, headers


def body_over_limit() -> bool:
    """Whether a 413 was for the request's size (``MAX_CONTENT_LENGTH``), not for its form's fields.

    Werkzeug raises the same 413 for a body over the limit, more than ``MAX_FORM_PARTS`` parts and a field
    over ``MAX_FORM_MEMORY_SIZE``: only the body's length tells them apart.
    """
    limit = request.max_content_length
    if limit is None:
        return False
    if request.content_length is not None:
        return request.content_length > limit
    # No length given (chunked): the body was cut off at the limit if its stream was read that far.
    stream = request.__dict__.get("stream")  # only if already made: making it here could raise again
    return isinstance(stream, LimitedStream) and stream.limit == limit and stream.is_exhausted


def retry_after() -> int | None:
    """Seconds until the rate limit this request broke lets it in again (``Retry-After``); None when the
    limiter cannot say (its storage, Redis, may be away)."""
    try:
        reset_at = limiter.current_limit.window.reset_time
    except Exception:  # whatever the storage raises, the answer is still a 429
        return None
    return max(1, math.ceil(reset_at - time.time()))


def retry_after_headers(seconds: int | None) -> tuple:
    """The ``Retry-After`` header of a 429 whose wait is ``seconds`` (none when the limiter could not say)."""
    return () if seconds is None else (("Retry-After", str(seconds)),)


def wait_words(seconds: int | None) -> str:
    """How long to wait, in words: "wait 42 seconds", "wait about 58 minutes"; "wait a moment" for None."""
    if seconds is None:
        return "wait a moment"
    if seconds < 90:
        return f"wait {seconds} second{'s' if seconds != 1 else ''}"
    return f"wait about {round(seconds / 60)} minutes"


def _plain(exc: HTTPException) -> str:
    """What the error page says: Werkzeug's description, in words for a person where it is a bare limit."""
    if exc.code == 413:
        return "What was sent is too large."
    if exc.code == 429 and BARE_LIMIT.fullmatch(exc.description or ""):  # a limit with no message of its own
        return "Too many requests in a short time: wait a moment and try again."
    return exc.description or exc.name
