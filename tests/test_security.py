"""Security: production secrets, cookie flags, CSRF on every form, CSP and headers, rate limits, CORS, health."""
from __future__ import annotations

import io
import re
import threading
import time

import pytest

from app.config import MIN_SECRET_KEY_LENGTH, ConfigError
from app.security import form_expired
from tests.browser import ServerError, ServerProcess, free_port
from tests.classroom_fixtures import classroom_app, register
from tests.conftest import make_app

STRONG_KEY = "k" * MIN_SECRET_KEY_LENGTH
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def token(client, page: str) -> str:
    html = client.get(page).get_data(as_text=True)
    found = CSRF_FIELD.search(html)
    assert found, f"no CSRF token on {page}"
    return found.group(1)


# -- SECRET_KEY in production -------------------------------------------------------------------

@pytest.mark.parametrize("key, message", [
    (None, "SECRET_KEY must be set in production"),
    ("", "SECRET_KEY must be set in production"),
    ("change-me", "too short for production"),
    ("x" * (MIN_SECRET_KEY_LENGTH - 1), "too short for production"),
])
def test_production_refuses_a_missing_or_weak_secret_key(key, message):
    with pytest.raises(ConfigError, match=message):
        make_app(ENV="production", SECRET_KEY=key)


def test_production_starts_with_a_real_secret_key_and_development_makes_one_up():
    assert make_app(ENV="production", SECRET_KEY=STRONG_KEY).config["SECRET_KEY"] == STRONG_KEY
    dev = make_app(SECRET_KEY=None)
    assert len(dev.config["SECRET_KEY"]) >= MIN_SECRET_KEY_LENGTH and dev.config["SECRET_KEY_NOTE"]


@pytest.mark.slow
@pytest.mark.parametrize("mode, key, exit_code, message", [
    ("threading", "", 4, "SECRET_KEY must be set in production"),
    ("eventlet", "short", 1, "SECRET_KEY is too short"),
])
def test_real_server_refuses_to_start_in_production_without_a_secret(tmp_path, model_copy, mode, key,
                                                                     exit_code, message):
    server = ServerProcess(mode, workdir=tmp_path, model_path=model_copy, startup_timeout=90,
                           env={"MOODLENS_ENV": "production", "SECRET_KEY": key})
    with pytest.raises(ServerError) as failed:
        server.start()
    assert failed.value.exit_code == exit_code, failed.value
    assert f"MoodLens cannot start: {message}" in failed.value.output
    assert "Traceback" not in failed.value.output


# -- cookies --------------------------------------------------------------------------------------

def session_cookie(resp) -> str:
    cookies = [c for c in resp.headers.getlist("Set-Cookie") if c.startswith("session=")]
    assert cookies, resp.headers
    return cookies[0]


@pytest.mark.parametrize("env, overrides, secure", [
    ("production", {}, True),
    ("development", {}, False),
    ("production", {"SESSION_COOKIE_SECURE": False}, False),  # a plain-HTTP trial, explicitly
])
def test_session_cookie_is_httponly_samesite_and_secure_in_production(tmp_path, env, overrides, secure):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", ENV=env, SECRET_KEY=STRONG_KEY, **overrides)
    try:
        cookie = session_cookie(register(app.test_client(), "ann@example.org", "Ann"))
    finally:
        app.extensions["classroom"].stop()
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert "httponly" in flags
    assert "samesite=lax" in cookie.lower().replace(" ", "")
    assert ("secure" in flags) is secure


# -- CSRF on every form ---------------------------------------------------------------------------

