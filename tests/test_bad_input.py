"""Bad input at every entry point: a clear 4xx or error event, no crash, nothing stored.

Entry points: the upload form, the analyze API (multipart and raw body), the
live stream's ``frame`` event (against a real server, so the Socket.IO size
limit is the real one), the classroom's socket events, the join / code /
login / register / class forms, and query parameters. Unusual but valid
images (16-bit, RGBA, gray, CMYK, EXIF-rotated) must be analysed, not refused.
"""
from __future__ import annotations

import io
import queue
import re
import time

import cv2
import numpy as np
import pytest
import socketio
from PIL import Image

from tests.browser import ServerProcess
from tests.classroom_fixtures import classroom_app, create_class, register
from tests.conftest import make_app
from tests.imagegen import encode, exif_rotated_jpeg, fit_frame, pil_bytes, png_bomb
from tests.live_clients import Probe, Web, student, teacher

UPLOAD_LIMIT = 1_000_000
FRAME_LIMIT = 1024 * 1024  # the server's default MAX_FRAME_BYTES
CSRF_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


# -- images -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def face_frame(faces_dir) -> np.ndarray:
    """A 640x480 webcam-like BGR frame with one face."""
    return fit_frame(cv2.imread(str(faces_dir / "obama.jpg")))


def _rgb(bgr) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _png16(bgr) -> bytes:
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
    ok, buf = cv2.imencode(".png", gray)
    assert ok
    return buf.tobytes()


def _rgba(bgr) -> bytes:
    img = _rgb(bgr).convert("RGBA")
    img.putalpha(255)
    return pil_bytes(img, "PNG")


def _padded_jpeg(bgr, size: int) -> bytes:
    """A valid JPEG padded with zeros (after its end marker) to exactly ``size`` bytes."""
    data = encode(bgr, ".jpg", quality=70)
    return data + b"\0" * (size - len(data))


OK = ("ok", None)
# name -> what the upload page says instead of the API's precise message (in plain words, see app/upload/routes.py)
PAGE_WORDS = {"non-image bytes": "not a photo", "truncated jpeg": "damaged or incomplete",
              "png header 30000x30000": "too many pixels", "gif": "gif files are not supported"}
# name -> (make(bgr) -> bytes, content type, expectation: OK or (status, message fragment))
IMAGES = {
    "non-image bytes": (lambda f: b"<html><body>hello</body></html>" * 20, "image/jpeg", (400, "not an image")),
    "zero bytes": (lambda f: b"", "image/jpeg", (400, "empty")),
    "truncated jpeg": (lambda f: encode(f, ".jpg")[:6000], "image/jpeg", (400, "truncated")),
    "png header 30000x30000": (lambda f: png_bomb(), "image/png", (413, "pixels")),
    "gif": (lambda f: pil_bytes(_rgb(f), "GIF"), "image/gif", (415, "unsupported")),
    "16-bit png": (_png16, "image/png", OK),
    "rgba png": (_rgba, "image/png", OK),
    "grayscale png": (lambda f: pil_bytes(_rgb(f).convert("L"), "PNG"), "image/png", OK),
    "cmyk jpeg": (lambda f: pil_bytes(_rgb(f).convert("CMYK"), "JPEG", quality=90), "image/jpeg", OK),
    "exif-rotated jpeg": (lambda f: exif_rotated_jpeg(f, 6), "image/jpeg", OK),
    "webp": (lambda f: pil_bytes(_rgb(f), "WEBP", quality=80), "image/webp", OK),
}


@pytest.fixture(scope="module")
def http_app():
    return make_app(MAX_UPLOAD_BYTES=UPLOAD_LIMIT, ANALYZE_RATE_LIMIT="10000 per minute", WTF_CSRF_ENABLED=True)


