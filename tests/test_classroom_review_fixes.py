"""The teacher's classroom pages after review: a long session's timeline, round time ticks, percentages that add
up, long absences, a running session's report, one tile per rejoining student, a class without any session.

The server side through the Flask and Socket.IO test clients; the charts' JavaScript in headless Chromium on a
page that loads classroom-charts.js with the real Chart.js (no server: the files are served by the test).
"""
from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from app.classroom.aggregate import EMOTIONS, ClassAggregate, Record
from app.classroom.models import Student
from app.classroom.service import NAMESPACE
from app.classroom.storage import purge_expired
from app.extensions import db
from app.vendor import FILES as VENDORED
from app.vendor import NODE_MODULES
from tests.classroom_fixtures import STUDENT_AUTH, create_class, join
from tests.conftest import ROOT


def one_hot(emotion: str) -> list[float]:
    return [1.0 if e == emotion else 0.0 for e in EMOTIONS]


def face(emotion: str) -> dict:
    """A frame's one face, entirely ``emotion``."""
    return {"id": 1, "box": [0, 0, 80, 80], "label": emotion, "scores": dict(zip(EMOTIONS, one_hot(emotion)))}


def dashboard_summary(sockets, teacher) -> dict:
    """The full summary a dashboard gets when it joins the class's room."""
    sc = sockets(teacher.client, namespace=NAMESPACE)
    ack = sc.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
    assert ack["ok"], ack
    return ack["summary"]


def only_student(capp) -> tuple[int, int]:
    """(student id, session id) of the one student who joined."""
    with capp.app_context():
        sam = db.session.scalar(select(Student))
        return sam.id, sam.session_id


def students(capp) -> int:
    with capp.app_context():
        return db.session.scalar(select(func.count(Student.id)))


# -- 1. a dashboard opened more than 2 h into a class -----------------------------------------------

def store_history(capp, hours: float) -> int:
    """``hours`` of one student's stored seconds (one every 5 s) up to half a minute ago; returns the first."""
    service = capp.extensions["classroom"]
    sam, session_id = only_student(capp)
    now = int(time.time())
    start = now - int(hours * 3600)
    start -= start % 60
    seconds = range(start, now - 30, service.settings.timeline_step)
    service.writer.put(session_id, [Record.from_means(sam, s, one_hot("happy"), 2, 2) for s in seconds])
    assert service.writer.flush() == len(seconds)
    return start


def test_a_dashboard_opened_late_gets_the_start_of_the_session(capp, teacher, student, sockets):
    service = capp.extensions["classroom"]
    step, kept = service.settings.timeline_step, service.settings.timeline_points
    start = store_history(capp, 5)
    timeline = dashboard_summary(sockets, teacher)["timeline"]
    # The part the live view no longer keeps (older than 2 h) comes from storage, coarser ...
    older = [p for p in timeline if "step" in p]
    assert older and len(older) <= 720 and all(p["step"] > step and p["step"] % step == 0 for p in older)
    assert timeline[0]["second"] == start - start % older[0]["step"]
    assert timeline[:len(older)] == older
    # ... then the live points, in order, up to now.
    assert all(a["second"] < b["second"] for a, b in itertools.pairwise(timeline))
    assert len(timeline) - len(older) >= kept
    assert timeline[-1]["second"] >= int(time.time()) - 60
    # A second tab, and a script reading the API, get the same history.
    assert dashboard_summary(sockets, teacher)["timeline"][:len(older)] == older
    api = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert api["timeline"][:len(older)] == older


def test_a_database_that_fails_leaves_the_dashboard_its_live_timeline(capp, teacher, student, sockets, monkeypatch):
    service = capp.extensions["classroom"]
    store_history(capp, 3)

    def hung(*_args):
        raise TimeoutError("no answer from the database within 2 s")

    monkeypatch.setattr(service, "stored_records", hung)
    timeline = dashboard_summary(sockets, teacher)["timeline"]
    assert len(timeline) >= service.settings.timeline_points and not any("step" in p for p in timeline)


# -- 5. the report of a running session ------------------------------------------------------------

