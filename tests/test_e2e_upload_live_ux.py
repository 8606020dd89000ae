"""End to end, in headless Chromium: what the upload and live pages tell a person.

The upload page refuses a photo over the limit before sending it, says "Choose a photo" where nothing can
be dropped, and shows every score on a phone; the live page says when no face is found, keeps the faces
in view at 1280x800 and does not move the video for a long message. One real server (gunicorn, threads).
"""
from __future__ import annotations

import pytest

from tests.browser import make_fake_camera, watch
from tests.conftest import require

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = pytest.mark.browser
SECONDS = 1000
MB = 1024 * 1024
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LAPTOP = {"width": 1280, "height": 800}
FACE_URL = "/test-only/face.jpg"  # served by page.route, not by the app
# A camera that shows a gray frame, or the face at FACE_URL while window.showFace is true.
SWITCHING_CAMERA = """
navigator.mediaDevices.getUserMedia = async () => {
  const c = document.createElement("canvas"); c.width = 640; c.height = 480;
  const g = c.getContext("2d");
  const face = new Image(); face.src = "%s"; await face.decode();
  const k = 480 / face.naturalHeight;
  window.showFace = false;
  setInterval(() => {
    g.fillStyle = "#888"; g.fillRect(0, 0, c.width, c.height);
    if (window.showFace) g.drawImage(face, (640 - face.naturalWidth * k) / 2, 0, face.naturalWidth * k, 480);
  }, 33);
  return c.captureStream(30);
};
""" % FACE_URL


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading", MAX_UPLOAD_BYTES=str(MB))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def obama(faces_dir):
    return require(faces_dir / "obama.jpg")


