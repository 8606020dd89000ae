"""The live page when things go wrong: a camera that stops or gives no picture, a canvas that cannot encode,
a slow or silent server, a dropped connection, a hidden tab, a turned phone.

One real server (gunicorn, threads) for the browser tests; headless Chromium. Cameras are page scripts
(a canvas, or a track the test can end as a real camera's ends); ``RELAY`` stands between the page's
Socket.IO client and its WebSocket, to count the frames sent and to hold back, delay, drop or rewrite the
server's ``faces`` answers.
"""
from __future__ import annotations

import re

import pytest

from tests.browser import watch

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

pytestmark = pytest.mark.browser
SECONDS = 1000  # Playwright timeouts are in milliseconds
VIEWPORT = {"width": 1100, "height": 900}

RELAY = """
window.relay = { sent: 0, last: null, delayMs: 0, drop: false, hold: false, held: [], edit: null };
// Hand the held answers that pass ``test`` to the page (the first only, with ``first``); forget the others.
// ``drop``: every answer is forgotten, those delayed included.
window.relay.release = (test, first = false) => {
  const held = window.relay.held;
  window.relay.held = [];
  let n = 0;
  for (const h of held) if ((!first || n === 0) && test(h.answer)) { h.deliver(); n++; }
  return n;
};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  send(data) { if (typeof data !== "string") window.relay.sent++; return super.send(data); }  // a frame's JPEG
  get onmessage() { return super.onmessage; }
  set onmessage(handler) {
    super.onmessage = (event) => {
      const r = window.relay;
      if (typeof event.data !== "string" || !event.data.startsWith('42["faces",')) return handler(event);
      const [, msg] = JSON.parse(event.data.slice(2));
      r.last = msg;  // as the server sent it
      const answer = r.edit ? r.edit(msg) : msg;
      const deliver = () => { if (!r.drop) handler({ data: "42" + JSON.stringify(["faces", answer]) }); };
      if (r.hold) r.held.push({ answer, deliver });
      else if (r.delayMs) setTimeout(deliver, r.delayMs);
      else deliver();
    };
  }
};
"""
# A grey camera whose track the test ends (window.unplugCamera()) as the browser ends an unplugged camera's:
# readyState "ended" and an "ended" event (track.stop() fires none).
UNPLUGGABLE_CAMERA = """
navigator.mediaDevices.getUserMedia = async () => {
  const c = document.createElement("canvas"); c.width = 640; c.height = 480;
  const g = c.getContext("2d");
  const track = new MediaStreamTrackGenerator({ kind: "video" });
  const writer = track.writable.getWriter();
  let t = 0;
  const timer = setInterval(() => {
    g.fillStyle = "#888"; g.fillRect(0, 0, c.width, c.height);
    writer.write(new VideoFrame(c, { timestamp: (t += 33333) })).catch(() => {});
  }, 33);
  window.unplugCamera = () => { clearInterval(timer); writer.close(); };
  return new MediaStream([track]);
};
"""
# A camera that opens but never delivers a picture.
SILENT_CAMERA = """
navigator.mediaDevices.getUserMedia = async () => {
  window.cameraTrack = new MediaStreamTrackGenerator({ kind: "video" });
  return new MediaStream([window.cameraTrack]);
};
"""
# A grey camera that the test turns from landscape to portrait (window.turnCamera()).
TURNING_CAMERA = """
navigator.mediaDevices.getUserMedia = async () => {
  const c = document.createElement("canvas"); c.width = 640; c.height = 480;
  const g = c.getContext("2d");
  setInterval(() => { g.fillStyle = "#888"; g.fillRect(0, 0, c.width, c.height); }, 33);
  window.turnCamera = () => { c.width = 480; c.height = 640; };
  return c.captureStream(30);
};
"""
# canvas.toBlob gives null for its first three calls (as it does when the encoder fails).
FAILING_ENCODER = """
window.emptyBlobs = 0;
const toBlob = HTMLCanvasElement.prototype.toBlob;
HTMLCanvasElement.prototype.toBlob = function (callback, ...args) {
  if (window.emptyBlobs < 3) { window.emptyBlobs++; setTimeout(() => callback(null)); return; }
  return toBlob.call(this, callback, ...args);
};
"""
# Everything the live region that reads out the faces in view says, in order.
RECORD_LIVE_REGION = """
window.said = [];
document.addEventListener("DOMContentLoaded", () => {
  const live = document.getElementById("faces-live");
  new MutationObserver(() => window.said.push(live.textContent))
    .observe(live, { childList: true, characterData: true, subtree: true });
});
"""
# Headless Chromium never hides a page: play the browser's part (document.hidden, visibilitychange). Returns
# the overlay's face count right after the page's own handlers ran.
SET_HIDDEN = """(hidden) => {
  for (const [name, value] of [["hidden", hidden], ["visibilityState", hidden ? "hidden" : "visible"]]) {
    Object.defineProperty(document, name, { configurable: true, get: () => value });
  }
  document.dispatchEvent(new Event("visibilitychange"));
  return document.getElementById("overlay").dataset.faces;
}"""
# The two vertical sides of the box drawn in ``colour`` across rows 30-50 % of the overlay's height, as
# fractions of its width (null: none drawn).
BOX_SIDES = """(colour) => {
  const c = document.getElementById("overlay");
  const top = Math.round(0.3 * c.height), rows = Math.round(0.2 * c.height);
  const data = c.getContext("2d").getImageData(0, top, c.width, rows).data;
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(colour.slice(i, i + 2), 16));
  const cols = [];
  for (let x = 0; x < c.width; x++) {
    let hits = 0;
    for (let y = 0; y < rows; y++) {
      const i = (y * c.width + x) * 4;
      if (data[i + 3] > 200 && Math.abs(data[i] - r) < 12 && Math.abs(data[i + 1] - g) < 12
          && Math.abs(data[i + 2] - b) < 12) hits++;
    }
    if (hits > 0.6 * rows) cols.push(x);
  }
  return cols.length ? [cols[0] / c.width, cols[cols.length - 1] / c.width] : null;
}"""
# Every answer carries one face: the middle quarter of the frame it analysed, in that frame's pixels.
MIDDLE_FACE = """() => {
  window.relay.edit = (msg) => ({ ...msg, faces: [{ id: 1, box: [msg.width / 4, msg.height / 4, msg.width / 2,
    msg.height / 2], label: "happy", scores: { happy: 0 } }] });
}"""


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading")
    yield srv
    srv.stop()


