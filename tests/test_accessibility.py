"""Accessibility and layout: unique ids, accurate privacy wording, colour contrast, the pages on a phone.

The first tests render the pages with Flask's test client; the ``browser`` ones
drive headless Chromium against the real server and measure computed styles.
"""
from __future__ import annotations

import collections
import itertools
import re
from html.parser import HTMLParser

import pytest

from tests.test_security import logged_in_teacher

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PHONE = {"width": 390, "height": 844}
LAPTOP = {"width": 1280, "height": 800}


class IdCounter(HTMLParser):
    """Counts every id attribute of a page."""

    def __init__(self):
        super().__init__()
        self.ids: collections.Counter[str] = collections.Counter()

    def handle_starttag(self, tag, attrs):
        self.ids.update(value for name, value in attrs if name == "id")


def repeated_ids(html: str) -> dict[str, int]:
    parser = IdCounter()
    parser.feed(html)
    return {k: n for k, n in parser.ids.items() if n > 1}


def footer(html: str) -> str:
    return " ".join(re.search(r"<footer\b.*?</footer>", html, re.S).group(0).split())


def test_no_page_repeats_an_id(csrf_app):
    """The log-out form of the account bar must not repeat the page's own form's id="csrf_token"."""
    teacher, code = logged_in_teacher(csrf_app)
    anon = csrf_app.test_client()
    pages = [(teacher, p) for p in ("/", "/live", "/upload", "/classroom", "/classes", f"/classes/{code}",
                                    f"/classes/{code}/history", f"/classes/{code}/present")]
    pages += [(anon, p) for p in ("/register", "/login", "/classroom", f"/join/{code}")]
    for client, page in pages:
        resp = client.get(page)
        assert resp.status_code == 200, page
        html = resp.get_data(as_text=True)
        assert repeated_ids(html) == {}, page
        if client is teacher and page in ("/classroom", "/classes", f"/classes/{code}/history"):
            assert 'id="logout"' in html, page  # the account bar is there


def test_the_account_bar_token_has_no_id_and_log_out_still_works(csrf_app):
    teacher, code = logged_in_teacher(csrf_app)
    html = teacher.get(f"/classes/{code}").get_data(as_text=True)
    logout = re.search(r'<form[^>]*action="/logout".*?</form>', html, re.S).group(0)
    assert 'name="csrf_token"' in logout and 'id="csrf_token"' not in logout
    value = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', logout).group(1)
    teacher.post("/logout", data={})
    assert teacher.get("/classes").status_code == 200  # no token: still logged in
    teacher.post("/logout", data={"csrf_token": value})
    assert teacher.get("/classes").status_code == 302  # logged out: sent to the log-in page


def test_the_footer_says_what_each_part_stores(csrf_app):
    teacher, code = logged_in_teacher(csrf_app)
    for page in ("/", "/live", "/upload"):
        text = footer(teacher.get(page).get_data(as_text=True))
        assert "analysed in memory and never stored" in text, page
    anon = csrf_app.test_client()
    for client, page in [(teacher, "/classroom"), (teacher, "/classes"), (teacher, f"/classes/{code}"),
                         (teacher, f"/classes/{code}/history"), (anon, "/login"), (anon, f"/join/{code}")]:
        text = footer(client.get(page).get_data(as_text=True))
        assert "display names and per-second mood scores" in text and "30 days" in text, (page, text)


def test_my_classes_explains_privacy_inline(csrf_app):
    teacher, _code = logged_in_teacher(csrf_app)
    html = teacher.get("/classes").get_data(as_text=True)
    assert "README" not in html
    privacy = re.search(r'<section[^>]*id="privacy".*?</section>', html, re.S).group(0)
    for fact in ("Art. 5(1)(f)", "No images kept", "30 days", "Aggregate-only", "consent"):
        assert fact in privacy, fact


