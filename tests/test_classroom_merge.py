"""Merging the live class parts of several processes: the math (no Redis), then through a real Redis.

The merge math runs on synthetic result streams with a fake clock, like
test_classroom_aggregate.py: the students of one class spread over two
``ClassAggregate`` ("processes") must give exactly the summary of one
aggregate holding them all. The Redis part (leadership, expiry of a dead
process's part, outages, the service pushing one merged summary) runs
against a real redis-server on loopback (tests/services.py).
"""
from __future__ import annotations

import json
import logging
import time

import pytest

from app.classroom.aggregate import ClassAggregate, Record, Settings
from app.classroom.cluster import ClusterLink, leader_key, part_key
from app.classroom.merge import MergedView, merge_students
from app.classroom.service import NAMESPACE
from app.extensions import socketio
from tests.test_classroom_aggregate import T0, face

SETTINGS = dict(window=10.0, timeline_step=5, stale_after=8.0, negative_share=0.5, negative_for=10.0)


def make(aggregate_only: bool = False) -> ClassAggregate:
    return ClassAggregate(7, "ABC234", "Biology", aggregate_only=aggregate_only, settings=Settings(**SETTINGS),
                          started=T0)


def parts_at(now: float, **aggs: ClassAggregate) -> list[dict]:
    return [{**agg.snapshot(now), "process": name} for name, agg in aggs.items()]


