"""End to end: the real server, a real headless Chromium, a fake camera showing a real face.

Every test runs against both serving modes: gunicorn's threads (production)
and eventlet (``python -m app``). The live and upload tests also refresh the
README's screenshots in docs/screenshots/.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.browser import SERVER_MODES, letterbox, make_fake_camera, watch
from tests.conftest import ROOT, require

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "docs" / "screenshots"
VIEWPORT = {"width": 1100, "height": 900}
EMOTION_LIST = re.compile(r"^(angry|disgust|fear|happy|sad|surprise|neutral)$")
SECONDS = 1000  # Playwright timeouts are in milliseconds


@pytest.fixture(scope="module")
def obama(faces_dir) -> Path:
    return require(faces_dir / "obama.jpg")


@pytest.fixture(scope="module")
def camera(obama, tmp_path_factory) -> Path:
    return make_fake_camera(obama, tmp_path_factory.mktemp("camera") / "obama.y4m")


@pytest.fixture(scope="module")
def face_in_frame(obama) -> tuple[int, int, int, int]:
    """Where the server's detector finds the face in the camera's frame (x, y, w, h)."""
    from app.vision.faces import FaceDetector
    from app.vision.preprocess import to_gray

    boxes = FaceDetector().detect(to_gray(letterbox(obama)))
    assert len(boxes) == 1, f"expected one face in the fake camera's frame, found {boxes}"
    return boxes[0]


@pytest.fixture(scope="module", params=SERVER_MODES)
def server(request, server_factory):
    """The real server, once per serving mode (stopped when the module's tests for it are done)."""
    srv = server_factory(request.param)
    yield srv
    srv.stop()


# Columns of the overlay where the box's colour fills most of a band of rows
# below the label tag and the score bars: the two vertical sides of the box.
BOX_SIDES_JS = """([colour, top, bottom]) => {
  const c = document.getElementById('overlay');
  const rows = Math.max(1, bottom - top);
  const data = c.getContext('2d').getImageData(0, top, c.width, rows).data;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  let drawn = 0;
  const cols = [];
  for (let x = 0; x < c.width; x++) {
    let hits = 0;
    for (let y = 0; y < rows; y++) {
      const i = (y * c.width + x) * 4;
      if (data[i + 3] > 0) drawn++;
      const near = Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12 && Math.abs(data[i + 2] - b) < 12;
      if (data[i + 3] > 200 && near) hits++;
    }
    if (hits > 0.6 * rows) cols.push(x);
  }
  return {width: c.width, height: c.height, drawn, cols};
}"""

DRAWN_PIXELS_JS = """() => {
  const c = document.getElementById('overlay');
  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
  return n;
}"""


def box_sides(page, colour: str, face, timeout_s: float = 10.0) -> tuple[int, int, float]:
    """Poll the overlay until the box's two sides are drawn; returns (left, right, canvas px per frame px)."""
    x, y, w, h = face
    deadline = time.monotonic() + timeout_s
    while True:
        scale = page.locator("#overlay").evaluate("c => c.width") / 640
        found = page.evaluate(BOX_SIDES_JS, [colour, round((y + 0.6 * h) * scale), round((y + 0.9 * h) * scale)])
        cols = found["cols"]
        if cols and cols[-1] - cols[0] > 0.5 * w * scale:
            return cols[0], cols[-1], scale
        if time.monotonic() > deadline:
            raise AssertionError(f"no box of colour {colour} drawn across the face's rows: {found}")
        page.wait_for_timeout(100)


def test_live_page_boxes_labels_and_scores_the_face(server, browser_factory, camera, face_in_frame):
    page = browser_factory(camera).new_page(viewport=VIEWPORT)
    problems = watch(page)
    page.goto(server.url + "/live")
    page.click("#toggle")

    overlay = page.locator("#overlay")
    expect(overlay).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    expect(overlay).to_have_attribute("data-labels", EMOTION_LIST)
    expect(page.locator("#faces-list li")).to_have_count(1)
    expect(page.locator("#faces-list li")).to_have_text(re.compile(r"^Face 1: \w+ \d+%$"))
    expect(page.locator("#fps")).to_have_text(re.compile(r"^\d+(\.\d)?$"), timeout=10 * SECONDS)
    expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+$"))
    expect(page.locator("#status")).to_have_attribute("data-kind", "ok")
    expect(page.locator("#placeholder")).to_be_hidden()
    expect(page.locator("#toggle")).to_have_text("Stop camera")
    assert float(page.locator("#fps").text_content()) > 0

    # Pixels really drawn: the box in its label's colour, where the face is on
    # the mirrored video. The photo's face sits off centre, so an unmirrored
    # box would land a quarter of its width or more away.
    fx, _, fw, _ = face_in_frame
    assert abs(2 * (fx + fw / 2) - 640) > 0.24 * fw, "face too near the centre to tell mirrored from not"
    assert page.evaluate(DRAWN_PIXELS_JS) > 2000
    label = overlay.get_attribute("data-labels")
    colour = page.evaluate("async (label) => (await import('/static/js/stream.js')).COLOURS[label]", label)
    left, right, scale = box_sides(page, colour, face_in_frame)
    expected_centre = (640 - (fx + fw / 2)) * scale
    assert abs((left + right) / 2 - expected_centre) < 0.12 * fw * scale, (left, right, expected_centre)
    assert abs((right - left) - fw * scale) < 0.25 * fw * scale, (left, right, fw * scale)

    if server.mode == "threading":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#live").screenshot(path=str(SCREENSHOTS / "live.png"))

    page.click("#toggle")  # stop: the overlay and the list are cleared
    expect(overlay).to_have_attribute("data-faces", "0")
    expect(page.locator("#faces-list li")).to_have_count(0)
    expect(page.locator("#placeholder")).to_be_visible()
    assert problems == []


def test_upload_page_scores_the_face(server, browser_factory, obama):
    page = browser_factory().new_page(viewport=VIEWPORT)
    problems = watch(page)
    page.goto(server.url + "/upload")
    with page.expect_navigation(timeout=30 * SECONDS):
        page.set_input_files("#image", str(obama))  # the page submits on change

    result = page.locator("#result")
    expect(result).to_have_attribute("data-faces", "1")
    expect(page.locator("tr.face-row")).to_have_count(1)
    expect(page.locator("tr.face-row .emo")).to_have_text(EMOTION_LIST)
    expect(result.locator("h2")).to_have_text("1 face found")
    assert page.locator("#annotated").evaluate("img => img.complete && img.naturalWidth") == 910
    assert problems == []

    if server.mode == "threading":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        result.screenshot(path=str(SCREENSHOTS / "upload.png"))


@pytest.mark.parametrize(("case", "launch", "message"), [
    # A camera exists but the permission prompt is not accepted: headless Chromium denies it.
    ("denied", {"fake_device": True, "fake_ui": False}, "Camera access was denied"),
    # The prompt would be accepted, but there is no camera at all.
    ("missing", {"fake_device": False, "fake_ui": True}, "No camera was found"),
])
def test_live_page_explains_a_camera_it_cannot_open(server, browser_factory, case, launch, message):
    page = browser_factory(**launch).new_page(viewport=VIEWPORT)
    problems = watch(page)
    page.goto(server.url + "/live")
    page.click("#toggle")

    status = page.locator("#status")
    expect(status).to_have_attribute("data-kind", "error", timeout=10 * SECONDS)
    expect(status).to_contain_text(message)
    expect(page.locator("#toggle")).to_have_text("Start camera")
    expect(page.locator("#toggle")).to_be_enabled()
    assert page.locator("#overlay").get_attribute("data-faces") in (None, "0")
    assert problems == []