def logged_in_teacher(app):
    """A teacher registered through the real form (with its token) and one class; returns (client, code)."""
    client = app.test_client()
    data = {"name": "Ann", "email": "ann@example.org", "password": "correct horse battery",
            "confirm": "correct horse battery", "csrf_token": token(client, "/register")}
    assert client.post("/register", data=data).status_code == 302
    resp = client.post("/classes", data={"name": "Biology", "csrf_token": token(client, "/classes")})
    assert resp.status_code == 302
    return client, resp.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def test_every_post_form_on_every_page_carries_a_csrf_token(csrf_app):
    teacher, code = logged_in_teacher(csrf_app)
    student = csrf_app.test_client()
    data = {"display_name": "Sam", "consent": "y", "csrf_token": token(student, f"/join/{code}")}
    assert student.post(f"/join/{code}", data=data).status_code == 302
    pages = [(teacher, p) for p in ("/", "/live", "/upload", "/classroom", "/classes", f"/classes/{code}",
                                    f"/classes/{code}/history", f"/classes/{code}/present")]
    anon = csrf_app.test_client()
    pages += [(anon, p) for p in ("/register", "/login", "/classroom", f"/join/{code}")]
    pages += [(student, f"/join/{code}/live")]
    forms_seen = 0
    for client, page in pages:
        resp = client.get(page)
        assert resp.status_code == 200, page
        for form in re.findall(r"<form\b.*?</form>", resp.get_data(as_text=True), flags=re.S | re.I):
            if re.search(r'method="post"', form, re.I):
                forms_seen += 1
                assert 'name="csrf_token"' in form, f"{page}: a POST form without a CSRF token:\n{form[:300]}"
    assert forms_seen >= 8


def test_forms_posted_without_a_token_change_nothing(csrf_app):
    from sqlalchemy import func, select

    from app.classroom.models import Classroom, ClassSession, Student, Teacher
    from app.extensions import db

    teacher, code = logged_in_teacher(csrf_app)
    anon = csrf_app.test_client()

    def counts():
        with csrf_app.app_context():
            return [db.session.scalar(select(func.count()).select_from(m)) for m in (Teacher, Classroom, ClassSession,
                                                                                    Student)]

    before = counts()
    no_token = [
        (anon, "/register", {"name": "Eve", "email": "eve@example.org", "password": "x" * 12, "confirm": "x" * 12}),
        (anon, "/login", {"email": "ann@example.org", "password": "correct horse battery"}),
        (anon, f"/join/{code}", {"display_name": "Mallory", "consent": "y"}),
        (teacher, "/classes", {"name": "Forged class"}),
        (teacher, f"/classes/{code}/end", {}),
        (teacher, f"/classes/{code}/start", {}),
        (teacher, f"/classes/{code}/delete", {"confirm": "y"}),
        (teacher, f"/classes/{code}/settings", {"aggregate_only": "y"}),
        (teacher, f"/join/{code}/leave", {}),
        (teacher, "/logout", {}),
    ]
    for client, url, data in no_token:
        resp = client.post(url, data=data)
        assert resp.status_code == 400, (url, resp.status_code)
        # Forms and buttons alike say why and what to do, in the same words.
        assert form_expired() in resp.get_data(as_text=True), url
    assert counts() == before
    with csrf_app.app_context():
        classroom = db.session.scalar(select(Classroom).where(Classroom.code == code))
        assert classroom.running_session() is not None and not classroom.aggregate_only
    assert teacher.get(f"/classes/{code}").status_code == 200  # still logged in: the forged logout did nothing
    # The login form without a token logs nobody in.
    assert anon.get("/classes").status_code == 302


def test_upload_form_needs_its_csrf_token(client, faces_dir):
    photo = (faces_dir / "obama.jpg").read_bytes()
    app = make_app(WTF_CSRF_ENABLED=True)
    c = app.test_client()
    forged = c.post("/upload", data={"image": (io.BytesIO(photo), "p.jpg", "image/jpeg")},
                    content_type="multipart/form-data")
    assert forged.status_code == 400 and form_expired("choose the photo again") in forged.get_data(as_text=True)
    assert 'id="result"' not in forged.get_data(as_text=True)
    ok = c.post("/upload", data={"image": (io.BytesIO(photo), "p.jpg", "image/jpeg"),
                                 "csrf_token": token(c, "/upload")}, content_type="multipart/form-data")
    assert ok.status_code == 200 and 'data-faces="1"' in ok.get_data(as_text=True)