def open_live(server, browser_factory, *scripts, camera=None, context=None):
    """The live page with ``scripts`` run before its own; returns (page, problems)."""
    context = context or browser_factory(camera).new_context(viewport=VIEWPORT)
    page = context.new_page()
    problems = watch(page)
    for script in scripts:
        page.add_init_script(script)
    page.goto(server.url + "/live")
    return page, problems


def test_live_page_says_when_the_camera_stops_and_can_start_it_again(server, browser_factory):
    page, problems = open_live(server, browser_factory, UNPLUGGABLE_CAMERA)
    status, toggle = page.locator("#status"), page.locator("#toggle")
    page.click("#toggle")
    expect(page.locator("#rtt")).not_to_have_text("–", timeout=20 * SECONDS)
    expect(status).to_have_text("Streaming")
    expect(toggle).to_have_text("Stop camera")

    page.evaluate("() => window.unplugCamera()")
    expect(status).to_contain_text("The camera stopped")
    expect(status).to_have_attribute("data-kind", "warn")
    expect(toggle).to_have_text("Start camera")
    expect(page.locator("#placeholder")).to_be_visible()
    for stat in ("#fps", "#rtt", "#server-ms"):
        expect(page.locator(stat)).to_have_text("–")

    page.click("#toggle")  # a press starts it again (the camera is back)
    expect(status).to_have_text("Streaming", timeout=10 * SECONDS)
    expect(toggle).to_have_text("Stop camera")
    assert problems == []


def test_live_page_gives_up_on_a_camera_that_gives_no_picture(server, browser_factory):
    page, problems = open_live(server, browser_factory, SILENT_CAMERA)
    page.click("#toggle")
    status = page.locator("#status")
    expect(status).to_contain_text("The camera gave no picture", timeout=10 * SECONDS)
    expect(status).to_have_attribute("data-kind", "error")
    expect(page.locator("#toggle")).to_have_text("Start camera")
    expect(page.locator("#toggle")).to_be_enabled()
    assert page.evaluate("() => window.cameraTrack.readyState") == "ended"  # the camera was let go
    assert problems == []