def canon(x):
    """``x`` with every float rounded to 9 places: timeline points carry unrounded means, and a student's
    frames summed over two processes add up in another order than in one (differences in the last bits)."""
    if isinstance(x, float):
        return round(x, 9)
    if isinstance(x, dict):
        return {k: canon(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [canon(v) for v in x]
    return x


class Spread:
    """The same class events applied to one aggregate holding everyone and to two "processes"."""

    def __init__(self):
        self.one, self.a, self.b = make(), make(), make()

    def join(self, where, student, name, sid, now):
        self.one.join(student, name, sid, now=now)
        where.join(student, name, sid, now=now)

    def leave(self, where, student, sid, now, dropped=False):
        self.one.leave(student, sid, now=now, dropped=dropped)
        where.leave(student, sid, now=now, dropped=dropped)

    def frame(self, where, student, faces, now):
        self.one.add(student, faces, now=now)
        where.add(student, faces, now=now)


def test_two_processes_merge_to_exactly_what_one_process_holding_every_student_computes():
    c = Spread()
    view = MergedView(Settings(**SETTINGS))
    c.join(c.a, 1, "Ann", "a1", T0)
    c.join(c.a, 2, "Ben", "a2", T0)
    c.join(c.b, 3, "Cem", "b3", T0 + 0.4)
    compared = 0
    t = T0
    while t < T0 + 48:
        for k in range(3):  # about 6 frames per second per student, each at its own time
            at = t + 0.1 + 0.15 * k
            if at < T0 + 25:                        # Ann's camera stops at T0+25: stale 8 s later
                c.frame(c.a, 1, [face(angry=0.6)], at)
            if at < T0 + 20.25:                     # Ben's first tab, on process A, closes at T0+20.25
                c.frame(c.a, 2, [face(sad=0.7)] if k else [], at)
            if at < T0 + 33:                        # Cem's connection is lost at T0+33
                c.frame(c.b, 3, [face(happy=0.3, fear=0.4)], at + 0.05)
            if at >= T0 + 12:                       # Ben's second tab streams to process B
                c.frame(c.b, 2, [face(sad=0.9)], at + 0.07)
        t += 0.75
        if abs(t - (T0 + 12)) < 0.01:
            c.join(c.b, 2, "Ben", "b2", t)
        if abs(t - (T0 + 20.25)) < 0.01:
            c.leave(c.a, 2, "a2", t)                # Ben closes his first tab: still connected on B
        if abs(t - (T0 + 33)) < 0.01:
            c.leave(c.b, 3, "b3", t, dropped=True)
        if (t - T0) % 1.5 == 0:                     # a push tick: both processes publish, the view merges
            merged = view.summary(parts_at(t, a=c.a, b=c.b), t, full_timeline=True)
            assert canon(merged) == canon(c.one.summary(t, full_timeline=True)), f"at T0+{t - T0}"
            compared += 1
    assert compared >= 30
    # The comparison was not between two empty summaries: the last one has every kind of content.
    assert merged["students"] == 2 and merged["frames"] == c.one.frames  # Ann (stale) and Ben
    assert {s["name"]: s["status"] for s in merged["per_student"]} == {"Ann": "stale", "Ben": "active",
                                                                       "Cem": "lost"}
    assert {a["id"] for a in merged["alerts"]} == {"negative", "stale:1", "lost:3"}
    assert len(merged["timeline"]) >= 9 and merged["timeline"][3]["students"] == 3


def test_aggregate_only_on_one_process_hides_every_per_student_detail_of_the_merged_view():
    a, b = make(), make(aggregate_only=True)  # switched on through process B only
    a.join(1, "Ann Secret", "a1", now=T0)
    b.join(2, "Ben Secret", "b2", now=T0)
    b.join(3, "Cem Secret", "b3", now=T0)
    a.add(1, [face(happy=1.0)], now=T0 + 0.5)
    b.add(2, [face(sad=1.0)], now=T0 + 0.5)
    b.leave(3, "b3", now=T0 + 1, dropped=True)
    assert "Secret" not in json.dumps(b.snapshot(T0 + 2))  # names never leave an aggregate-only process
    merged = MergedView(Settings(**{**SETTINGS, "stale_after": 1.0})).summary(parts_at(T0 + 3, a=a, b=b), T0 + 3,
                                                                      full_timeline=True)
    assert merged["class"]["aggregate_only"] is True and "per_student" not in merged
    assert merged["students"] == 2 and merged["faces"] == 2
    assert merged["distribution"]["happy"] == pytest.approx(0.5) and merged["distribution"]["sad"] == 0.5
    assert {a["id"] for a in merged["alerts"]} == {"stale", "lost"}
    assert all("student" not in al for al in merged["alerts"])
    assert "Secret" not in repr(merged) and "Ann" not in repr(merged)


def test_student_states_merge_across_processes():
    a, b = make(), make()
    a.join(1, "Ann", "a1", now=T0)
    a.leave(1, "a1", now=T0 + 5, dropped=True)
    b.join(1, "Ann", "b1", now=T0 + 6)      # reconnected through the other process
    a.join(2, "Ben", "a2", now=T0)
    a.leave(2, "a2", now=T0 + 3)
    b.join(2, "Ben", "b2", now=T0 + 1)
    b.leave(2, "b2", now=T0 + 4, dropped=True)  # the later leave wins: lost
    st = merge_students(parts_at(T0 + 7, a=a, b=b))
    assert st[1].sids == {"b"} and st[1].connected_at == T0 + 6 and st[1].left_at is None and not st[1].dropped
    assert not st[2].sids and st[2].left_at == T0 + 4 and st[2].dropped


def test_buckets_close_once_every_part_has_passed_them_and_older_ones_come_from_storage(caplog):
    a, b = make(), make()
    a.join(1, "Ann", "a1", now=T0)
    b.join(2, "Ben", "b2", now=T0)
    for i in range(10):
        a.add(1, [face(happy=1.0)], now=T0 + i + 0.5)
        b.add(2, [face(sad=1.0)], now=T0 + i + 0.5)
    stored = [Record.from_means(1, T0 - 30 + s, [0, 0, 0, 1, 0, 0, 0], 1, 1) for s in range(3)]
    asked = []

    def history(since, until):
        asked.append((since, until))
        return [r for r in stored if (since is None or r.second >= since) and r.second < until]

    view = MergedView(Settings(**SETTINGS))
    early_b = {**b.snapshot(T0 + 9.6), "process": "b"}         # B's part was published before T0+10
    s1 = view.summary([{**a.snapshot(T0 + 11), "process": "a"}, early_b], T0 + 11, full_timeline=True,
                      history=history)
    assert asked == [(None, T0)]                               # before the parts' records: storage
    assert s1["timeline"][0]["second"] == T0 - 30 and s1["timeline"][0]["distribution"]["happy"] == 1.0
    assert view.closed_upto == T0 + 5                          # [T0+5, T0+10) waits for B's next part
    assert s1["timeline"][-1]["second"] == T0 + 5              # ... but is shown, as the open bucket
    s2 = view.summary(parts_at(T0 + 12, a=a, b=b), T0 + 12, full_timeline=True, history=history)
    assert view.closed_upto == T0 + 10 and len(asked) == 1
    closed = {p["second"]: p for p in s2["timeline"]}[T0 + 5]
    assert closed["students"] == 2 and closed["distribution"]["sad"] == pytest.approx(0.5)

    # Storage away when a view starts: this process's own closed points stand in, and it is logged.
    def broken(since, until):
        raise RuntimeError("database unreachable")

    fallback = [{"second": T0 - 20, "t": "x", "distribution": {}, "engagement": None, "students": 1}]
    with caplog.at_level(logging.WARNING, logger="moodlens.classroom.merge"):
        s3 = MergedView(Settings(**SETTINGS)).summary(parts_at(T0 + 12, a=a, b=b), T0 + 12, full_timeline=True,
                                                      history=broken, fallback=fallback)
    assert s3["timeline"][0]["second"] == T0 - 20 and "database unreachable" in caplog.text


def test_negative_clock_is_taken_over_from_the_other_processes():
    a = make()
    a.join(1, "Ann", "a1", now=T0)
    for i in range(12):
        a.add(1, [face(angry=0.9)], now=T0 + i + 0.5)
    part = {**a.snapshot(T0 + 12), "process": "a"}
    fresh = MergedView(Settings(**SETTINGS)).summary([part], T0 + 12)  # a new leader, knowing nothing
    assert "negative" not in {al["kind"] for al in fresh["alerts"]}
    other = {"process": "old-leader", "session": 7, "code": "ABC234", "name": "Biology", "aggregate_only": False,
             "started": T0, "frames": 0, "ts": T0 + 11.5, "covered_from": T0 - 4, "students": [], "records": [],
             "negative_since": T0 + 1.0}
    taken = MergedView(Settings(**SETTINGS)).summary([part, other], T0 + 12)
    assert "negative" in {al["kind"] for al in taken["alerts"]}


# -- through a real Redis -----------------------------------------------------------------------------

redis_mark = pytest.mark.redis


def link(server, name: str, **kw) -> ClusterLink:
    return ClusterLink(server.url, push_every=1.5, process_id=name, **kw)


@redis_mark
def test_a_dead_process_part_expires_and_one_leader_at_a_time(redis_server):
    p, q = link(redis_server, "p"), link(redis_server, "q")
    a, b = make(), make()
    a.join(1, "Ann", "a1", now=T0)
    b.join(2, "Ben", "b2", now=T0)
    now = time.time()
    got_p = p.exchange({7: a.snapshot(now)}, now)[7]
    got_q = q.exchange({7: b.snapshot(now)}, now)[7]
    assert got_p.leader and not got_q.leader                 # the first one to claim it leads
    assert set(got_q.others) == {"p"} and got_q.others["p"]["students"][0][1] == "Ann"
    assert set(p.exchange({7: a.snapshot(now + 1)}, now + 1)[7].others) == {"q"}
    assert p.exchange({7: a.snapshot(now + 1)}, now + 1)[7].leader  # renewed
    # q stops publishing (it died): past part_ttl its part is ignored and deleted.
    later = now + p.part_ttl + 1
    assert p.exchange({7: a.snapshot(later)}, later)[7].others == {}
    assert p.client.hkeys(part_key(7)) == [b"p"]
    assert 0 < p.client.pttl(part_key(7)) <= 2 * p.part_ttl * 1000
    # p stops renewing its leadership: q takes over once it has expired, and p no longer leads.
    p.client.pexpire(leader_key(7), 50)
    time.sleep(0.2)
    assert q.exchange({7: b.snapshot(later)}, later)[7].leader
    assert not p.exchange({7: a.snapshot(later)}, later)[7].leader
    # Ending the session elsewhere reaches the other processes.
    assert q.mark_ended(7, "ended")
    assert p.exchange({7: a.snapshot(later)}, later)[7].ended == "ended"
    p.close()
    q.close()


@redis_mark
def test_redis_outage_is_logged_once_fails_fast_and_recovers(redis_server, caplog):
    p = link(redis_server, "p", retry_after=0.0)
    a = make()
    a.join(1, "Ann", "a1", now=T0)
    assert p.exchange({7: a.snapshot(T0)}, T0) is not None
    redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="moodlens.classroom.cluster"):
        started = time.monotonic()
        assert p.exchange({7: a.snapshot(T0 + 1)}, T0 + 1) is None
        assert p.exchange({7: a.snapshot(T0 + 2)}, T0 + 2) is None
        assert p.read(7, T0 + 2) is None
        assert time.monotonic() - started < 3.0
        assert caplog.text.count("unreachable") == 1
        redis_server.start()
        assert p.exchange({7: a.snapshot(T0 + 3)}, T0 + 3) is not None
        assert "reachable again" in caplog.text
    # While it is known to be away, calls are skipped until the next retry is due.
    q = link(redis_server, "q", retry_after=60.0)
    redis_server.stop()
    assert q.exchange({7: a.snapshot(T0)}, T0) is None
    redis_server.start()
    assert q.exchange({7: a.snapshot(T0)}, T0) is None and not q.available
    p.close()
    q.close()


@redis_mark
def test_the_service_pushes_one_merged_summary_only_where_it_leads(capp, teacher, student, redis_server,
                                                                   faces_dir):
    import cv2

    from tests.classroom_fixtures import send_frame
    from tests.imagegen import encode, fit_frame

    service = capp.extensions["classroom"]
    service.cluster = ClusterLink(redis_server.url, push_every=service.push_every, process_id="this")
    board = socketio.test_client(capp, namespace=NAMESPACE, flask_test_client=teacher.client)
    sc = socketio.test_client(capp, flask_test_client=student, auth={"classroom": "student"})
    other = link(redis_server, "other")
    try:
        session_id, _ = service.student_of(socketio.server.manager.sid_from_eio_sid(sc.eio_sid, "/"))
        frame = encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)
        for seq in range(3):
            send_frame(sc, seq, frame)
        # Another process serves Zoe, and it claimed the session's leadership first.
        elsewhere = ClassAggregate(session_id, teacher.code, "Biology 7B", aggregate_only=False,
                                   settings=service.settings, started=time.time() - 60)
        elsewhere.join(999, "Zoe", "z", now=time.time() - 2)
        elsewhere.add(999, [face(happy=0.9)], now=time.time() - 1)
        assert other.exchange({session_id: elsewhere.snapshot()}, time.time())[session_id].leader

        # The dashboard's first summary (its join ack) already covers both processes' students.
        ack = board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
        assert ack["summary"]["students"] == 2
        assert {s["name"] for s in ack["summary"]["per_student"]} == {"Sam", "Zoe"}
        api = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
        assert api["students"] == 2 and api["faces"] == 2

        service.tick(force=True)  # not the leader: publishes its part, pushes nothing
        assert [e for e in board.get_received(NAMESPACE) if e["name"] == "mood"] == []
        assert {p for p in other.exchange({session_id: elsewhere.snapshot()}, time.time())[session_id].others} == \
            {"this"}

        other.client.delete(leader_key(session_id))  # the other process died: its leadership lapsed
        service.tick(force=True)
        (mood,) = [e["args"][0] for e in board.get_received(NAMESPACE) if e["name"] == "mood"]
        assert mood["students"] == 2 and mood["faces"] == 2
        assert {s["name"]: s["status"] for s in mood["per_student"]} == {"Sam": "active", "Zoe": "active"}

        # The teacher ends the session through the other process: this one ends its part too.
        assert other.mark_ended(session_id, "ended")
        service.tick(force=True)
        assert service.find(session_id) is None
        assert [e for e in sc.get_received() if e["name"] == "classroom_ended"]
        assert service.writer.stats["written"] > 0  # what this process had was stored
    finally:
        other.close()
        if sc.is_connected():
            sc.disconnect()
        board.disconnect(namespace=NAMESPACE)
        service.cluster.close()
        service.cluster = None