# -- Content-Security-Policy and headers ----------------------------------------------------------

def test_pages_send_a_strict_csp_and_the_usual_headers_and_nothing_inline(csrf_app):
    teacher, code = logged_in_teacher(csrf_app)
    for page in ("/", "/live", "/upload", "/classroom", "/register", "/login", "/classes", f"/classes/{code}",
                 f"/classes/{code}/history", f"/join/{code}", "/no-such-page", "/healthz"):
        resp = teacher.get(page)
        csp = resp.headers["Content-Security-Policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'" and directives["object-src"] == "'none'"
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in directives["default-src"]
        assert directives["frame-ancestors"] == "'none'"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "same-origin"
        assert "Strict-Transport-Security" not in resp.headers  # development: no HSTS on plain HTTP
        html = resp.get_data(as_text=True)
        if resp.mimetype == "text/html":
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), f"{page}: inline script"
            assert not re.search(r"\son[a-z]+\s*=", html), f"{page}: inline event handler"
            assert not re.search(r"\sstyle\s*=", html), f"{page}: inline style (blocked by style-src 'self')"


def test_production_adds_hsts(tmp_path):
    app = make_app(ENV="production", SECRET_KEY=STRONG_KEY)
    assert app.test_client().get("/").headers["Strict-Transport-Security"].startswith("max-age=")


# -- rate limits ---------------------------------------------------------------------------------