def test_live_page_goes_on_after_a_frame_the_canvas_could_not_encode(server, browser_factory, camera):
    page, problems = open_live(server, browser_factory, FAILING_ENCODER, camera=camera)
    page.click("#toggle")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    assert page.evaluate("() => window.emptyBlobs") == 3
    assert problems == []


def test_live_page_counts_late_answers_and_takes_off_boxes_no_answer_confirms(server, browser_factory, camera):
    page, problems = open_live(server, browser_factory, RELAY, camera=camera)
    page.evaluate("() => { window.relay.delayMs = 2000; }")  # every answer comes after the page's 1.5 s timeout
    page.click("#toggle")
    overlay, rtt = page.locator("#overlay"), page.locator("#rtt")
    expect(overlay).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    expect(rtt).to_have_text(re.compile(r"^\d+$"))
    assert int(rtt.text_content()) >= 2000
    # Each answer names the size of the frame it analysed (the camera's 640x480 here).
    assert page.evaluate("() => [window.relay.last.width, window.relay.last.height]") == [640, 480]

    page.evaluate("() => { window.relay.drop = true; }")  # no answer any more: the boxes do not stay
    expect(overlay).to_have_attribute("data-faces", "0", timeout=8 * SECONDS)
    expect(page.locator("#faces-list li")).to_have_count(0)
    expect(page.locator("#fps")).to_have_text("–")
    assert problems == []


def test_live_page_says_nothing_of_faces_while_offline_and_takes_back_its_warning(server, browser_factory, camera):
    context = browser_factory(camera).new_context(viewport=VIEWPORT)
    page, problems = open_live(server, browser_factory, RECORD_LIVE_REGION, context=context)
    status, live = page.locator("#status"), page.locator("#faces-live")
    page.click("#toggle")
    expect(live).to_have_text(re.compile(r"^Face 1: \w+$"), timeout=20 * SECONDS)

    context.set_offline(True)  # while streaming: no "No face in view", the connection is the news
    expect(status).to_have_attribute("data-kind", "warn", timeout=15 * SECONDS)
    expect(live).to_have_text("")

    page.click("#toggle")  # stopped while offline, the page then cannot reach the server...
    expect(status).to_have_text("Camera off.")
    expect(status).to_contain_text("Cannot reach the server", timeout=15 * SECONDS)
    context.set_offline(False)  # ...until it can: the warning goes
    expect(status).to_have_text("Camera off.", timeout=15 * SECONDS)
    expect(status).to_have_attribute("data-kind", "info")
    page.wait_for_timeout(500)
    assert "No face in view" not in page.evaluate("() => window.said")
    assert [p for p in problems if "ERR_INTERNET_DISCONNECTED" not in p] == []  # the browser's own, offline


def test_live_page_sends_nothing_while_hidden_and_starts_afresh_when_shown(server, browser_factory, camera):
    page, problems = open_live(server, browser_factory, RELAY, camera=camera)
    overlay, status = page.locator("#overlay"), page.locator("#status")
    page.click("#toggle")
    expect(overlay).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)

    page.evaluate(SET_HIDDEN, True)
    expect(status).to_have_text("Paused while this page is hidden.")
    page.wait_for_timeout(300)  # a frame already being encoded may still go
    sent = page.evaluate("() => window.relay.sent")
    page.wait_for_timeout(1000)
    assert page.evaluate("() => window.relay.sent") == sent

    assert page.evaluate(SET_HIDDEN, False) == "0"  # no boxes from before the pause
    expect(status).to_have_text("Streaming")
    expect(overlay).to_have_attribute("data-faces", "1", timeout=10 * SECONDS)
    assert page.evaluate("() => window.relay.sent") > sent
    assert problems == []


