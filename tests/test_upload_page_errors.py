"""The upload page in words for a person: a refused photo (too large, too many, the wrong kind, damaged)
shows the page again, with its form, the file's name and a plain message; the API keeps its JSON."""
from __future__ import annotations

import re

import pytest
from PIL import Image

from tests.conftest import make_app
from tests.imagegen import pil_bytes

MB = 1024 * 1024
LIMIT = 2 * MB
ALERT = re.compile(r'<p class="error" role="alert" id="upload-error">(.*?)</p>', re.S)


@pytest.fixture(scope="module")
def app():
    return make_app(MAX_UPLOAD_BYTES=LIMIT, WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)


def send(client, data: bytes, mimetype: str = "image/jpeg", filename: str = "holiday.jpg", url: str = "/upload"):
    """POST ``data`` as the form's ``image`` field (the body built in memory: the test client would spool a
    big one to a file it leaves open)."""
    boundary = "moodlens-page-errors"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: {mimetype}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return client.post(url, data=body, content_type=f"multipart/form-data; boundary={boundary}")


def alert(resp) -> str:
    """The page's error message; the page must still offer its form."""
    html = resp.get_data(as_text=True)
    assert 'id="upload-form"' in html and 'type="file"' in html, html[:400]
    found = ALERT.search(html)
    assert found, html[:400]
    return found.group(1)


def padded(obama: bytes, size: int) -> bytes:
    return obama + b"\0" * (size - len(obama))


@pytest.mark.parametrize("size, shown", [
    (int(3.5 * MB), "3.5 MB"),          # over MAX_CONTENT_LENGTH: Werkzeug refuses it before the view runs
    (LIMIT + 10 * 1024, "2.1 MB"),      # within MAX_CONTENT_LENGTH: the decoder's check (never "2 MB; the limit is 2")
])
def test_a_photo_over_the_limit_shows_the_page_again_in_mb(app, faces_dir, size, shown):
    client = app.test_client()
    resp = send(client, padded((faces_dir / "obama.jpg").read_bytes(), size))
    assert resp.status_code == 413
    assert f"This photo is {shown}; the limit is 2 MB." in alert(resp)
    assert "bytes" not in alert(resp)
    # The API keeps its JSON and its exact byte counts.
    api = send(client, padded((faces_dir / "obama.jpg").read_bytes(), size), url="/api/v1/analyze")
    assert api.status_code == 413 and api.is_json and f"the limit is {LIMIT} bytes" in api.json["error"]


def test_the_page_says_the_limit_in_mb_without_a_trailing_zero(app):
    html = app.test_client().get("/upload").get_data(as_text=True)
    assert "up to 2 MB" in html and f'data-max-bytes="{LIMIT}"' in html


def test_the_31st_photo_in_a_minute_shows_the_page_again_with_when_to_retry():
    app = make_app(ANALYZE_RATE_LIMIT="2 per minute", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    assert [send(client, b"nope").status_code for _ in range(2)] == [400, 400]
    resp = send(client, b"nope")
    assert resp.status_code == 429
    seconds = int(resp.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert alert(resp) == f"holiday.jpg: Too many photos in a short time: wait {seconds} seconds and try again."
    api = client.post("/api/v1/analyze", data=b"nope", content_type="image/jpeg")
    assert api.status_code == 429 and api.is_json and "too many requests" in api.json["error"]


def gif() -> bytes:
    return pil_bytes(Image.new("RGB", (64, 64), (200, 100, 50)), "GIF")


@pytest.mark.parametrize("data, mimetype, filename, status, plain, precise", [
    (gif, "image/gif", "cat.gif", 415, "GIF files are not supported: use a JPEG, PNG or WebP photo.",
     "unsupported image type image/gif"),
    (gif, "image/jpeg", "cat.jpg", 415, "GIF files are not supported: use a JPEG, PNG or WebP photo.",
     "unsupported image format GIF"),  # a GIF named .jpg: the bytes say what it is
    (lambda: b"<html>hello</html>" * 20, "image/jpeg", "page.jpg", 400,
     "This file is not a photo: choose a JPEG, PNG or WebP photo.", "not an image"),
    (lambda: pil_bytes(Image.new("RGB", (400, 400), (90, 90, 90)), "PNG")[:20], "image/png", "broken.png", 400,
     "This file is damaged or incomplete: try saving the photo again.", "corrupt image header"),
    (lambda: pil_bytes(Image.new("RGB", (400, 400), (90, 90, 90)), "JPEG")[:3000], "image/jpeg", "cut.jpg", 400,
     "This file is damaged or incomplete: try saving the photo again.", "truncated"),
    (lambda: b"", "image/jpeg", "empty.jpg", 400, "This file is empty: choose the photo again.", "empty"),
])
def test_refusals_are_in_plain_words_and_name_the_file(app, data, mimetype, filename, status, plain, precise):
    client = app.test_client()
    body = data()
    resp = send(client, body, mimetype, filename)
    assert resp.status_code == status
    text = alert(resp)
    assert text == f"{filename}: {plain}"
    assert f'id="dz-file">Not analysed: {filename}</span>' in resp.get_data(as_text=True)
    api = send(client, body, mimetype, filename, url="/api/v1/analyze")
    assert api.status_code == status and precise in api.json["error"]


def test_a_photo_without_a_face_is_not_described_as_boxed(app):
    blank = pil_bytes(Image.new("RGB", (200, 200), (250, 250, 250)), "JPEG")
    html = send(app.test_client(), blank).get_data(as_text=True)
    alt = re.search(r'id="annotated"[^>]*alt="([^"]*)"', html, re.S).group(1)
    assert "No face" in html and "boxed" not in alt and "no face" in alt


def test_the_scores_come_before_the_box_and_each_cell_is_labelled_for_a_phone(app, faces_dir):
    html = send(app.test_client(), (faces_dir / "obama.jpg").read_bytes()).get_data(as_text=True)
    alt = re.search(r'id="annotated"[^>]*alt="([^"]*)"', html, re.S).group(1)
    assert alt.startswith("The photo with its face boxed")
    heads = re.findall(r"<th>(.*?)</th>", html)
    assert heads[:3] == ["Face", "Emotion", "angry"] and heads[-1].startswith("Box")
    assert 'class="scores stack"' in html and '<td data-label="happy"' in html


def test_the_live_page_has_a_heading_and_a_hint_for_no_face(app):
    html = app.test_client().get("/live").get_data(as_text=True)
    assert re.search(r"<h1[^>]*>Live emotion recognition</h1>", html)
    assert re.search(r'<p id="no-face-hint"[^>]*hidden>No face found', html)
