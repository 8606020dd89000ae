"""A Redis message queue that hangs (accepts connections, never answers): emits and the dashboard pushes do not
wait on it, the outage is logged once, and everything resumes when Redis answers again."""
from __future__ import annotations

import json
import logging
import time

import pytest
import redis
from socketio.packet import Packet
from sqlalchemy import select

from app.classroom.models import Classroom, ClassSession
from app.classroom.service import NAMESPACE, room
from app.extensions import db, socketio
from tests.classroom_fixtures import classroom_app, create_class, register
from tests.services import HungServer, RedisServer, redis_binary
from tests.test_db_hang import in_thread

QUEUE_LOGGER = "moodlens.socketio.queue"


@pytest.fixture
def hung_app(tmp_path, monkeypatch):
    """``(app, client, code, board)``: a classroom app whose ``SOCKETIO_MESSAGE_QUEUE`` (and so its cluster
    link) is a Redis that hangs, a teacher's client, a running class and a dashboard on this process."""
    hung = HungServer()
    app = classroom_app(f"sqlite:///{tmp_path / 'classroom.sqlite3'}",
                        SOCKETIO_MESSAGE_QUEUE=f"redis://127.0.0.1:{hung.port}/0")
    try:
        yield (app, *running_class(app, monkeypatch))
    finally:
        hung.close()  # whatever still waits on it fails at once
        app.extensions["classroom"].stop()


def running_class(app, monkeypatch) -> tuple:
    """(teacher's client, class code, :class:`Dashboard`): a class created, its live aggregate started."""
    client = app.test_client()
    assert register(client, "ann@example.org", "Ann").status_code == 302
    code = create_class(client)
    with app.app_context():
        session = db.session.scalar(select(ClassSession).join(Classroom).where(Classroom.code == code))
        assert app.extensions["classroom"].aggregate(session) is not None
    return client, code, Dashboard(monkeypatch, code)


class Dashboard:
    """A teacher's dashboard connected to this process, in class ``code``'s room: records what it is sent.

    (Flask-SocketIO's test client refuses to run with a message queue; this is the server side of one.)
    """

    def __init__(self, monkeypatch, code: str):
        manager = socketio.server.manager
        self.eio_sid = "dashboard-eio-sid"
        manager.enter_room(manager.connect(self.eio_sid, NAMESPACE), NAMESPACE, room(code))
        self.received: list[tuple[str, object]] = []
        send = socketio.server._send_eio_packet

        def record(eio_sid, pkt):
            if eio_sid != self.eio_sid:
                return send(eio_sid, pkt)
            event, data = Packet(encoded_packet=pkt.data).data
            self.received.append((event, data))
            return None

        monkeypatch.setattr(socketio.server, "_send_eio_packet", record)

    def moods(self) -> list:
        return [data for event, data in self.received if event == "mood"]


def queue_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == QUEUE_LOGGER and r.levelno >= logging.WARNING]


def test_pushes_and_emits_do_not_wait_on_a_hung_message_queue(hung_app, caplog):
    app, client, code, board = hung_app
    caplog.set_level(logging.INFO, logger="moodlens")
    service = app.extensions["classroom"]

    def three_pushes():
        for _ in range(3):
            service.tick(force=True)

    # Before: each push's emit waited ~10 s in python-socketio's publish (redis-py's 5 s timeout, two attempts).
    finished, took, _ = in_thread(three_pushes, 15)
    assert finished, "the push waited on the hung message queue"
    assert took < 3, f"three pushes took {took:.1f} s"
    # The dashboard on this process got every push: its events do not go through Redis.
    got = board.moods()
    assert len(got) == 3 and all(m["class"]["code"] == code for m in got)

    # Redis known to be away: a flood of emits costs nothing and is not logged event by event.
    finished, took, _ = in_thread(
        lambda: [socketio.emit("mood", {"n": i}, to=room(code), namespace=NAMESPACE) for i in range(200)], 15)
    assert finished and took < 1, f"200 emits took {took:.1f} s"
    assert len(board.moods()) == 203
    warnings = queue_warnings(caplog)
    assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
    assert service.pushes == 3

    # The app keeps serving: the health check answers within its own bound and says the queue is down.
    finished, took, resp = in_thread(lambda: client.get("/healthz"), 15)
    assert finished and took < 4
    assert resp.status_code == 503 and resp.get_json()["message_queue"] == {"configured": True, "reachable": False}