def test_a_running_sessions_report_shows_the_whole_session_so_far(capp, teacher, student):
    service = capp.extensions["classroom"]
    sam, session_id = only_student(capp)
    with capp.app_context():
        agg = service.aggregate(db.session.get(Student, sam).session)
    now = time.time()
    agg.join(sam, "Sam", "sam-tab", now=now - 120)
    for i in range(30):  # half a minute of happy frames, a while ago
        agg.add(sam, [face("happy")], now=now - 100 + i)
    for i in range(3):  # the last few seconds (the live window): neutral
        agg.add(sam, [face("neutral")], now=now - 3 + i)
    agg.roll(now + 1)  # the ticker's part: close the seconds and queue them; the flush is left to the report
    service.writer.put(session_id, agg.drain())

    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood?session={session_id}").json
    assert body["session"]["running"] is True and body["session"]["ended"] is None
    assert body["distribution"]["happy"] > 0.85  # the whole session, not its last 10 s
    assert body["timeline"][0]["second"] <= now - 95 and body["timeline"][-1]["second"] >= now - 10
    assert body["per_student"] == [{"id": sam, "name": "Sam", "frames": 33, "label": "happy",
                                    "distribution": body["per_student"][0]["distribution"]}]
    # However the id is written (a leading zero), naming the session asks for all of it.
    padded = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood?session=0{session_id}").json
    assert padded["distribution"] == body["distribution"]
    # The dashboard's figures (no ?session) stay live: the last 10 s.
    live = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert live["distribution"]["neutral"] == pytest.approx(1.0) and live["students"] == 1

    page = teacher.client.get(f"/classes/{teacher.code}/sessions/{session_id}").get_data(as_text=True)
    said = re.search(r'<span id="session-running">(.*?)</span>\s*</p>', page, re.S)
    assert said and "the whole session so far (running)" in " ".join(said.group(1).split()), page[:3000]


def test_an_ended_sessions_report_is_the_whole_session(capp, teacher, student):
    _, session_id = only_student(capp)
    teacher.client.post(f"/classes/{teacher.code}/end")
    assert teacher.client.get(f"/api/v1/classes/{teacher.code}/mood?session={session_id}").json["session"][
        "running"] is False
    page = teacher.client.get(f"/classes/{teacher.code}/sessions/{session_id}").get_data(as_text=True)
    assert "<h2>Class mood over the whole session</h2>" in page and "so far" not in page


# -- 6. one tile per student, present ones first ----------------------------------------------------

def test_a_browser_that_joins_again_is_the_same_student(capp, teacher, student, sockets):
    live = f"/join/{teacher.code}/live"
    first = sockets(student, auth=STUDENT_AUTH)
    assert first.is_connected()
    first.disconnect()  # the page crashed: the connection is lost

    reopened = student.get(f"/join/{teacher.code}").get_data(as_text=True)  # the join link, opened again
    assert 'id="rejoin"' in reopened and "<strong>Sam</strong>" in reopened and f'href="{live}"' in reopened
    assert re.search(r'<input[^>]*id="display_name"[^>]*value="Sam"', reopened)
    again = join(student, teacher.code, "sam")  # agreed again, under the same name
    assert again.status_code == 302 and again.headers["Location"].endswith(f"{live}?start=1")
    assert students(capp) == 1
    assert sockets(student, auth=STUDENT_AUTH).is_connected()
    (tile,) = dashboard_summary(sockets, teacher)["per_student"]
    assert tile["name"] == "Sam" and tile["status"] != "lost"


def test_another_name_on_the_same_browser_is_another_student(capp, teacher, student, sockets):
    sam_tab = sockets(student, auth=STUDENT_AUTH)
    assert join(student, teacher.code, "Kim").status_code == 302
    assert students(capp) == 2
    assert [e["args"][0]["reason"] for e in sam_tab.get_received() if e["name"] == "classroom_ended"] == ["left"]
    tiles = dashboard_summary(sockets, teacher)["per_student"]
    assert [(t["name"], t["status"]) for t in tiles] == [("Sam", "left")]  # Kim has not connected yet


def test_a_student_who_left_or_whose_session_ended_joins_anew(capp, teacher, student):
    student.post(f"/join/{teacher.code}/leave")
    assert 'id="rejoin"' not in student.get(f"/join/{teacher.code}").get_data(as_text=True)
    assert join(student, teacher.code, "Sam").status_code == 302
    assert students(capp) == 2
    teacher.client.post(f"/classes/{teacher.code}/end")
    teacher.client.post(f"/classes/{teacher.code}/start")
    assert 'id="rejoin"' not in student.get(f"/join/{teacher.code}").get_data(as_text=True)  # that session is over
    assert join(student, teacher.code, "Sam").status_code == 302
    assert students(capp) == 3


