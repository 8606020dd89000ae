"""What a review of the upload page and ``POST /api/v1/analyze`` found: one image per request, an image sent
as text said to be text, ``Retry-After`` on the API's 429, the page after going Back, advice that fits a
tiny photo, and a score table with a caption and row headers."""
from __future__ import annotations

import re

import pytest
from PIL import Image

from tests.conftest import make_app, require
from tests.imagegen import pil_bytes
from tests.test_upload_page_errors import alert

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

API = "/api/v1/analyze"
BOUNDARY = "moodlens-review"
SECONDS = 1000


@pytest.fixture(scope="module")
def app():
    return make_app(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)


@pytest.fixture(scope="module")
def blank() -> bytes:
    """A small photo without a face: analysed in a few milliseconds."""
    return pil_bytes(Image.new("RGB", (120, 90), (200, 200, 200)), "JPEG")


def part(data: bytes, filename: str | None = "photo.jpg", name: str = "image") -> bytes:
    """One multipart part; ``filename=None`` leaves the filename out, as ``curl -F image=<photo.jpg`` does."""
    named = "" if filename is None else f'; filename="{filename}"'
    kind = "" if filename is None else "Content-Type: image/jpeg\r\n"
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{named}\r\n{kind}\r\n'
    return head.encode() + data + b"\r\n"


def post(client, url: str, *parts: bytes):
    """POST ``parts`` as one multipart body (built in memory, exactly as given)."""
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return client.post(url, data=body, content_type=f"multipart/form-data; boundary={BOUNDARY}")


# -- 1. one image per request --------------------------------------------------------------------------

@pytest.mark.parametrize("second", ["file", "text"])
def test_more_than_one_image_is_refused_not_answered_for_the_first(app, blank, second):
    extra = part(blank, "second.jpg") if second == "file" else part(b"second", filename=None)
    api = post(app.test_client(), API, part(blank, "first.jpg"), extra)
    assert api.status_code == 400, api.json
    assert "2 parts in the form field 'image'" in api.json["error"]
    assert "send one image per request" in api.json["error"]


def test_the_page_refuses_several_photos_in_plain_words_naming_none(app, blank):
    resp = post(app.test_client(), "/upload", part(blank, "first.jpg"), part(blank, "second.jpg"))
    assert resp.status_code == 400
    assert alert(resp) == "Choose one photo at a time: the page analyses a single photo."  # not "first.jpg: ..."
    assert 'id="result"' not in resp.get_data(as_text=True)


# -- 2. an image sent as text; a nameless file ---------------------------------------------------------

def test_an_image_sent_as_text_is_said_to_be_text(app, blank):
    api = post(app.test_client(), API, part(blank, filename=None))
    assert api.status_code == 400
    error = api.json["error"]
    assert "sent as text" in error and "curl -F image=@photo.jpg" in error, error
    page = post(app.test_client(), "/upload", part(blank, filename=None))
    assert page.status_code == 400
    assert alert(page) == "The photo arrived as text, not as a file: choose the photo again."


def test_an_image_sent_as_text_over_the_form_field_limit_is_named_as_the_likely_cause(app, blank):
    big = blank + b"\0" * (app.config["MAX_FORM_MEMORY_SIZE"] + 1000 - len(blank))
    api = post(app.test_client(), API, part(big, filename=None))
    assert api.status_code == 413
    error = api.json["error"]
    assert "1000 form fields" in error and "without a filename" in error and "curl -F image=@photo.jpg" in error


def test_a_file_with_an_empty_filename_is_judged_by_its_bytes(app, blank):
    client = app.test_client()
    resp = post(client, API, part(blank, filename=""))  # no Content-Length of its own, as no client sends one
    assert resp.status_code == 200, resp.json
    assert (resp.json["width"], resp.json["height"]) == (120, 90)
    # Nothing chosen in a browser's form: a nameless, empty part.
    empty = post(client, API, part(b"", filename=""))
    assert empty.status_code == 400 and empty.json["error"] == "no file in the form field 'image'"
    assert alert(post(client, "/upload", part(b"", filename=""))) == "Choose a photo first."


# -- 3. Retry-After on the API's 429 -------------------------------------------------------------------