def test_history_explains_samples(csrf_app):
    teacher, code = logged_in_teacher(csrf_app)
    html = teacher.get(f"/classes/{code}/history").get_data(as_text=True)
    assert 'aria-describedby="samples-note"' in html
    assert re.search(r'id="samples-note">Samples: one per student per second', html)


# -- In Chromium --------------------------------------------------------------------------------

try:
    from playwright.sync_api import expect
except ImportError:  # the playwright_session fixture skips (or fails in CI) and says why
    expect = None

TEACHERS = itertools.count(1)

# WCAG 2.x contrast of computed colours; the background is that of the nearest ancestor that paints one. Text
# is seen through its own colour's alpha and the opacity of the element and of each of its ancestors.
CONTRAST_JS = """
window.wcag = (() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const opacity = (el) => {
    let o = 1;
    for (let e = el; e; e = e.parentElement) o *= Number(getComputedStyle(e).opacity);
    return o;
  };
  const seen = (el) => {
    const [r, g, b, a = 1] = rgb(getComputedStyle(el).color);
    const bg = background(el), o = a * opacity(el);
    return [r, g, b].map((v, i) => o * v + (1 - o) * bg[i]);
  };
  return {
    text: (el) => ratio(seen(el), background(el)),
    border: (el) => ratio(rgb(getComputedStyle(el).borderTopColor), background(el.parentElement)),
  };
})();
"""
# Adds one element per emotion, as the live page and the dashboard's JavaScript do, and measures them at once.
EMOTION_TEXT_JS = """
([containerSel, makeHtml, emotions]) => {
  const container = document.querySelector(containerSel);
  container.hidden = false;
  container.closest("[hidden]")?.removeAttribute("hidden");
  const out = {};
  for (const e of emotions) {
    const holder = document.createElement("div");
    holder.innerHTML = makeHtml.replaceAll("EMO", e);
    const node = holder.firstElementChild;
    container.append(node);
    const el = node.matches(".emo-" + e) ? node : node.querySelector(".emo-" + e);
    out[e] = Math.round(wcag.text(el) * 100) / 100;
  }
  return out;
}
"""


@pytest.fixture(scope="module")
def server(server_factory):
    srv = server_factory("threading")
    yield srv
    srv.stop()


def new_teacher(browser, url: str):
    """A registered teacher with one class (session running): (context, dashboard page, code)."""
    from tests.test_classroom_e2e import open_teacher

    return open_teacher(browser, url, email=f"a11y{next(TEACHERS)}@example.org")


def emotion_contrast(page, container: str, html: str) -> dict[str, float]:
    page.evaluate(CONTRAST_JS)
    return page.evaluate(EMOTION_TEXT_JS, [container, html, list(EMOTIONS)])


@pytest.mark.browser
def test_emotion_colours_are_readable_wherever_they_appear(server, browser_factory):
    browser = browser_factory()
    context, board, _code = new_teacher(browser, server.url)
    live = context.new_page()
    live.goto(server.url + "/live")
    found = {
        "live face chip": emotion_contrast(live, "#faces-list", '<li class="face-item emo-EMO">Face 1: EMO 80%</li>'),
        "dashboard tile": emotion_contrast(
            board, "#tiles", '<div class="tile"><strong class="tile-name">Sam</strong><span class="emo emo-EMO">EMO 80%</span></div>'),
        "dashboard tile, stopped sharing": emotion_contrast(
            board, "#tiles", '<div class="tile" data-status="left"><strong class="tile-name">Sam</strong>'
                             '<span class="emo emo-EMO">EMO 80%</span></div>'),
        "distribution list (panel)": emotion_contrast(
            board, "#dist-list", '<li><span class="emo emo-EMO">EMO</span> 20%</li>'),
    }
    low = {where: {e: r for e, r in ratios.items() if r < 4.5} for where, ratios in found.items()}
    assert not any(low.values()), f"emotion text below 4.5:1: {low}"