def test_live_page_draws_each_answer_in_the_frame_it_analysed(server, browser_factory):
    page, problems = open_live(server, browser_factory, RELAY, TURNING_CAMERA)
    happy = page.evaluate("async () => (await import('/static/js/stream.js')).COLOURS.happy")
    page.evaluate(MIDDLE_FACE)
    overlay = page.locator("#overlay")
    page.click("#toggle")
    expect(overlay).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)

    # The phone turns with an answer on its way: the boxes found in the old shape go at once...
    page.evaluate("() => { window.relay.hold = true; window.turnCamera(); }")
    page.wait_for_function("() => document.getElementById('stage').style.aspectRatio === '480 / 640'",
                           timeout=10 * SECONDS)
    assert overlay.get_attribute("data-faces") == "0"
    # ...and that answer, when it comes, is drawn in its own frame's shape: the middle of the stage.
    page.wait_for_function("() => window.relay.held.some((h) => h.answer.width === 640)", timeout=5 * SECONDS)
    assert page.evaluate("() => window.relay.release((a) => a.width === 640, true)") == 1
    page.wait_for_timeout(200)
    left, right = page.evaluate(BOX_SIDES, happy)
    assert abs(left - 0.25) < 0.04 and abs(right - 0.75) < 0.04, (left, right)

    # The first answer in the new shape starts afresh: drawn where it belongs from its first frame on.
    page.wait_for_function("() => window.relay.held.some((h) => h.answer.width === 480)", timeout=5 * SECONDS)
    left, right = page.evaluate("""async (colour) => {
      window.relay.release((a) => a.width === 480, true);
      await new Promise((r) => requestAnimationFrame(r));
      return (%s)(colour);
    }""" % BOX_SIDES, happy)
    assert abs(left - 0.25) < 0.04 and abs(right - 0.75) < 0.04, (left, right)
    assert problems == []


# requestAnimationFrame as a hidden tab has it: window.freezeFrames() holds every frame back (the browser draws
# nothing), window.thawFrames() runs the held ones, as a tab shown again does.
FREEZABLE_FRAMES = """
window.heldFrames = null;
const nativeFrame = window.requestAnimationFrame.bind(window);
window.requestAnimationFrame = (cb) => (window.heldFrames ? (window.heldFrames.push(cb), 0) : nativeFrame(cb));
window.freezeFrames = () => { window.heldFrames = []; };
window.thawFrames = () => {
  const held = window.heldFrames;
  window.heldFrames = null;
  for (const cb of held) cb(performance.now());
};
"""
# Every answer carries one face, a quarter of the frame wide, its left side at window.faceAt of the frame's width.
FACE_AT = """() => {
  window.faceAt = 0.25;
  window.relay.edit = (msg) => ({ ...msg, faces: [{ id: 1, box: [msg.width * window.faceAt, msg.height / 4,
    msg.width / 4, msg.height / 2], label: "happy", scores: { happy: 0 } }] });
}"""


def test_boxes_jump_to_their_place_after_frames_the_browser_did_not_draw(server, browser_factory):
    page, problems = open_live(server, browser_factory, RELAY, FREEZABLE_FRAMES, TURNING_CAMERA)
    happy = page.evaluate("async () => (await import('/static/js/stream.js')).COLOURS.happy")
    page.evaluate(FACE_AT)
    page.click("#toggle")
    expect(page.locator("#overlay")).to_have_attribute("data-faces", "1", timeout=20 * SECONDS)
    page.wait_for_timeout(500)
    left, right = page.evaluate(BOX_SIDES, happy)  # the video is mirrored: the face's left side is drawn at 0.75
    assert abs(left - 0.5) < 0.04 and abs(right - 0.75) < 0.04, (left, right)

    # A hidden tab: no frames drawn while the face moves across the picture and answers keep coming...
    sent = page.evaluate("() => { window.freezeFrames(); window.faceAt = 0.6; return window.relay.sent; }")
    page.wait_for_timeout(800)
    assert page.evaluate("() => window.relay.sent") > sent + 2
    # ...then shown again: the first frame drawn has the box where the face is, not on its way there.
    left, right = page.evaluate("(colour) => { window.thawFrames(); return (%s)(colour); }" % BOX_SIDES, happy)
    assert abs(left - 0.15) < 0.04 and abs(right - 0.4) < 0.04, (left, right)
    assert problems == []
