"""Accessibility of each page: titles, headings, the skip link, form errors, live regions, charts in words, motion.

The first tests render the pages with Flask's test client; the ``browser`` ones
drive headless Chromium against the real server.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from PIL import Image

from tests.browser import watch
from tests.conftest import make_app, require
from tests.imagegen import pil_bytes
from tests.test_upload_page_errors import send

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

SECONDS = 1000
MB = 1024 * 1024
GIF = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
       b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


class Elements(HTMLParser):
    """The attributes of each element that has an id (a bare attribute such as ``autofocus`` reads "")."""

    def __init__(self, html: str):
        super().__init__()
        self.by_id: dict[str, dict[str, str]] = {}
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        found = {name: value or "" for name, value in attrs}
        if "id" in found:
            self.by_id[found["id"]] = {"<tag>": tag, **found}


def elements(resp) -> dict[str, dict[str, str]]:
    return Elements(resp.get_data(as_text=True)).by_id


def autofocused(resp) -> list[str]:
    return [i for i, attrs in elements(resp).items() if "autofocus" in attrs]


def title(resp) -> str:
    return " ".join(re.search(r"<title>(.*?)</title>", resp.get_data(as_text=True), re.S).group(1).split())


@pytest.fixture(scope="module")
def upload_app():
    return make_app(WTF_CSRF_ENABLED=False, RATELIMIT_ENABLED=False)


# -- forms: the first field to fix has the cursor and its message --------------------------------

@pytest.mark.parametrize("data, focus", [
    ({}, "display_name"),
    ({"display_name": "Sam"}, "consent"),
    ({"consent": "y"}, "display_name"),
])
def test_a_refused_join_form_focuses_the_first_field_to_fix_and_ties_the_consent_error_to_its_box(
        capp, teacher, data, focus):
    assert autofocused(capp.test_client().get(f"/join/{teacher.code}")) == ["display_name"]
    resp = capp.test_client().post(f"/join/{teacher.code}", data=data)
    assert resp.status_code == 400
    assert autofocused(resp) == [focus]
    box = elements(resp)["consent"]
    if "consent" in data:
        assert "aria-invalid" not in box and "aria-describedby" not in box
        return
    assert box["aria-invalid"] == "true" and box["aria-describedby"] == "consent-error"
    assert re.search(r'id="consent-error">Tick the box to agree before you start.<', resp.get_data(as_text=True))


def test_a_refused_new_class_focuses_its_name(teacher):
    assert autofocused(teacher.client.get("/classes")) == []  # a list of classes first: no field takes the cursor
    resp = teacher.client.post("/classes", data={"name": "  "})
    assert resp.status_code == 400
    assert autofocused(resp) == ["name"] and elements(resp)["name"]["aria-invalid"] == "true"


def test_a_photo_refused_by_the_server_is_tied_to_the_file_field(upload_app):
    client = upload_app.test_client()
    form = elements(client.get("/upload"))
    assert not {"aria-invalid", "aria-describedby", "autofocus"} & set(form["image"])
    assert form["busy"]["role"] == "status"  # "Analysing…" is read out
    image = elements(send(client, GIF, "image/gif", "party.gif"))["image"]
    assert image["aria-invalid"] == "true" and image["aria-describedby"] == "upload-error" and "autofocus" in image


def test_the_drop_zone_says_a_chosen_photo_is_analysed_at_once(upload_app):
    html = upload_app.test_client().get("/upload").get_data(as_text=True)
    hint = re.search(r'<span class="dz-hint">(.*?)</span>', html, re.S).group(1)
    assert "Choosing a photo analyses it at once." in hint


# -- titles, headings, the skip link --------------------------------------------------------------

def test_each_page_has_its_own_title(capp, teacher, student):
    code = teacher.code
    anon = capp.test_client()
    pages = [(teacher.client, p) for p in ("/", "/live", "/upload", "/classes", f"/classes/{code}",
                                           f"/classes/{code}/history", f"/classes/{code}/present")]
    pages += [(anon, p) for p in ("/classroom", "/login", "/register", f"/join/{code}")]
    pages += [(student, f"/join/{code}/live")]
    titles = {}
    for client, page in pages:
        resp = client.get(page)
        assert resp.status_code == 200, page
        titles.setdefault(title(resp), []).append(page)
    assert {t: p for t, p in titles.items() if len(p) > 1} == {}
    assert titles["Projector view · Biology 7B · MoodLens"] == [f"/classes/{code}/present"]
    assert titles["Join Biology 7B · MoodLens"] == [f"/join/{code}"]
    assert not [t for t in titles if t.startswith("Error")]


def test_a_form_shown_again_with_errors_says_so_in_its_title(capp, teacher, upload_app):
    anon = capp.test_client()
    refused = [
        (anon.post("/login", data={"email": "nobody@example.org", "password": "wrong"}), "Log in"),
        (anon.post("/register", data={"name": "Ann"}), "Create a teacher account"),
        (anon.post("/join", data={"code": "zzzz-22"}), "Classroom"),
        (anon.post(f"/join/{teacher.code}", data={"display_name": "Sam"}), "Join Biology 7B"),
        (teacher.client.post("/classes", data={"name": ""}), "My classes"),
        (send(upload_app.test_client(), GIF, "image/gif", "party.gif"), "Analyse a photo"),
    ]
    assert [title(resp) for resp, _ in refused] == [f"Error: {page} · MoodLens" for _, page in refused]


def test_an_analysed_photo_is_titled_by_what_was_found(upload_app, faces_dir):
    client = upload_app.test_client()
    assert title(client.get("/upload")) == "Analyse a photo · MoodLens"
    found = send(client, require(faces_dir / "obama.jpg").read_bytes())
    assert title(found) == "1 face found · MoodLens"
    blank = send(client, pil_bytes(Image.new("RGB", (320, 240), (128, 128, 128)), "JPEG"))
    assert title(blank) == "No face found · MoodLens"


def test_the_student_page_has_a_heading(capp, teacher, student):
    html = student.get(f"/join/{teacher.code}/live").get_data(as_text=True)
    assert re.search(r'<h1 class="visually-hidden"[^>]*>Sharing with Biology 7B</h1>', html)


def test_each_history_row_is_named_by_its_start(teacher):
    html = teacher.client.get(f"/classes/{teacher.code}/history").get_data(as_text=True)
    row = re.search(r"<tr data-session=.*?</tr>", html, re.S).group(0)
    assert re.match(r'<tr data-session="\d+">\s*<th scope="row" data-label="Started"><time ', row), row


def test_every_page_starts_with_a_skip_link_to_its_content(capp, teacher, student):
    pages = [(teacher.client, p) for p in ("/", "/live", "/upload", "/classes", f"/classes/{teacher.code}")]
    pages += [(capp.test_client(), p) for p in ("/login", "/classroom", "/nowhere")]
    for client, page in pages:
        html = client.get(page).get_data(as_text=True)
        assert re.search(r'<body[^>]*>\s*<a class="skip-link" href="#main">Skip to content</a>', html), page
        assert html.count('<main id="main" tabindex="-1">') == 1, page


def test_the_charts_are_described_in_words(teacher):
    page = elements(teacher.client.get(f"/classes/{teacher.code}"))
    assert page["dist-chart"]["aria-describedby"] == "dist-list"
    assert page["timeline-chart"]["aria-describedby"] == "timeline-summary"
    assert page["timeline-summary"]["class"] == "visually-hidden"


def test_the_camera_button_has_no_pressed_state(capp):
    assert "aria-pressed" not in elements(capp.test_client().get("/live"))["toggle"]


# -- In Chromium --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading", CLASSROOM_PUSH_SECONDS="0.5", CLASSROOM_TIMELINE_STEP="1",
                         MAX_UPLOAD_BYTES=str(MB))
    yield srv
    srv.stop()


# Feeds a LiveStream answers of one face whose label follows ``phases`` ([labels, ms]: the labels in turn, one
# answer every 150 ms, for ms), as the server's answers would; returns what its live region said, and when.
FLICKER_JS = """
async (phases) => {
  const { LiveStream } = await import("/static/js/stream.js");
  const make = (tag) => document.body.appendChild(document.createElement(tag));
  const live = make("p");
  const stream = new LiveStream({ video: make("video"), overlay: make("canvas"), live });
  stream.running = true;
  const t0 = performance.now();
  const said = [];
  new MutationObserver(() => said.push([Math.round(performance.now() - t0), live.textContent]))
    .observe(live, { childList: true, characterData: true, subtree: true });
  let seq = 0;
  for (const [labels, ms] of phases) {
    const end = performance.now() + ms;
    for (let i = 0; performance.now() < end; i++) {
      const label = labels[i % labels.length];
      stream._onAnswer({ seq: ++seq, faces: [{ id: 1, box: [10, 10, 90, 90], label, scores: { [label]: 0.5 } }] }, null);
      await new Promise((r) => setTimeout(r, 150));
    }
  }
  stream.stop();
  return said;
}
"""


@pytest.mark.browser
def test_the_faces_live_region_says_only_a_steady_label_set_and_not_too_often(server, browser_factory):
    page = browser_factory().new_page()
    problems = watch(page)
    page.goto(server.url + "/live")
    said = page.evaluate(FLICKER_JS, [[["happy"], 2500], [["happy", "sad"], 3000], [["sad"], 3000],
                                      [["neutral"], 3500]])
    # A borderline face (happy, sad, happy, ... several times a second) is not read out at all; each label set
    # that holds is, once: after it has held 1.5 s, and at least 4 s after the one before.
    texts = [text for _, text in said]
    assert texts == ["Face 1: happy", "Face 1: sad", "Face 1: neutral", ""], said
    times = [ms for ms, _ in said]
    assert times[0] >= 1400 and times[1] >= 5500 + 1400, said
    assert times[2] - times[1] >= 3900, said
    assert problems == []


@pytest.mark.browser
def test_the_camera_button_says_what_it_does_without_a_pressed_state(server, browser_factory):
    page = browser_factory(fake_device=True).new_page()
    problems = watch(page)
    page.goto(server.url + "/live")
    toggle = page.locator("#toggle")
    toggle.click()
    expect(toggle).to_have_text("Stop camera", timeout=10 * SECONDS)
    assert toggle.get_attribute("aria-pressed") is None  # "Stop camera, pressed" would contradict itself
    toggle.click()
    expect(toggle).to_have_text("Start camera")
    assert toggle.get_attribute("aria-pressed") is None
    assert problems == []


@pytest.mark.browser
def test_the_skip_link_shows_on_focus_and_leads_to_the_content(server, browser_factory):
    page = browser_factory().new_page()
    page.goto(server.url + "/upload")
    link = page.locator(".skip-link")
    box = link.bounding_box()
    assert box is None or box["y"] + box["height"] <= 0, box  # out of sight until focused
    page.keyboard.press("Tab")
    expect(link).to_be_focused()
    box = link.bounding_box()
    assert box and box["y"] >= 0 and box["height"] > 10, box
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    page.keyboard.press("Tab")  # the next stop is in the content, past the header's links
    assert page.evaluate("() => document.activeElement.closest('main') !== null")


@pytest.mark.browser
def test_the_upload_fields_own_error_is_tied_to_it_and_cleared_with_it(server, browser_factory, faces_dir, tmp_path):
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"\0" * int(1.5 * MB))
    page = browser_factory().new_page()
    problems = watch(page)
    page.goto(server.url + "/upload")
    image = page.locator("#image")
    page.set_input_files("#image", str(big))  # refused by the page, before it is sent
    expect(page.locator("#upload-error")).to_contain_text("the limit is 1 MB")
    expect(image).to_have_attribute("aria-invalid", "true")
    expect(image).to_have_attribute("aria-describedby", "upload-error")

    # A photo within the limit: the error and its ties go, "Analysing…" is read out (the post is held back here).
    page.evaluate("() => document.getElementById('upload-form').addEventListener('submit', (e) => e.preventDefault())")
    page.set_input_files("#image", str(require(faces_dir / "obama.jpg")))
    expect(page.get_by_role("status").filter(has_text="Analysing…")).to_be_visible()
    expect(page.locator("#upload-error")).to_be_hidden()
    assert image.get_attribute("aria-invalid") is None and image.get_attribute("aria-describedby") is None
    assert problems == []


MOTION_JS = """() => {
  const dot = document.createElement("div");
  dot.innerHTML = '<div class="sharing" data-state="on"><span class="dot"></span></div><a class="card" href="#">x</a>';
  document.body.append(dot);
  const style = (sel) => getComputedStyle(dot.querySelector(sel));
  const chart = Chart.getChart("dist-chart");
  return { pulse: style(".dot").animationName, card: style(".card").transitionDuration,
           chart: chart.options.animation !== false };
}"""


@pytest.mark.browser
def test_reduced_motion_stops_the_pulse_the_hover_fade_and_the_chart_animation(server, browser_factory):
    from tests.test_classroom_e2e import new_teacher

    _ctx, board, _code = new_teacher(browser_factory, server)
    assert board.evaluate(MOTION_JS) == {"pulse": "pulse", "card": "0.15s", "chart": True}
    board.emulate_media(reduced_motion="reduce")
    board.reload()
    assert board.evaluate(MOTION_JS) == {"pulse": "none", "card": "0s", "chart": False}


LEGEND_JS = """() => {
  const box = Chart.getChart("timeline-chart").legend.legendHitBoxes[0];
  return { x: box.left + box.width / 2, y: box.top + box.height / 2 };
}"""


@pytest.mark.browser
def test_the_timeline_is_described_in_words_and_its_legend_hides_nothing(server, browser_factory, camera):
    from tests.test_classroom_e2e import new_teacher, open_student

    _ctx, board, code = new_teacher(browser_factory, server)
    problems = watch(board)
    expect(board.locator("#timeline-summary")).to_have_text("")
    _student, _ = open_student(browser_factory(camera), server.url, code, "Alice")
    summary = re.compile(r"^Latest, at \d\d:\d\d:\d\d: [a-z]+ \d+%(, [a-z]+ \d+%)*\. "
                         r"Most common over the session: [a-z]+\.$")
    expect(board.locator("#timeline-summary")).to_have_text(summary, timeout=15 * SECONDS)

    board.locator("#timeline-chart").click(position=board.evaluate(LEGEND_JS))  # "angry" in the legend
    board.wait_for_timeout(300)
    assert board.evaluate("() => Chart.getChart('timeline-chart').isDatasetVisible(0)")
    assert problems == []


@pytest.mark.browser
def test_the_end_of_a_session_is_read_out_and_the_student_keeps_the_keyboard(server, browser_factory, camera):
    from tests.test_classroom_e2e import new_teacher, open_student
    from tests.test_classroom_e2e_pages import end_session

    teacher_ctx, board, code = new_teacher(browser_factory, server)
    student, problems = open_student(browser_factory(camera), server.url, code, "Alice")
    student.focus("#stop")
    end_session(teacher_ctx, server.url, code)
    # The dashboard says it in a live region; the student's Stop button goes, and the focus with it, to the reason.
    expect(board.get_by_role("status").filter(has_text="The session has ended")).to_be_visible(timeout=10 * SECONDS)
    expect(student.locator("#status")).to_contain_text("ended the session", timeout=10 * SECONDS)
    expect(student.locator("#stop")).to_be_hidden()
    expect(student.locator("#status")).to_be_focused()
    assert problems == []