def test_students_who_left_come_after_those_present():
    agg = ClassAggregate(1, "ABC234", "Biology", aggregate_only=False, started=0.0)
    for sid, name in enumerate(["Adam", "Zoe", "Bea", "Yann"]):
        agg.join(sid, name, f"tab-{sid}", now=10.0)
    agg.leave(0, "tab-0", now=14.0, dropped=True)   # Adam: connection lost
    agg.leave(2, "tab-2", now=14.0)                 # Bea: stopped
    tiles = agg.summary(now=15.0)["per_student"]
    assert [(t["name"], t["status"]) for t in tiles] == [
        ("Yann", "no-face"), ("Zoe", "no-face"), ("Adam", "lost"), ("Bea", "left")]


# -- 7. a class without any session ----------------------------------------------------------------

def test_a_class_without_any_session_has_no_student_yet(capp, teacher, sockets):
    hidden = create_class(teacher.client, "Art 5C", aggregate_only=True)
    for code in (teacher.code, hidden):
        teacher.client.post(f"/classes/{code}/end")
    with capp.app_context():
        assert purge_expired(1, now=time.time() + 3 * 86400)["sessions"] == 2  # retention deleted them
    body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
    assert body["session"] is None and body["per_student"] == []  # an empty list: nobody, not "aggregate-only"
    assert dashboard_summary(sockets, teacher)["per_student"] == []
    assert "per_student" not in teacher.client.get(f"/api/v1/classes/{hidden}/mood").json


# -- 1-4. the charts' JavaScript, in Chromium --------------------------------------------------------