def test_the_api_429_says_when_to_retry_as_the_page_does():
    app = make_app(ANALYZE_RATE_LIMIT="1 per minute", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    assert client.post(API, data=b"nope", content_type="image/jpeg").status_code == 400
    api = client.post(API, data=b"nope", content_type="image/jpeg")
    assert api.status_code == 429 and api.is_json
    assert "Retry-After" in api.headers, dict(api.headers)
    seconds = int(api.headers["Retry-After"])
    assert 1 <= seconds <= 60
    assert f"wait {seconds} second{'s' if seconds != 1 else ''}, then try again" in api.json["error"]
    page = post(client, "/upload", part(b"nope"))
    assert page.status_code == 429 and 1 <= int(page.headers["Retry-After"]) <= 60


def test_the_api_429_of_an_hourly_limit_says_the_wait_in_minutes():
    """Retry-After stays exact; the message says the wait as a person reads it, as the pages do."""
    app = make_app(ANALYZE_RATE_LIMIT="1 per hour", WTF_CSRF_ENABLED=False)
    client = app.test_client()
    assert client.post(API, data=b"nope", content_type="image/jpeg").status_code == 400
    api = client.post(API, data=b"nope", content_type="image/jpeg")
    assert api.status_code == 429 and 3500 <= int(api.headers["Retry-After"]) <= 3600
    assert api.json["error"] == ("too many requests from this client (limit: 1 per 1 hour): wait about 60 minutes, "
                                 "then try again"), api.json


# -- 5. advice that fits a tiny photo ------------------------------------------------------------------

def advice(resp) -> str:
    return re.search(r'<p id="no-face-advice">(.*?)</p>', resp.get_data(as_text=True), re.S).group(1)


def test_a_photo_smaller_than_a_findable_face_is_called_too_small(app):
    tiny = pil_bytes(Image.new("RGB", (36, 24), (200, 200, 200)), "PNG")
    text = advice(post(app.test_client(), "/upload", part(tiny, "icon.png")))
    assert text.startswith("This photo is only 36×24 pixels: too small to find a face in."), text
    assert "at least about" not in text


def test_a_photo_large_enough_keeps_the_advice_about_face_sizes(app, blank):
    text = advice(post(app.test_client(), "/upload", part(blank)))
    assert text.startswith("Try a photo where faces look towards the camera and are at least about 40 pixels")


# -- 6. the score table's semantics --------------------------------------------------------------------

def test_the_score_table_has_a_caption_and_each_face_number_heads_its_row(app, faces_dir):
    face = require(faces_dir / "obama.jpg").read_bytes()
    html = post(app.test_client(), "/upload", part(face)).get_data(as_text=True)
    table = re.search(r'<div class="table-wrap" id="scores-wrap"[^>]*>\s*<table[^>]*>\s*(<caption[^>]*>.*?</caption>)',
                      html, re.S)
    assert table, html[html.find('id="scores-wrap"') - 10:][:400]
    caption = table.group(1)
    assert re.fullmatch(r'<caption class="visually-hidden" id="scores-caption">Scores per face</caption>', caption)
    wrap = re.search(r'<div class="table-wrap" id="scores-wrap"[^>]*>', html).group(0)
    assert 'aria-labelledby="scores-caption"' in wrap and "aria-label=" not in wrap  # one name, the caption's
    rows = re.findall(r'<tr class="face-row"[^>]*>\s*(<t[hd][^>]*>[^<]*</t[hd]>)', html)
    assert rows == ['<th scope="row" data-label="Face">1</th>']


# -- 1 and 4 in the browser: several photos dropped; Back to the page ----------------------------------

@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading")
    yield srv
    srv.stop()


DROP_TWO = """() => {
  const dt = new DataTransfer();
  for (const name of ["one.jpg", "two.jpg"]) dt.items.add(new File([new Uint8Array(2000)], name, {type: "image/jpeg"}));
  const zone = document.getElementById("dropzone");
  for (const type of ["dragenter", "dragover", "drop"])
    zone.dispatchEvent(new DragEvent(type, {dataTransfer: dt, bubbles: true, cancelable: true}));
}"""


@pytest.mark.browser
def test_dropping_several_photos_says_one_at_a_time_and_sends_nothing(server, browser_factory):
    page = browser_factory().new_page()
    posts = []
    page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
    page.goto(server.url + "/upload")
    page.evaluate(DROP_TWO)
    expect(page.locator("#upload-error")).to_have_text("Drop one photo at a time: 2 files were dropped.")
    expect(page.locator("#upload-error")).to_be_visible()
    expect(page.locator("#busy")).to_be_hidden()
    page.wait_for_timeout(500)
    assert posts == [] and page.url == server.url + "/upload"
    assert page.evaluate("() => document.getElementById('image').files.length") == 0


@pytest.mark.browser
def test_back_to_the_page_from_the_back_forward_cache_is_not_still_analysing(server, browser_factory, faces_dir):
    # Playwright's Chromium keeps no back/forward cache; this is the event a restored page gets from one.
    obama = require(faces_dir / "obama.jpg")
    page = browser_factory().new_page()
    page.goto(server.url + "/upload")
    # The photo is submitted on choice; held back here, the page stays as it was when it went.
    page.evaluate("() => document.getElementById('upload-form').addEventListener('submit', (e) => e.preventDefault())")
    page.set_input_files("#image", str(obama))
    expect(page.locator("#busy")).to_be_visible()
    expect(page.locator("#dz-file")).to_contain_text("obama.jpg")
    page.evaluate("() => window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: true}))")
    expect(page.locator("#busy")).to_be_hidden()
    expect(page.locator("#dz-file")).to_have_text("")
    assert page.evaluate("() => document.getElementById('image').files.length") == 0
    # A page loaded afresh is left alone.
    page.evaluate("() => { document.getElementById('busy').hidden = false; "
                  "window.dispatchEvent(new PageTransitionEvent('pageshow', {persisted: false})); }")
    expect(page.locator("#busy")).to_be_visible()