def multipart(fields: dict[str, str], files: dict[str, tuple[bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body built in memory (the test client would spool a big one to an unclosed file)."""
    boundary = "moodlens-test-boundary-7f3a"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for name, (data, mimetype) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="photo"\r\n'
                f"Content-Type: {mimetype}\r\n\r\n")
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post_multipart(client, url: str, fields: dict, files: dict):
    body, content_type = multipart(fields, files)
    return client.post(url, data=body, content_type=content_type)


def upload(client, data: bytes, mimetype: str, field: str = "image"):
    html = client.get("/upload").get_data(as_text=True)
    token = CSRF_FIELD.search(html).group(1)
    return post_multipart(client, "/upload", {"csrf_token": token}, {field: (data, mimetype)})


def check_api(resp, expect) -> None:
    if expect is OK:
        assert resp.status_code == 200, resp.json
        assert len(resp.json["faces"]) == 1 and (resp.json["width"], resp.json["height"]) == (640, 480)
    else:
        status, fragment = expect
        assert resp.status_code == status and resp.is_json, (resp.status_code, resp.data[:200])
        assert fragment in resp.json["error"].lower()


@pytest.mark.parametrize("name", IMAGES)
def test_analyze_api_multipart(http_app, face_frame, name):
    make, mimetype, expect = IMAGES[name]
    resp = post_multipart(http_app.test_client(), "/api/v1/analyze", {}, {"image": (make(face_frame), mimetype)})
    check_api(resp, expect)


@pytest.mark.parametrize("name", IMAGES)
def test_analyze_api_raw_body(http_app, face_frame, name):
    make, mimetype, expect = IMAGES[name]
    resp = http_app.test_client().post("/api/v1/analyze", data=make(face_frame), content_type=mimetype)
    check_api(resp, expect)


@pytest.mark.parametrize("name", IMAGES)
def test_upload_form(http_app, face_frame, name):
    make, mimetype, expect = IMAGES[name]
    resp = upload(http_app.test_client(), make(face_frame), mimetype)
    html = resp.get_data(as_text=True)
    if expect is OK:
        assert resp.status_code == 200 and 'data-faces="1"' in html
    else:
        status, fragment = expect
        fragment = PAGE_WORDS.get(name, fragment)
        assert resp.status_code == status
        alert = re.search(r'<p class="error" role="alert" id="upload-error">(.*?)</p>', html, re.S)
        assert alert and fragment in alert.group(1).lower()
        assert 'id="result"' not in html


@pytest.mark.parametrize("size, status, fragment, page_says", [
    (UPLOAD_LIMIT + 1, 413, f"the limit is {UPLOAD_LIMIT} bytes", "This photo is 1.1 MB; the limit is 1 MB"),
    (UPLOAD_LIMIT + 512 * 1024, 413, f"the limit is {UPLOAD_LIMIT} bytes", "This photo is 1.5 MB; the limit is 1 MB"),
])  # refused by the decoder's check; refused before the body is read
def test_oversized_http_payloads(http_app, face_frame, size, status, fragment, page_says):
    body = _padded_jpeg(face_frame, size)
    client = http_app.test_client()
    for resp in (client.post("/api/v1/analyze", data=body, content_type="image/jpeg"),
                 post_multipart(client, "/api/v1/analyze", {}, {"image": (body, "image/jpeg")})):
        assert resp.status_code == status and fragment in resp.json["error"]
    resp = upload(client, body, "image/jpeg")
    assert resp.status_code == status and page_says in resp.get_data(as_text=True)


@pytest.mark.parametrize("kwargs, status, fragment", [
    ({"data": {"photo": (io.BytesIO(b"x"), "p.jpg", "image/jpeg")}, "content_type": "multipart/form-data"},
     400, "no file in the form field 'image'"),
    ({"data": {"image": "just text, not a file"}, "content_type": "multipart/form-data"}, 400, "no file"),
    ({"data": b"{}", "content_type": "application/json"}, 415, "unsupported content-type"),
    ({"data": b"x"}, 415, "missing content-type"),
    ({"data": b"x", "content_type": "image/svg+xml"}, 415, "unsupported image type"),
    ({"data": b"--zz\r\nbroken", "content_type": "multipart/form-data; boundary=zz"}, 400, "no file"),
])
def test_analyze_api_malformed_requests(http_app, kwargs, status, fragment):
    resp = http_app.test_client().post("/api/v1/analyze", **kwargs)
    assert resp.status_code == status and fragment in resp.json["error"].lower()


# -- the live stream, on a real server ------------------------------------------------------------

@pytest.fixture(scope="module")
def live_server(model_copy, tmp_path_factory):
    """The production server for this module's socket tests (stopped when the module is done)."""
    with ServerProcess("threading", workdir=tmp_path_factory.mktemp("bad-input"), model_path=model_copy) as server:
        yield server


def frame_answer(probe: Probe, seq: int, timeout: float = 20.0):
    """("faces" | "frame_error", payload) for frame ``seq``; (None, None) when nothing came in time."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            name, _ns, msg = probe.events.get(timeout=left)
        except queue.Empty:
            break
        if name in ("faces", "frame_error") and isinstance(msg, dict) and msg.get("seq") == seq:
            return name, msg
    return None, None


@pytest.mark.slow
def test_socket_frames_bad_images_and_payloads(live_server, face_frame):
    probe = Probe(live_server.url).connect()
    try:
        for seq, (name, (make, _mime, expect)) in enumerate(IMAGES.items()):
            probe.emit("frame", {"seq": seq, "image": make(face_frame)})
            kind, msg = frame_answer(probe, seq)
            if expect is OK:
                assert kind == "faces" and len(msg["faces"]) == 1, (name, msg)
            else:
                assert kind == "frame_error" and expect[1] in msg["error"].lower(), (name, msg)
        # Over MAX_FRAME_BYTES but within the transport's buffer: a clear frame_error.
        probe.emit("frame", {"seq": 100, "image": _padded_jpeg(face_frame, FRAME_LIMIT + 1)})
        kind, msg = frame_answer(probe, 100)
        assert kind == "frame_error" and f"the limit is {FRAME_LIMIT} bytes" in msg["error"]
        # Wrong types and missing fields.
        good = encode(face_frame, ".jpg", quality=70)
        bad_payloads = [
            ("not an object", "frame must be an object"), (None, "frame must be an object"),
            (42, "frame must be an object"), ([1, 2], "frame must be an object"),
            ({"image": good}, "seq"), ({"seq": "7", "image": good}, "seq"), ({"seq": -1, "image": good}, "seq"),
            ({"seq": 2 ** 60, "image": good}, "seq"), ({"seq": True, "image": good}, "seq"),
            ({"seq": 1.5, "image": good}, "seq"), ({"seq": 200}, "binary"), ({"seq": 201, "image": "text"}, "binary"),
            ({"seq": 202, "image": [1, 2, 3]}, "binary"), ({"seq": 203, "image": {"a": 1}}, "binary"),
        ]
        for payload, fragment in bad_payloads:
            probe.emit("frame", payload)
            msg = probe.wait_for("frame_error", timeout=10)
            assert msg is not None and fragment in msg["error"], (payload if not isinstance(payload, dict) else
                                                                  {k: type(v).__name__ for k, v in payload.items()})
        probe.emit("no_such_event", {"x": 1})
        assert probe.call("classroom_leave", {"junk": [1, 2]}) == {"ok": False}
        # The connection survived all of it.
        probe.emit("frame", {"seq": 300, "image": good})
        kind, msg = frame_answer(probe, 300)
        assert kind == "faces" and len(msg["faces"]) == 1
    finally:
        probe.close()
    assert "Traceback" not in live_server.log_text()


@pytest.mark.slow
def test_socket_payload_over_the_transport_limit_drops_only_that_connection(live_server, face_frame):
    big = Probe(live_server.url).connect()
    bystander = Probe(live_server.url).connect()
    try:
        big.emit("frame", {"seq": 1, "image": b"\xff\xd8" + b"\0" * (FRAME_LIMIT + 64 * 1024)})
        assert big.wait_disconnected(15), "the server kept a message over its transport limit"
        bystander.emit("frame", {"seq": 5, "image": encode(face_frame, ".jpg", quality=70)})
        kind, msg = frame_answer(bystander, 5)
        assert kind == "faces" and len(msg["faces"]) == 1
        again = Probe(live_server.url).connect()  # and the server takes new connections
        again.close()
    finally:
        big.close()
        bystander.close()


@pytest.mark.slow
def test_classroom_socket_events_with_wrong_types(live_server):
    web, code = teacher(live_server.url, email="bad-input@example.org")
    dash = Probe(live_server.url, headers=web.cookie_header(), namespaces=["/classroom"]).connect()
    try:
        for payload in (None, "CODE", 5, [code], {"code": None}, {"code": "x" * 10000},
                        {"code": "<script>alert(1)</script>"}, {}):
            answer = dash.call("dashboard_join", payload, namespace="/classroom")
            assert set(answer) == {"error"} and answer["error"], (payload, answer)
        assert dash.call("dashboard_leave", {"code": "nope"}, namespace="/classroom") == {"ok": True}
        assert dash.call("dashboard_join", {"code": code}, namespace="/classroom")["ok"] is True
    finally:
        dash.close()
    # Not logged in: the dashboard namespace refuses, with the reason.
    refused = Probe(live_server.url, namespaces=["/classroom"])
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect()
    assert any("log in as a teacher" in str(e) for e in refused.connect_errors), refused.connect_errors
    refused.close()
    # A student stream that has not joined is refused with the reason; odd auth values are plain streams.
    refused = Probe(live_server.url, auth={"classroom": "student"})
    with pytest.raises(socketio.exceptions.ConnectionError):
        refused.connect()
    assert any("Join the class first" in str(e) for e in refused.connect_errors), refused.connect_errors
    refused.close()
    for auth in ("student", {"classroom": ["student"]}, {"classroom": None}, [1, 2]):
        Probe(live_server.url, auth=auth).connect().close()
    joined = student(live_server.url, code, "Sam")
    Probe(live_server.url, headers=joined.cookie_header(), auth={"classroom": "student"}).connect().close()


# -- forms ----------------------------------------------------------------------------------------

@pytest.fixture
def capp_counts(tmp_path):
    """A classroom app (CSRF off: the tokens are tested elsewhere), a teacher with a class, and a row counter."""
    from sqlalchemy import func, select

    from app.classroom.models import Classroom, Student, Teacher
    from app.extensions import db

    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="1000 per minute",
                        JOIN_RATE_LIMIT="1000 per minute")
    teacher_client = app.test_client()
    assert register(teacher_client, "ann@example.org", "Ann").status_code == 302
    code = create_class(teacher_client)

    def counts():
        with app.app_context():
            return {m.__name__: db.session.scalar(select(func.count()).select_from(m))
                    for m in (Teacher, Classroom, Student)}

    yield app, teacher_client, code, counts
    app.extensions["classroom"].stop()


LONG = "x" * 100_000
REQUIRED, CONSENT = "This field is required.", "Tick the box to agree before you start."
TOO_LONG, PRINTABLE = "Field cannot be longer than 40 characters.", "Use letters, digits and ordinary punctuation only."
JOIN_CASES = [  # (form, what the page says next to the fields)
    ({}, [REQUIRED, CONSENT]),
    ({"display_name": "Sam"}, [CONSENT]),
    ({"consent": "y"}, [REQUIRED]),
    ({"display_name": "   ", "consent": "y"}, [REQUIRED]),
    ({"display_name": "x" * 41, "consent": "y"}, [TOO_LONG]),
    ({"display_name": LONG, "consent": "y"}, [TOO_LONG]),
    ({"display_name": "Sam\x00", "consent": "y"}, [PRINTABLE]),
    ({"display_name": "Sam\x1b[31m", "consent": "y"}, [PRINTABLE]),
]


@pytest.mark.parametrize("data, errors", JOIN_CASES)
def test_join_form_refuses_bad_names_and_stores_nothing(capp_counts, data, errors):
    app, _teacher, code, counts = capp_counts
    before = counts()
    resp = app.test_client().post(f"/join/{code}", data=data)
    assert resp.status_code == 400
    assert re.findall(r'class="field-error"[^>]*>([^<]*)<', resp.get_data(as_text=True)) == errors
    assert counts() == before


@pytest.mark.parametrize("name", ["Zoë 学生 🙂", "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
                                  "\"'><b>bold</b>", "Ωμέγα–Łódź"])
def test_unicode_and_html_names_are_kept_exactly_and_rendered_escaped(capp_counts, name):
    app, teacher_client, code, counts = capp_counts
    student_client = app.test_client()
    assert student_client.post(f"/join/{code}", data={"display_name": name, "consent": "y"}).status_code == 302
    assert counts()["Student"] == 1
    from sqlalchemy import select

    from app.classroom.models import Student
    from app.extensions import db

    with app.app_context():
        assert db.session.scalar(select(Student.display_name)) == " ".join(name.split())
    pages = [student_client.get(f"/join/{code}/live"), teacher_client.get(f"/classes/{code}")]
    for resp in pages:
        html = resp.get_data(as_text=True)
        assert resp.status_code == 200
        if "<" in name:
            assert name not in html  # never raw
    mood = teacher_client.get(f"/api/v1/classes/{code}/mood")
    assert mood.status_code == 200 and mood.is_json  # JSON: the dashboard script puts names in with textContent


def test_dashboard_scripts_never_inject_html():
    from tests.conftest import ROOT

    for js in sorted((ROOT / "static" / "js").glob("*.js")):
        source = js.read_text()
        assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", source), js.name


@pytest.mark.parametrize("data, status", [
    ({}, 400),
    ({"code": ""}, 400),
    ({"code": "x" * 21}, 400),
    ({"code": LONG}, 400),
])
def test_code_form_refuses_bad_codes(capp_counts, data, status):
    app, *_ = capp_counts
    assert app.test_client().post("/join", data=data).status_code == status


@pytest.mark.parametrize("path, status", [
    ("/join/NOPE99", 404),
    ("/join/" + "x" * 5000, 404),
    ("/join/%00%01", 404),
    ("/join/%3Cb%3Ex%3C%2Fb%3E", 404),
    ("/join/Zo%C3%AB", 404),
])
def test_unknown_join_codes_get_a_clear_404(capp_counts, path, status):
    app, *_ = capp_counts
    resp = app.test_client().get(path)
    html = resp.get_data(as_text=True)
    assert resp.status_code == status and 'role="alert"' in html
    assert "<b>x</b>" not in html


@pytest.mark.parametrize("data, status", [
    ({}, 400),
    ({"email": "ann@example.org"}, 400),
    ({"email": "a" * 300 + "@example.org", "password": "p"}, 400),
    ({"email": "ann@example.org", "password": LONG}, 400),
    ({"email": "zoë@例え.jp", "password": "whatever"}, 401),
    ({"email": "<script>@x.org", "password": "whatever"}, 401),
])
def test_login_form_bad_input(capp_counts, data, status):
    app, *_ = capp_counts
    resp = app.test_client().post("/login", data=data)
    assert resp.status_code == status and "<script>@" not in resp.get_data(as_text=True)
    assert app.test_client().get("/classes").status_code == 302  # nobody got logged in


@pytest.mark.parametrize("data", [
    {},
    {"name": "Eve", "email": "eve@example.org", "password": "short", "confirm": "short"},
    {"name": "Eve", "email": "eve@example.org", "password": "long enough 1", "confirm": "different 123"},
    {"name": "Eve", "email": "not-an-email", "password": "long enough 1", "confirm": "long enough 1"},
    {"name": "x" * 81, "email": "eve@example.org", "password": "long enough 1", "confirm": "long enough 1"},
    {"name": "Eve\x07", "email": "eve@example.org", "password": "long enough 1", "confirm": "long enough 1"},
    {"name": LONG, "email": LONG, "password": LONG, "confirm": LONG},
    {"name": "Ann again", "email": "ANN@example.org", "password": "long enough 1", "confirm": "long enough 1"},
])
def test_register_form_bad_input_stores_nothing(capp_counts, data):
    app, _t, _c, counts = capp_counts
    before = counts()
    assert app.test_client().post("/register", data=data).status_code == 400
    assert counts() == before


def test_html_in_teacher_and_class_names_is_escaped(capp_counts):
    app, *_ = capp_counts
    c = app.test_client()
    evil = "<img src=x onerror=alert(1)>"
    assert register(c, "eve@example.org", evil).status_code == 302
    code = create_class(c, name=evil)
    for page in ("/classes", f"/classes/{code}", f"/classes/{code}/present", f"/classes/{code}/history"):
        html = c.get(page).get_data(as_text=True)
        assert evil not in html and "&lt;img src=x onerror=alert(1)&gt;" in html, page
    assert "&lt;img" in app.test_client().get(f"/join/{code}").get_data(as_text=True)


@pytest.mark.parametrize("data, status", [
    ({}, 400),
    ({"name": ""}, 400),
    ({"name": "x" * 81}, 400),
    ({"name": "Bio\x00logy"}, 400),
])
def test_class_form_bad_input_stores_nothing(capp_counts, data, status):
    app, teacher_client, _code, counts = capp_counts
    before = counts()
    assert teacher_client.post("/classes", data=data).status_code == status
    assert counts() == before


# -- query parameters -----------------------------------------------------------------------------

HUGE = "9" * 30  # beyond any database integer


@pytest.mark.parametrize("query, status", [
    ("session=abc", 400), ("session=", 400), ("session=-1", 404), ("session=0", 404), ("session=1.5", 400),
    ("session=9223372036854775807", 404),
    (f"session={HUGE}", 404), (f"session={HUGE * 2}", 400),
    ("by=<script>", {"export.csv": 400, "mood": 200}),  # the mood API takes no "by"
    ("by=student&session=abc", 400),
])
@pytest.mark.parametrize("endpoint", ["export.csv", "mood"])
def test_query_parameters(capp_counts, endpoint, query, status):
    app, teacher_client, code, _ = capp_counts
    url = f"/classes/{code}/export.csv?{query}" if endpoint == "export.csv" else f"/api/v1/classes/{code}/mood?{query}"
    app.config["PROPAGATE_EXCEPTIONS"] = False  # an uncaught error must show as the 500 a client would get
    resp = teacher_client.get(url)
    assert resp.status_code == (status[endpoint] if isinstance(status, dict) else status)
    assert "<script>" not in resp.get_data(as_text=True)
    if resp.status_code == 400 and endpoint == "mood":
        assert "session must be a session id" in resp.json["error"]


@pytest.mark.parametrize("nxt", ["//evil.example/x", "https://evil.example", "/\\evil.example", "javascript:alert(1)",
                                 "%2F%2Fevil.example"])
def test_login_next_parameter_never_leaves_the_site(capp_counts, nxt):
    app, *_ = capp_counts
    resp = app.test_client().post(f"/login?next={nxt}", data={"email": "ann@example.org",
                                                              "password": "correct horse battery"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/classes"


@pytest.mark.parametrize("url, status", [
    ("/upload?x=%00%ff", 200), ("/live?<script>=1", 200), ("/?" + "a=1&" * 2000, 200),
    ("/api/v1/analyze?x=1", 405), ("/socket.io/?EIO=999&transport=polling", 400),
    ("/socket.io/?EIO=4&transport=carrier-pigeon", 400), ("/socket.io/?EIO=4&transport=polling&sid=nope", 400),
])
def test_odd_urls(http_app, url, status):
    resp = http_app.test_client().get(url)
    assert resp.status_code == status


@pytest.mark.slow
@pytest.mark.parametrize("event, payload, answer", [
    ("dashboard_join", {"code": 5}, {"error": "unknown class code"}),
    ("dashboard_leave", {"code": ["x"]}, {"ok": True}),  # in no class's room: nothing to leave
])
def test_dashboard_events_with_a_non_string_code_get_an_answer(live_server, event, payload, answer):
    web, _code = teacher(live_server.url, email=f"{event}@example.org")
    dash = Probe(live_server.url, headers=web.cookie_header(), namespaces=["/classroom"]).connect()
    try:
        assert dash.call(event, payload, namespace="/classroom", timeout=5) == answer
    finally:
        dash.close()


@pytest.mark.slow
def test_a_field_sent_many_times_is_a_clean_answer(live_server):
    web = Web(live_server.url)
    resp = web.post("/join", data={"code": ["A", "B"], "csrf_token": web.token("/classroom")})
    assert resp.status_code == 400  # the first value, "A", is checked as the code: not one


@pytest.mark.slow
@pytest.mark.parametrize("page, fields", [
    ("/login", {"email": "ann@example.org", "password": "x"}),
    pytest.param("/register", {"name": "Eve", "email": "eve@example.org", "password": "long enough 1",
                               "confirm": "long enough 1"}),
])
def test_text_fields_posted_as_files_get_a_4xx(live_server, page, fields):
    """Through a real server (gunicorn): form fields sent as multipart file parts are a clean 400."""
    web = Web(live_server.url)
    files = {name: (f"{name}.txt", value.encode()) for name, value in fields.items()}
    resp = web.post(page, files=files, data={"csrf_token": web.token(page)})
    assert resp.status_code == 400