# For each emotion: the overlay's colour (stream.js) and the colour of text in that emotion (.emo-*).
PALETTE_JS = """
async (emotions) => {
  const { COLOURS } = await import("/static/js/stream.js");
  const probe = document.createElement("canvas").getContext("2d");
  const out = {};
  for (const e of emotions) {
    const span = document.createElement("span");
    span.className = "emo emo-" + e;
    document.body.append(span);
    probe.fillStyle = COLOURS[e];  // the canvas normalises "#rrggbb" and "rgb(...)" alike
    const overlay = probe.fillStyle;
    probe.fillStyle = getComputedStyle(span).color;
    out[e] = [overlay, probe.fillStyle];
    span.remove();
  }
  return out;
}
"""


@pytest.mark.browser
def test_overlay_charts_and_text_use_one_palette(server, browser_factory):
    page = browser_factory().new_page()
    page.goto(server.url + "/live")
    colours = page.evaluate(PALETTE_JS, list(EMOTIONS))
    differ = {e: pair for e, pair in colours.items() if pair[0] != pair[1]}
    assert not differ, f"overlay colour differs from the text colour: {differ}"
    assert len({overlay for overlay, _ in colours.values()}) == len(EMOTIONS), colours  # no fallback, no repeats


@pytest.mark.browser
def test_form_fields_stand_out_from_their_panel(server, browser_factory):
    browser = browser_factory()
    context, _board, _code = new_teacher(browser, server.url)
    anon = browser.new_context(viewport=LAPTOP)
    low = []
    for ctx, path, expected in ((anon, "/login", 2), (anon, "/register", 4), (context, "/classes", 1)):
        page = ctx.new_page()
        page.goto(server.url + path)
        page.evaluate(CONTRAST_JS)
        fields = page.evaluate("""() => [...document.querySelectorAll("label.field input, label.field select")].map(
            (el) => ({id: el.id, border: wcag.border(el), text: wcag.text(el)}))""")
        assert len(fields) >= expected, (path, fields)
        low += [(path, f) for f in fields if f["border"] < 3 or f["text"] < 4.5]
    assert not low, f"fields with a border below 3:1 or text below 4.5:1: {low}"


HEADER_JS = """() => {
  const links = [...document.querySelectorAll(".topbar .brand, .topbar nav a")];
  const tops = links.map((a) => Math.round(a.getBoundingClientRect().top));
  return {tops, height: document.querySelector(".topbar").getBoundingClientRect().height,
          overflow: document.documentElement.scrollWidth - window.innerWidth};
}"""


@pytest.mark.browser
def test_on_a_phone_the_header_is_one_line_and_history_fits(server, browser_factory):
    browser = browser_factory()
    context, _board, code = new_teacher(browser, server.url)
    phone = browser.new_context(viewport=PHONE, storage_state=context.storage_state())
    page = phone.new_page()
    for path in ("/", "/live", "/upload", "/classroom", "/classes", f"/classes/{code}/history"):
        page.goto(server.url + path)
        header = page.evaluate(HEADER_JS)
        assert max(header["tops"]) - min(header["tops"]) < 12, (path, header)  # one line
        assert header["height"] < 64 and header["overflow"] <= 0, (path, header)
    # The history: every column and the report links are on screen, nothing scrolls sideways.
    assert page.evaluate("""() => { const w = document.querySelector(".table-wrap");
                                    return w.scrollWidth - w.clientWidth; }""") <= 0
    row = page.locator("#sessions tbody tr").first
    for text in ("Started", "Duration", "Students", "Samples"):
        cell = row.locator(f'[data-label="{text}"]')
        expect(cell).to_be_visible()
        box = cell.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], (text, box)
    for link in ("view", "CSV"):
        box = row.get_by_role("link", name=link, exact=True).bounding_box()
        assert box and box["x"] + box["width"] <= PHONE["width"], (link, box)
    for text in ("Started", "Samples"):  # each cell says what it is, the row's header (a th) as the others
        assert text in page.evaluate("""(text) => getComputedStyle(
            document.querySelector(`#sessions [data-label="${text}"]`), "::before").content""", text)
