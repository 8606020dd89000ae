"""Uploads decoded at once are bounded (``UPLOAD_CONCURRENCY``): beyond, 503 with Retry-After."""
from __future__ import annotations

import io
import threading
import time

import cv2
import numpy as np
import pytest

from app.config import Config, ConfigError, finalize
from app.extensions import socketio
from app.upload import analysis
from tests.conftest import make_app
from tests.imagegen import encode, fit_frame

URLS = ["/api/v1/analyze", "/upload"]


@pytest.fixture(scope="module")
def obama(faces_dir) -> bytes:
    return (faces_dir / "obama.jpg").read_bytes()


@pytest.fixture
def app():
    return make_app(UPLOAD_CONCURRENCY=1, WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)


@pytest.fixture
def held(app, monkeypatch):
    """Blocks the next upload's analysis, once it holds its slot, until ``release``; ``started`` says it has begun.

    Only that first analysis waits: any later one runs as usual.
    """
    started, release, first = threading.Event(), threading.Event(), threading.Lock()
    analyze = analysis._analyze

    def blocking(*args):
        if first.acquire(blocking=False):
            started.set()
            assert release.wait(10), "the test never released the analysis"
        return analyze(*args)

    monkeypatch.setattr(analysis, "_analyze", blocking)
    monkeypatch.setattr(analysis, "SLOT_WAIT_SECONDS", 0.1)
    yield started, release
    release.set()


def post(app, url: str, data: bytes):
    form = {"image": (io.BytesIO(data), "photo.jpg", "image/jpeg")}
    return app.test_client().post(url, data=form, content_type="multipart/form-data")


def in_background(app, url: str, data: bytes) -> tuple[threading.Thread, list]:
    responses = []
    thread = threading.Thread(target=lambda: responses.append(post(app, url, data)), daemon=True)
    thread.start()
    return thread, responses


@pytest.mark.parametrize("busy_url", URLS)
@pytest.mark.parametrize("first_url", URLS)
def test_an_upload_while_every_slot_is_taken_gets_503_then_the_next_succeeds(app, held, obama, first_url, busy_url):
    started, release = held
    thread, first = in_background(app, first_url, obama)
    assert started.wait(10), "the first upload never started its analysis"

    refused = post(app, busy_url, obama)
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == str(analysis.RETRY_AFTER_SECONDS)
    if busy_url.startswith("/api/"):
        assert "busy" in refused.json["error"] and "try again" in refused.json["error"]
    else:
        assert 'id="upload-error"' in refused.get_data(as_text=True)
        assert "busy analysing other photos" in refused.get_data(as_text=True)

    release.set()
    thread.join(10)
    assert first[0].status_code == 200
    again = post(app, busy_url, obama)
    assert again.status_code == 200 and "Retry-After" not in again.headers


def test_an_upload_waits_for_a_slot_that_frees_in_time(app, held, obama, monkeypatch):
    started, release = held
    monkeypatch.setattr(analysis, "SLOT_WAIT_SECONDS", 10.0)
    thread, first = in_background(app, "/api/v1/analyze", obama)
    assert started.wait(10)
    threading.Timer(0.3, release.set).start()
    t0 = time.monotonic()
    second = post(app, "/api/v1/analyze", obama)
    thread.join(10)
    assert second.status_code == 200 and first[0].status_code == 200
    assert time.monotonic() - t0 >= 0.25  # it waited for the first one


def test_a_refused_or_failed_upload_gives_its_slot_back(app, obama):
    assert post(app, "/api/v1/analyze", b"not an image").status_code == 400
    assert post(app, "/api/v1/analyze", obama).status_code == 200
    assert post(app, "/api/v1/analyze", obama).status_code == 200


def test_live_frames_do_not_wait_for_upload_slots(app, held, obama):
    started, release = held
    thread, upload = in_background(app, "/api/v1/analyze", obama)
    assert started.wait(10)
    frame = encode(fit_frame(cv2.imdecode(np.frombuffer(obama, np.uint8), cv2.IMREAD_COLOR)), ".jpg", quality=70)
    sc = socketio.test_client(app, flask_test_client=app.test_client())
    try:
        sc.emit("frame", {"seq": 1, "image": frame})
        deadline = time.monotonic() + 10
        faces = []
        while not faces and time.monotonic() < deadline:
            faces = [e for e in sc.get_received() if e["name"] == "faces"]
            time.sleep(0.02)
        assert faces and faces[0]["args"][0]["seq"] == 1
    finally:
        sc.disconnect()
    release.set()
    thread.join(10)
    assert upload[0].status_code == 200


# --- the setting ----------------------------------------------------------------

@pytest.mark.parametrize("value, match", [
    ("0", "UPLOAD_CONCURRENCY must be a whole number .* 1 or more, got 0"),
    ("-3", "UPLOAD_CONCURRENCY must be a whole number .* 1 or more, got -3"),
    ("1.5", "UPLOAD_CONCURRENCY must be an integer, got '1.5'"),
    ("two", "UPLOAD_CONCURRENCY must be an integer, got 'two'"),
])
def test_a_bad_upload_concurrency_stops_the_start(monkeypatch, value, match):
    monkeypatch.setenv("UPLOAD_CONCURRENCY", value)
    with pytest.raises(ConfigError, match=match):
        finalize(Config.from_env())


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_a_bad_upload_concurrency_override_stops_the_start(value):
    with pytest.raises(ConfigError, match="UPLOAD_CONCURRENCY"):
        make_app(UPLOAD_CONCURRENCY=value)


def test_upload_concurrency_defaults_to_two_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("UPLOAD_CONCURRENCY", raising=False)
    assert finalize(Config.from_env())["UPLOAD_CONCURRENCY"] == 2
    monkeypatch.setenv("UPLOAD_CONCURRENCY", "5")
    assert finalize(Config.from_env())["UPLOAD_CONCURRENCY"] == 5