def test_analyze_api_and_upload_page_share_a_per_client_rate_limit():
    app = make_app(ANALYZE_RATE_LIMIT="3 per minute", WTF_CSRF_ENABLED=False)
    c = app.test_client()
    codes = [c.post("/api/v1/analyze", data=b"not an image", content_type="image/jpeg").status_code
             for _ in range(2)]
    codes.append(c.post("/upload", data={"image": (io.BytesIO(b"nope"), "p.jpg", "image/jpeg")},
                        content_type="multipart/form-data").status_code)
    limited = c.post("/api/v1/analyze", data=b"not an image", content_type="image/jpeg")
    assert codes == [400, 400, 400]
    assert limited.status_code == 429 and limited.is_json and "too many requests" in limited.json["error"]
    # Another client is not affected, and cannot dodge its own limit by forging X-Forwarded-For.
    other = c.post("/api/v1/analyze", data=b"x", content_type="image/jpeg", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 400
    forged = c.post("/api/v1/analyze", data=b"x", content_type="image/jpeg", headers={"X-Forwarded-For": "10.9.9.9"})
    assert forged.status_code == 429


def test_behind_a_trusted_proxy_the_limit_follows_the_forwarded_client_address():
    app = make_app(ANALYZE_RATE_LIMIT="1 per minute", TRUSTED_PROXIES=1)
    c = app.test_client()

    def post(client_ip):
        return c.post("/api/v1/analyze", data=b"x", content_type="image/jpeg",
                      headers={"X-Forwarded-For": client_ip}).status_code

    assert [post("198.51.100.1"), post("198.51.100.1"), post("198.51.100.2")] == [400, 429, 400]


def test_registration_is_rate_limited(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="2 per minute")
    try:
        c = app.test_client()
        codes = [register(c, f"t{i}@example.org").status_code for i in range(3)]
    finally:
        app.extensions["classroom"].stop()
    assert codes == [302, 302, 429]


# -- Socket.IO CORS ---------------------------------------------------------------------------------

def handshake(app, origin: str | None):
    """An Engine.IO polling handshake through the app's real WSGI stack, with ``Origin``."""
    headers = {"Origin": origin} if origin else {}
    return app.test_client().get("/socket.io/?EIO=4&transport=polling", headers=headers,
                                 base_url="http://moodlens.test")


@pytest.mark.parametrize("allowed, origin, accepted", [
    (None, "http://moodlens.test", True),              # default: the page's own origin only
    (None, "https://evil.example", False),
    (None, "http://moodlens.test.evil.example", False),
    (None, None, True),                                # not a browser: no Origin, no CORS question
    ("https://school.example, https://b.example", "https://school.example", True),
    ("https://school.example, https://b.example", "https://b.example", True),
    ("https://school.example, https://b.example", "https://evil.example", False),
    ("https://school.example", "http://moodlens.test", False),  # once configured: only the list
])
def test_socketio_accepts_only_the_configured_origins(allowed, origin, accepted):
    app = make_app(CORS_ALLOWED_ORIGINS=allowed)
    resp = handshake(app, origin)
    if accepted:
        assert resp.status_code == 200 and b'"sid"' in resp.data
        if origin:
            assert resp.headers["Access-Control-Allow-Origin"] == origin
    else:
        assert resp.status_code == 400 and b"Not an accepted origin" in resp.data
        assert "Access-Control-Allow-Origin" not in resp.headers


# -- health --------------------------------------------------------------------------------------

def test_healthz_reports_model_and_database(client):
    body = client.get("/healthz").json
    assert body["status"] == "ok" and body["model"]["loaded"] is True
    assert body["database"] == {"reachable": True, "backend": "sqlite"}
    assert body["message_queue"] == {"configured": False, "reachable": None}
    assert body["storage"] == {"queued": 0, "written": 0, "failures": 0, "dropped": 0}


def test_healthz_is_503_when_the_database_is_unreachable():
    dead = f"postgresql://moodlens@127.0.0.1:{free_port()}/gone"  # nothing listens there
    app = make_app(DATABASE_URL=dead, DB_AUTO_UPGRADE=False)
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 503
    assert resp.json["status"] == "error" and resp.json["database"] == {"reachable": False, "backend": "postgresql"}
    assert resp.json["model"]["loaded"] is True
    assert resp.headers["Cache-Control"] == "no-store"


def test_health_checks_at_the_same_moment_share_one_answer_from_a_slow_database(app, monkeypatch):
    """Two checks at once (an orchestrator's and a load balancer's, or a client's retry): the second waits on the
    first's probe, within the same time limit, instead of calling a database that answers in 0.5 s unreachable."""
    import app.main as health

    calls = []
    answer = health._select_one

    def slow_select_one(flask_app):
        calls.append(1)
        time.sleep(0.5)
        return answer(flask_app)

    monkeypatch.setattr(health, "_select_one", slow_select_one)
    answers = []
    checks = [threading.Thread(target=lambda: answers.append(app.test_client().get("/healthz"))) for _ in range(2)]
    for check in checks:
        check.start()
        time.sleep(0.05)
    for check in checks:
        check.join(10)
    assert [resp.status_code for resp in answers] == [200, 200], [resp.json for resp in answers]
    assert all(resp.json["database"] == {"reachable": True, "backend": "sqlite"} for resp in answers)
    assert len(calls) == 1  # one probe, not one per check


@pytest.mark.parametrize("url", ["/api/v1/analyze", "/upload"])
def test_uploaded_photos_never_touch_the_disk(url, faces_dir, monkeypatch):
    """A multipart photo over Werkzeug's 500 KiB spooling size is kept in memory, not in a temporary file."""
    import cv2
    import werkzeug.formparser

    from tests.test_bad_input import post_multipart

    def to_disk(*_args, **_kwargs):
        raise AssertionError("an upload was spooled to a temporary file")

    monkeypatch.setattr(werkzeug.formparser, "SpooledTemporaryFile", to_disk)
    face = cv2.imread(str(faces_dir / "obama.jpg"))
    photo = cv2.imencode(".jpg", cv2.resize(face, None, fx=3, fy=3), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert len(photo) > 600 * 1024
    client = make_app(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False).test_client()
    resp = post_multipart(client, url, {}, {"image": (photo, "image/jpeg")})  # the body as bytes: no spooling here
    assert resp.status_code == 200
    body = resp.get_data(as_text=True)
    assert resp.get_json()["faces"] if url.startswith("/api") else 'data-faces="1"' in body