@pytest.mark.redis
def test_pushes_reach_redis_again_when_it_answers(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="moodlens")
    server = RedisServer(redis_binary())  # not started: a hung listener takes its port first
    hung = HungServer(server.port)
    app = classroom_app(f"sqlite:///{tmp_path / 'classroom.sqlite3'}", SOCKETIO_MESSAGE_QUEUE=server.url)
    service = app.extensions["classroom"]
    observer = None
    try:
        client, code, board = running_class(app, monkeypatch)
        finished, took, _ = in_thread(lambda: service.tick(force=True), 15)
        assert finished and took < 2
        assert queue_warnings(caplog) and service.cluster.down_since is not None

        hung.close()
        server.start()
        observer = redis.Redis.from_url(server.url).pubsub(ignore_subscribe_messages=True)
        observer.subscribe("flask-socketio")
        # The push loop goes on, and within a few seconds its summaries are published again.
        published = []
        deadline = time.monotonic() + 15
        while not published and time.monotonic() < deadline:
            service.tick(force=True)
            msg = observer.get_message(timeout=0.25)
            while msg is not None:
                data = json.loads(msg["data"])
                if data.get("event") == "mood" and data.get("room") == room(code):
                    published.append(data)
                msg = observer.get_message(timeout=0.01)
        assert published, "the pushes were not published once Redis answered again"
        assert service.cluster.down_since is None and service.cluster.exchanges >= 1
        assert any("reachable again" in w for w in queue_warnings(caplog))
        assert len(board.moods()) >= 2, "the dashboard on this process stopped getting pushes"
        resp = client.get("/healthz")
        assert resp.status_code == 200
        assert resp.get_json()["message_queue"] == {"configured": True, "reachable": True}
    finally:
        if observer is not None:
            observer.close()
        hung.close()
        service.stop()
        server.cleanup()


def test_rate_limits_move_to_memory_without_waiting_on_a_hung_rate_limit_store(faces_dir):
    """With ``RATELIMIT_STORAGE_URI`` on a Redis that hangs, requests wait on it once, briefly (not redis-py's
    default 5 s each), and the limits are then counted in this process's memory: they still apply."""
    from tests.conftest import make_app

    hung = HungServer()
    try:
        app = make_app(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{hung.port}/1", ANALYZE_RATE_LIMIT="2 per minute",
                       CLASSROOM_TICKER=False)
        client = app.test_client()
        photo = (faces_dir / "astronaut.png").read_bytes()

        def three():
            return [client.post("/api/v1/analyze", data=photo, content_type="image/png").status_code
                    for _ in range(3)]

        finished, took, statuses = in_thread(three, 60)
        assert finished and statuses == [200, 200, 429], statuses
        assert took < 4, f"three requests took {took:.1f} s on the hung rate-limit store"
    finally:
        hung.close()


class Clock:
    """A stand-in for the ``time`` module of app.classroom.cluster: ``monotonic()`` is ``now``."""

    def __init__(self):
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def test_an_outage_is_logged_at_its_start_once_a_minute_and_at_its_end(monkeypatch, caplog):
    from app.classroom import cluster

    clock = Clock()
    monkeypatch.setattr(cluster, "time", clock)
    caplog.set_level(logging.WARNING, logger="moodlens.test")
    outage = cluster.RedisOutage(logging.getLogger("moodlens.test"), "the test", "redis://:secret@db:6379/0",
                                 retry_after=3.0, meanwhile="it goes on alone", missed="calls without it")

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    assert not outage.skip() and outage.available  # up: every call goes through
    outage.failed(OSError("timed out"))
    assert lines() == [("the test: Redis at redis://:***@db:6379/0 unreachable (timed out): it goes on alone "
                        "until it is back (tried again every 3 s)")]
    # Down: calls are skipped, counted and not logged one by one, until the retry is due.
    assert all(outage.skip() for _ in range(500)) and not outage.available
    clock.now += 3.0
    assert outage.available and not outage.skip()  # this call is the retry...
    assert outage.skip()                           # ...and the others still skip meanwhile
    outage.failed(OSError("timed out"))
    assert len(lines()) == 1
    # A minute on (the retry long due: one call tries), the next skipped call reminds once.
    clock.now += cluster.OUTAGE_REMINDER_S
    assert not outage.skip()
    assert outage.skip() and outage.skip()
    assert lines()[1:] == [("the test: Redis at redis://:***@db:6379/0 still unreachable after 63 s "
                            "(504 calls without it)")]
    outage.ok()  # the retry answered
    assert lines()[2:] == [("the test: Redis at redis://:***@db:6379/0 reachable again after 63 s "
                            "(505 calls without it)")]
    assert outage.down_since is None and not outage.skip()
    outage.ok()
    assert len(lines()) == 3  # the end is logged once