ZONE = "Asia/Kolkata"  # 5:30 off UTC: a whole hour there is not a whole hour in UTC
ORIGIN = "http://moodlens.test"
HARNESS = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>charts</title></head><body>
<div style="width: 900px; height: 320px"><canvas id="timeline-chart" aria-describedby="timeline-summary"></canvas></div>
<p id="timeline-summary"></p>
<div style="width: 400px; height: 300px"><canvas id="dist-chart"></canvas></div><ul id="dist-list"></ul>
<p id="aggregate-note" hidden></p><p id="tiles-empty" hidden></p><div id="tiles"></div>
<script src="/vendor/chart.umd.min.js"></script>
<script type="module">import * as charts from "/static/js/classroom-charts.js"; window.charts = charts;</script>
</body></html>"""
FILES = {f"/vendor/{name}": NODE_MODULES / rel for name, rel in VENDORED.items()}  # as the pages load them


def serve(route):
    """The harness page, the static files and the two vendored libraries; nothing else."""
    path = route.request.url.removeprefix(ORIGIN).split("?")[0]
    if path == "/":
        return route.fulfill(body=HARNESS, content_type="text/html")
    file = FILES.get(path) or (ROOT / path.lstrip("/") if path.startswith("/static/js/") else None)
    if file is None or not file.is_file():
        return route.fulfill(status=404, body="")
    return route.fulfill(body=file.read_bytes(), content_type="text/javascript")


@pytest.fixture
def charts(browser_factory):
    """A page in ``ZONE`` with ``window.charts`` (classroom-charts.js) loaded."""
    context = browser_factory().new_context(timezone_id=ZONE, locale="en-GB", viewport={"width": 1280, "height": 900})
    context.route(f"{ORIGIN}/**", serve)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{ORIGIN}/")
    page.wait_for_function("() => window.charts", timeout=10_000)
    yield page
    assert errors == []


def local(hhmmss: str) -> int:
    """Unix seconds of a local time of day in ``ZONE`` (on a fixed date)."""
    return int(datetime.fromisoformat(f"2026-03-02T{hhmmss}").replace(tzinfo=ZoneInfo(ZONE)).timestamp())


DRAW_TIMELINE = """([points, step]) => {
  const chart = charts.timelineChart(document.getElementById('timeline-chart'));
  charts.showTimeline(chart, points, step);
  const x = chart.scales.x;
  const out = { values: x.ticks.map((t) => t.value), labels: x.ticks.map((t) => String(t.label)),
                summary: document.getElementById('timeline-summary').textContent,
                gaps: chart.data.datasets[0].data.filter((p) => p.y === null).length };
  chart.destroy();
  return out;
}"""


def points(first: int, last: int, step: int = 5, emotion: str = "happy") -> list[dict]:
    return [{"second": s, "distribution": dict(zip(EMOTIONS, one_hot(emotion)))} for s in range(first, last + 1, step)]


@pytest.mark.browser
@pytest.mark.parametrize("first, last, tick", [
    ("08:03:20", "09:43:20", 600),    # 100 min: every 10 min
    ("08:03:20", "08:23:20", 120),    # 20 min: every 2 min
    ("08:03:20", "14:03:20", 3600),   # 6 h: every whole hour of the viewer's clock (not of UTC)
    ("08:03:20", "10:03:20", 900),    # 2 h: every quarter of an hour
])
def test_time_ticks_fall_on_round_local_times(charts, first, last, tick):
    start, end = local(first), local(last)
    got = charts.evaluate(DRAW_TIMELINE, [points(start, end), 5])
    values, labels = got["values"], got["labels"]
    assert 4 <= len(values) <= 11, got
    assert start not in values  # no tick forced at the first point (08:03:20)
    offset = 5 * 3600 + 30 * 60
    assert all((v + offset) % tick == 0 and start <= v <= end for v in values), got
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in labels), labels
    assert labels[0] == datetime.fromtimestamp(values[0], ZoneInfo(ZONE)).strftime("%H:%M")


@pytest.mark.browser
def test_shares_listed_together_add_up_to_100(charts):
    assert charts.evaluate("charts.percents([0.335, 0.335, 0.33])") == [34, 33, 33]
    assert charts.evaluate("charts.percents([0.29, 0.71])") == [29, 71]
    assert charts.evaluate("charts.percents([0, 0, 0])") == [0, 0, 0]
    shown = charts.evaluate("""(dists) => dists.map((dist) => {
      const chart = charts.distributionChart(document.getElementById('dist-chart'));
      charts.showDistribution(chart, document.getElementById('dist-list'), dist);
      chart.destroy();
      return [...document.querySelectorAll('#dist-list strong')].map((el) => el.textContent);
    })""", [dict(zip(EMOTIONS, [0.335, 0.335, 0.33, 0, 0, 0, 0])), dict.fromkeys(EMOTIONS, 1 / 7)])
    assert shown[0] == ["34%", "33%", "33%", "0%", "0%", "0%", "0%"]
    assert sum(int(v.rstrip("%")) for v in shown[1]) == 100  # not 7 × 14 = 98
    # The timeline in words lists the latest shares the same way.
    latest = [{"second": local("08:00:00"), "distribution": dict(zip(EMOTIONS, [0.335, 0.335, 0.33, 0, 0, 0, 0]))}]
    assert "angry 34%, disgust 33%, fear 33%." in charts.evaluate(DRAW_TIMELINE, [latest, 5])["summary"]


@pytest.mark.browser
def test_long_absences_are_said_in_minutes_and_hours(charts):
    seen = charts.evaluate("""(tiles) => {
      charts.showTiles(document.getElementById('tiles'), document.getElementById('aggregate-note'), tiles);
      return [...document.querySelectorAll('#tiles .tile span.muted')].map((el) => el.textContent);
    }""", [{"name": n, "status": st, "seen_ago": ago} for n, st, ago in [
        ("Ann", "active", 0.4), ("Ben", "stale", 42), ("Cy", "lost", 300), ("Di", "left", 3725), ("Ed", "left", 7200)]])
    assert seen == ["seen 0 s ago", "seen 42 s ago · camera stopped", "seen 5 min ago · connection lost",
                    "seen 1 h 2 min ago · stopped sharing", "seen 2 h ago · stopped sharing"]


@pytest.mark.browser
def test_the_coarser_start_of_a_long_session_is_neither_a_gap_nor_outweighed(charts):
    base = local("08:00:00")
    coarse = [{**p, "step": 60} for p in points(base, base + 60, 60, "neutral")]  # 2 min, from storage
    fine = points(base + 120, base + 130, 5, "happy")                              # 15 s, live
    got = charts.evaluate(DRAW_TIMELINE, [coarse + fine, 5])
    assert got["gaps"] == 0, got
    assert got["summary"].endswith("Most common over the session: neutral."), got
    # A real gap in the coarse part is still one.
    holed = [coarse[0], {**coarse[1], "second": base + 180}, *points(base + 240, base + 250, 5)]
    assert charts.evaluate(DRAW_TIMELINE, [holed, 5])["gaps"] == 1



# -- 6. a class deleted while its dashboard shows an ended session ------------------------------------------

def test_a_dashboard_on_an_ended_session_hears_that_the_class_was_deleted(capp, teacher, student, sockets):
    board = sockets(teacher.client, namespace=NAMESPACE)
    assert board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)["ok"]
    assert teacher.client.post(f"/classes/{teacher.code}/end").status_code == 302
    ended = [m for m in board.get_received(NAMESPACE) if m["name"] == "session_ended"]
    assert [m["args"][0]["reason"] for m in ended] == ["ended"]

    assert teacher.client.post(f"/classes/{teacher.code}/delete", data={"confirm": "y"}).status_code == 302
    told = [m["args"][0] for m in board.get_received(NAMESPACE) if m["name"] == "session_ended"]
    assert told == [{"session": None, "reason": "deleted"}]
