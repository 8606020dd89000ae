"""A PostgreSQL server that hangs (accepts connections, never answers): the health check and the live
dashboard do not wait on it; what was not written stays queued."""
from __future__ import annotations

import threading
import time

import pytest

from app.classroom.aggregate import ClassAggregate
from app.extensions import socketio
from tests.conftest import make_app
from tests.services import HungServer


@pytest.fixture
def hung_postgres():
    """``(url, close)``: a PostgreSQL URL whose server accepts connections and never answers a byte (a paused
    VM, a network partition, a stopped process); ``close()`` drops them all, as a server that comes back to
    refuse would."""
    hung = HungServer()
    yield f"postgresql://moodlens:secret@127.0.0.1:{hung.port}/moodlens", hung.close
    hung.close()


@pytest.fixture
def hung_app(hung_postgres):
    url, close = hung_postgres
    # No migration and no start-up purge: those wait on the database by design (at start-up).
    app = make_app(DATABASE_URL=url, DB_AUTO_UPGRADE=False, CLASSROOM_RETENTION_DAYS=0, CLASSROOM_TICKER=False)
    yield app, close
    close()  # the background jobs still waiting on the server fail at once
    app.extensions["classroom"].stop()


def in_thread(fn, limit: float):
    """``(finished, seconds, result)`` of ``fn()`` run on a thread and waited on for ``limit`` s at most."""
    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("result", fn()), daemon=True)
    start = time.monotonic()
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), time.monotonic() - start, out.get("result")


def test_healthz_reports_a_hung_database_within_seconds(hung_app):
    app, _ = hung_app
    client = app.test_client()
    finished, took, resp = in_thread(lambda: client.get("/healthz"), 15)
    assert finished, "/healthz waited on the hung database"
    assert resp.status_code == 503 and took < 5
    body = resp.get_json()
    assert body["status"] == "error" and body["database"] == {"reachable": False, "backend": "postgresql"}
    # The probe still waiting on the server: the next check answers at once, without a second one.
    finished, took, resp = in_thread(lambda: client.get("/healthz"), 15)
    assert finished and resp.status_code == 503 and took < 1


def live_class(service) -> float:
    """Make class ABCD2345 (session 7) live in ``service`` with Sam's face of 3 s ago; returns now."""
    now = time.time()
    agg = ClassAggregate(7, "ABCD2345", "Biology 7B", False, service.settings, started=now - 5)
    agg.join(1, "Sam", "sid-1", now=now - 5)
    agg.add(1, [{"scores": {"happy": 0.9, "neutral": 0.1}}], now=now - 3)
    service._classes[agg.session_id] = agg  # live, as a student's join would have made it
    return now


def test_the_dashboard_keeps_being_pushed_while_the_database_hangs(hung_app, monkeypatch):
    app, close = hung_app
    service = app.extensions["classroom"]
    now = live_class(service)
    pushed = []
    monkeypatch.setattr(socketio, "emit", lambda event, data, **kw: pushed.append((event, data, kw)))

    def three_ticks():
        for i in range(3):
            service.tick(now + i * service.push_every, force=True)  # push, then flush the finished seconds

    finished, took, _ = in_thread(three_ticks, 20)
    assert finished, "the ticker waited on the hung database"
    assert took < 5
    moods = [data for event, data, _ in pushed if event == "mood"]
    assert len(moods) == 3 and all(m["students"] == 1 for m in moods)
    assert pushed[-1][2]["to"] == "class:ABCD2345"
    # The rows of the hung flush are not lost: once the server goes, the flush fails and requeues them.
    queued = service.writer.pending()
    assert service.flushing()
    close()
    deadline = time.monotonic() + 10
    while service.flushing() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not service.flushing()
    assert service.writer.pending() >= queued + 1 and service.writer.stats["failures"] >= 1


def test_stopping_says_whether_the_last_samples_were_stored(hung_app, capp):
    """``stop()`` is True only once the final flush has ended with nothing queued (``python -m app`` exits 1
    otherwise); a flush still waiting on the hung database is not "stored"."""
    app, close = hung_app
    service = app.extensions["classroom"]
    now = live_class(service)
    finished, _, _ = in_thread(lambda: service.tick(now + service.push_every, force=True), 20)
    assert finished  # the finished seconds are queued, and their flush waits on the hung database
    assert service.stop(timeout=0.5) is False
    assert service.flushing()
    close()
    # The same call on a database that answers, with nothing queued.
    assert capp.extensions["classroom"].stop(timeout=5) is True