@redis_mark
def test_aggregate_only_switched_on_through_another_process_reaches_the_leader(capp, teacher, student,
                                                                               redis_server, faces_dir):
    import cv2

    from app.classroom.service import ClassroomService
    from tests.classroom_fixtures import join, send_frame
    from tests.imagegen import encode, fit_frame

    service = capp.extensions["classroom"]  # Sam streams here, and this process leads
    service.cluster = ClusterLink(redis_server.url, push_every=service.push_every, process_id="this")
    board = socketio.test_client(capp, namespace=NAMESPACE, flask_test_client=teacher.client)
    dan = capp.test_client()
    join(dan, teacher.code, "Dan")
    sc = socketio.test_client(capp, flask_test_client=student, auth={"classroom": "student"})
    lost = socketio.test_client(capp, flask_test_client=dan, auth={"classroom": "student"})
    other = ClassroomService(capp)  # the process that gets the teacher's POST; no student streams there
    try:
        frame = encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)
        for seq in range(2):
            send_frame(sc, seq, frame)
        lost.disconnect()  # Dan's connection was lost: an alert that names him
        board.emit("dashboard_join", {"code": teacher.code}, namespace=NAMESPACE, callback=True)
        service.tick(force=True)
        (mood,) = [e["args"][0] for e in board.get_received(NAMESPACE) if e["name"] == "mood"]
        assert "per_student" in mood and "Dan" in repr(mood["alerts"])

        capp.extensions["classroom"] = other
        try:
            resp = teacher.client.post(f"/classes/{teacher.code}/settings", data={"aggregate_only": "y"})
        finally:
            capp.extensions["classroom"] = service
        assert resp.status_code == 302
        service.tick(force=True)
        (mood,) = [e["args"][0] for e in board.get_received(NAMESPACE) if e["name"] == "mood"]
        assert mood["class"]["aggregate_only"] is True and "per_student" not in mood
        assert "Sam" not in repr(mood) and "Dan" not in repr(mood)
        assert [al["message"] for al in mood["alerts"] if al["kind"] == "lost"] == ["1 student's connection was lost."]
    finally:
        if sc.is_connected():
            sc.disconnect()
        board.disconnect(namespace=NAMESPACE)
        other.stop()
        service.cluster.close()
        service.cluster = None