def test_upload_page_refuses_a_photo_over_the_limit_before_sending_it(server, browser_factory, obama, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(obama.read_bytes() + b"\0" * (int(1.5 * MB) - obama.stat().st_size))
    page = browser_factory().new_page(viewport=LAPTOP)
    problems = watch(page)
    posts = []
    page.on("request", lambda req: posts.append(req.url) if req.method == "POST" else None)
    page.goto(server.url + "/upload")
    expect(page.locator("#dz-title")).to_have_text("Drop a photo here or click to choose one")
    expect(page.locator(".dz-hint")).to_contain_text("up to 1 MB")

    page.set_input_files("#image", str(big))  # the page submits on change, unless the photo is too large
    expect(page.locator("#upload-error")).to_have_text("big.jpg: This photo is 1.5 MB; the limit is 1 MB.")
    expect(page.locator("#upload-error")).to_be_visible()
    expect(page.locator("#dz-file")).to_have_text("big.jpg (1.5 MB)")
    expect(page.locator("#busy")).to_be_hidden()
    page.wait_for_timeout(500)
    assert posts == [] and page.url == server.url + "/upload"

    # A photo within the limit goes, and the message from before goes with it.
    with page.expect_navigation(timeout=30 * SECONDS):
        page.set_input_files("#image", str(obama))
    expect(page.locator("#result")).to_have_attribute("data-faces", "1")
    expect(page.locator("#upload-error")).to_be_hidden()
    assert problems == []


def test_upload_page_refused_by_the_server_names_the_file_and_keeps_the_form(server, browser_factory, tmp_path):
    gif = tmp_path / "party.gif"
    gif.write_bytes(b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
                    b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
    page = browser_factory().new_page(viewport=LAPTOP)
    page.goto(server.url + "/upload")
    with page.expect_navigation(timeout=30 * SECONDS):
        page.set_input_files("#image", str(gif))
    expect(page.locator("#upload-error")).to_have_text(
        "party.gif: GIF files are not supported: use a JPEG, PNG or WebP photo.")
    expect(page.locator("#dz-file")).to_have_text("Not analysed: party.gif")
    expect(page.locator("#image")).to_be_attached()


def test_upload_page_on_a_phone_says_choose_and_shows_every_score(server, browser_factory, obama, tmp_path):
    page = browser_factory().new_context(**PHONE).new_page()
    problems = watch(page)
    page.goto(server.url + "/upload")
    expect(page.locator("#dz-title")).to_have_text("Choose a photo")  # nothing can be dropped with a finger
    with page.expect_navigation(timeout=30 * SECONDS):
        page.set_input_files("#image", str(obama))
    expect(page.locator("#result")).to_have_attribute("data-faces", "1")
    # Each face is a card: its emotion and all seven scores are on the screen, none scrolled off to the right.
    row = page.locator("tr.face-row").first
    for cell in [row.locator("td[data-label='Emotion']")] + [row.locator(f"td[data-label='{e}']") for e in
                                                             ("angry", "happy", "neutral")]:
        cell.scroll_into_view_if_needed()
        box = cell.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    expect(page.locator("#scroll-hint")).to_be_hidden()
    page.screenshot(path=str(tmp_path / "phone-upload.png"), full_page=True)

    # A window narrower than the table (but wider than a phone) scrolls it, and says so.
    page.set_viewport_size({"width": 720, "height": 900})
    expect(page.locator("#scroll-hint")).to_be_visible()
    page.set_viewport_size({"width": 1280, "height": 900})
    expect(page.locator("#scroll-hint")).to_be_hidden()
    assert problems == []


def test_live_page_says_when_no_face_is_found(server, browser_factory, obama, tmp_path):
    page = browser_factory().new_page(viewport=LAPTOP)
    problems = watch(page)
    page.route(f"**{FACE_URL}", lambda route: route.fulfill(body=obama.read_bytes(), content_type="image/jpeg"))
    page.add_init_script(SWITCHING_CAMERA)
    page.goto(server.url + "/live")
    hint = page.locator("#no-face-hint")
    expect(hint).to_be_hidden()
    page.click("#toggle")
    expect(page.locator("#rtt")).not_to_have_text("–", timeout=20 * SECONDS)  # answers come, none with a face
    expect(hint).to_be_visible(timeout=10 * SECONDS)
    expect(hint).to_contain_text("No face found")
    expect(hint).to_be_in_viewport()
    page.screenshot(path=str(tmp_path / "live-no-face.png"))

    page.evaluate("() => { window.showFace = true; }")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    expect(hint).to_be_hidden()
    page.evaluate("() => { window.showFace = false; }")
    expect(hint).to_be_visible(timeout=10 * SECONDS)
    page.click("#toggle")  # stop: no hint about a camera that is off
    expect(hint).to_be_hidden()
    assert problems == []


def test_student_page_says_when_no_face_is_found(server, browser_factory, obama):
    from tests.test_classroom_e2e import open_teacher

    browser = browser_factory()
    _teacher, _board, code = open_teacher(browser, server.url, email="noface@example.org")
    page = browser.new_context(viewport=LAPTOP).new_page()
    problems = watch(page)
    page.route(f"**{FACE_URL}", lambda route: route.fulfill(body=obama.read_bytes(), content_type="image/jpeg"))
    page.add_init_script(SWITCHING_CAMERA)
    page.goto(f"{server.url}/join/{code}")
    page.fill("#display_name", "Noor")
    page.check("#consent")
    page.click("#join-submit")
    page.wait_for_url("**/live?start=1")
    hint = page.locator("#no-face-hint")
    expect(page.locator("#sharing")).to_have_attribute("data-state", "on", timeout=20 * SECONDS)
    expect(hint).to_be_visible(timeout=20 * SECONDS)
    page.evaluate("() => { window.showFace = true; }")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    expect(hint).to_be_hidden()
    page.evaluate("() => { window.showFace = false; }")
    expect(hint).to_be_visible(timeout=10 * SECONDS)
    page.click("#stop")
    expect(hint).to_be_hidden()
    assert problems == []


def test_live_page_fits_a_laptop_screen(server, browser_factory, obama, tmp_path):
    camera = make_fake_camera(obama, tmp_path / "obama.y4m")
    page = browser_factory(camera).new_page(viewport=LAPTOP)
    page.goto(server.url + "/live")
    page.click("#toggle")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    face = page.locator("#faces-list li").first
    expect(face).to_be_in_viewport(ratio=1)  # the face list is not pushed below the fold by the video
    page.screenshot(path=str(tmp_path / "live-laptop.png"))


def test_live_page_keeps_the_video_in_place_for_a_long_message(server, browser_factory, tmp_path):
    # A camera whose permission prompt is not accepted: "Camera access was denied. Allow the camera for ..."
    page = browser_factory(fake_device=True, fake_ui=False).new_page(viewport=LAPTOP)
    page.goto(server.url + "/live")
    top = page.locator("#stage").bounding_box()["y"]
    page.click("#toggle")
    expect(page.locator("#status")).to_have_attribute("data-kind", "error", timeout=10 * SECONDS)
    expect(page.locator("#status")).to_contain_text("Camera access was denied")
    assert page.locator("#stage").bounding_box()["y"] == top
    page.screenshot(path=str(tmp_path / "live-denied.png"))
