"""Security headers (a strict Content-Security-Policy: all JS lives in static files) and proxy trust."""
from __future__ import annotations

import io

from flask import Request
from werkzeug.middleware.proxy_fix import ProxyFix

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HSTS = "max-age=31536000"


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory: never a photo in a temporary file on disk.

    Werkzeug spools a file part over 500 KiB to a temporary file; ``MAX_CONTENT_LENGTH`` already bounds
    the memory a request may take.
    """

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return io.BytesIO()


def form_expired(then: str = "try again") -> str:
    """The one wording of a form refused by its CSRF check: what happened, and what to do (``then``)."""
    return f"The form expired or came from another site: reload the page and {then}."


def init_app(app) -> None:
    """Add the security headers to every response; trust ``TRUSTED_PROXIES`` proxies' X-Forwarded-* headers.

    Behind nginx (``TRUSTED_PROXIES=1``) the client's address (rate limits, logs)
    and scheme (Secure cookies, external links) come from X-Forwarded-For and
    X-Forwarded-Proto; with 0 those headers are ignored, so a client cannot
    forge its address. Call after ``socketio.init_app``: the Socket.IO
    middleware then sees the same corrected request.
    """
    proxies = int(app.config.get("TRUSTED_PROXIES") or 0)
    if proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies)
    hsts = app.config["ENV"] == "production" and app.config.get("SESSION_COOKIE_SECURE")
    app.jinja_env.globals["form_expired"] = form_expired
    app.request_class = InMemoryRequest

    @app.after_request
    def headers(response):
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Permissions-Policy", "camera=(self), microphone=(), geolocation=()")
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if hsts:  # HTTPS-only deployments: browsers must not fall back to plain HTTP
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        return response