@redis_mark
def test_leaving_through_one_process_stops_the_students_streams_on_the_others(capp, teacher, student, redis_server):
    from app.classroom.cluster import left_key

    service = capp.extensions["classroom"]  # Sam streams here ...
    service.cluster = ClusterLink(redis_server.url, push_every=service.push_every, process_id="this")
    sc = socketio.test_client(capp, flask_test_client=student, auth={"classroom": "student"})
    other = link(redis_server, "other")  # ... and the leave form reaches another process
    try:
        sid = socketio.server.manager.sid_from_eio_sid(sc.eio_sid, "/")
        session_id, student_id = service.student_of(sid)
        service.tick(force=True)
        assert service.student_of(sid) == (session_id, student_id)  # nobody left yet: the stream counts

        assert other.mark_left(session_id, student_id)
        service.tick(force=True)
        assert service.student_of(sid) is None
        assert [e["args"][0] for e in sc.get_received() if e["name"] == "classroom_ended"] == \
            [{"session": session_id, "reason": "left"}]
        sc.disconnect()  # the page goes away after the leave: counted as left, no "lost" alert
        body = teacher.client.get(f"/api/v1/classes/{teacher.code}/mood").json
        assert {t["name"]: t["status"] for t in body["per_student"]} == {"Sam": "left"}
        assert not [al for al in body["alerts"] if al["kind"] == "lost"], body["alerts"]

        # The other way round: a leave posted to this process is published for the others.
        dan = capp.test_client()
        from tests.classroom_fixtures import join
        join(dan, teacher.code, "Dan")
        dc = socketio.test_client(capp, flask_test_client=dan, auth={"classroom": "student"})
        _, dan_id = service.student_of(socketio.server.manager.sid_from_eio_sid(dc.eio_sid, "/"))
        assert dan.post(f"/join/{teacher.code}/leave").status_code == 302
        part = {"session": session_id, "ts": time.time(), "students": []}
        assert other.exchange({session_id: part}, time.time())[session_id].left == {student_id, dan_id}
        dc.disconnect()
        assert other.mark_ended(session_id, "ended")
        assert not other.client.exists(left_key(session_id))  # an ended session's marks go with it
    finally:
        other.close()
        if sc.is_connected():
            sc.disconnect()
        service.cluster.close()
        service.cluster = None
