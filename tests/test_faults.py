"""Faults during a class: the database goes away, Redis goes away, the server restarts.

Real processes on loopback: gunicorn app processes, PostgreSQL, Redis, nginx.
Clients behave as the pages do: the dashboard re-joins its class on every
(re)connect, the student page keeps one frame in flight whenever connected,
and both reconnect by themselves (Socket.IO's reconnection).
"""
from __future__ import annotations

import time

import cv2
import pytest
import requests
from sqlalchemy import create_engine, text

from tests.browser import ServerProcess
from tests.imagegen import encode, fit_frame
from tests.live_clients import Probe, Streamer, student, teacher

pytestmark = pytest.mark.slow


@pytest.fixture
def frames(faces_dir) -> list[bytes]:
    return [encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)]


def samples(database_url: str) -> list[int]:
    """The stored seconds of every mood sample."""
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT second FROM mood_sample"))]
    finally:
        engine.dispose()


def until(predicate, timeout: float, every: float = 0.2):
    """Poll ``predicate()`` until it is truthy (returned) or ``timeout`` passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def mood_with(name: str):
    return lambda msg: isinstance(msg, dict) and any(s.get("name") == name and s.get("label")
                                                      for s in msg.get("per_student") or [])


class Dashboard(Probe):
    """A teacher's dashboard socket that joins its class on every (re)connect, as classroom-dashboard.js does."""

    def __init__(self, base: str, web, code: str, **kw):
        super().__init__(base, headers=web.cookie_header(), namespaces=["/classroom"], reconnection=True, **kw)
        self.code = code
        self.joins: list = []
        self.sio.on("connect", self._join, namespace="/classroom")

    def _join(self):
        self.connects += 1
        self.sio.start_background_task(self._do_join)

    def _do_join(self):
        try:
            self.joins.append(self.sio.call("dashboard_join", {"code": self.code}, namespace="/classroom", timeout=10))
        except Exception as exc:  # the server went away again: the next connect retries
            self.joins.append({"error": repr(exc)})


def health(url: str) -> tuple[int, dict]:
    resp = requests.get(url + "/healthz", timeout=10, headers={"Connection": "close"})
    return resp.status_code, resp.json()


@pytest.mark.postgres
def test_database_goes_away_during_a_class_and_comes_back(tmp_path, model_copy, pausable_postgres,
                                                          frames):
    db_url = pausable_postgres.new_database()
    server = ServerProcess("threading", workdir=tmp_path, model_path=model_copy, env={"DATABASE_URL": db_url})
    server.start()
    web_t, code = teacher(server.url)
    web_s = student(server.url, code, "Sam")
    dash = Dashboard(server.url, web_t, code).connect()
    kid = Probe(server.url, headers=web_s.cookie_header(), auth={"classroom": "student"}).connect()
    streamer = Streamer(kid, frames, fps=8)
    try:
        streamer.start()
        assert dash.wait_for("mood", mood_with("Sam"), timeout=30)
        assert until(lambda: samples(db_url), 20), "nothing was stored before the outage"

        pausable_postgres.halt()
        outage_start = time.time()
        answered = streamer.answered
        # The class goes on: frames are answered, the dashboard keeps getting the student's mood.
        assert dash.wait_for("mood", mood_with("Sam"), timeout=15), "the dashboard stopped with the database"
        assert until(lambda: streamer.answered >= answered + 10, 20), "the live stream stopped with the database"
        status, body = health(server.url)
        assert status == 503 and body["database"]["reachable"] is False and body["model"]["loaded"] is True
        assert until(lambda: "mood samples failed (kept for the next flush)" in server.log_text(), 15), \
            "the failing writes were not logged clearly"
        storage = until(lambda: (lambda st: st if st["failures"] and st["queued"] else None)(
            health(server.url)[1]["storage"]), 10)
        assert storage and storage["dropped"] == 0, storage  # retried, none dropped (the backlog is far from full)
        time.sleep(2.0)  # a few more seconds of class without a database
        outage_end = time.time()
        assert server.proc.poll() is None

        pausable_postgres.resume()
        assert until(lambda: health(server.url)[0] == 200, 30), "healthz did not recover with the database"
        # The seconds aggregated during the outage were retried and stored, not lost.
        stored = until(lambda: [s for s in samples(db_url) if outage_start + 1 <= s <= outage_end - 1], 30)
        assert stored, "the samples of the outage were never written"
        assert until(lambda: health(server.url)[1]["storage"]["queued"] < storage["queued"], 10)
        assert dash.wait_for("mood", mood_with("Sam"), timeout=15)
        assert not streamer.errors
    finally:
        streamer.stop()
        kid.close()
        dash.close()
        server.stop()
    log = server.log_text()
    assert "Traceback" not in log and "WORKER TIMEOUT" not in log, log[-4000:]


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_goes_away_in_the_multi_process_setup_and_comes_back(cluster_factory, pausable_postgres,
                                                                   redis_server, frames):
    from tests.test_scaleout import addresses_per_process, xff

    cluster = cluster_factory(pausable_postgres.new_database(), redis_server)
    (up_a, addr_a), (up_b, addr_b) = sorted(addresses_per_process(cluster).items())
    web_t, code = teacher(cluster.url, headers=xff(addr_a))
    web_s = student(cluster.url, code, "Sam", headers=xff(addr_b))
    dash = Dashboard(cluster.url, web_t, code).connect()
    kid = Probe(cluster.url, headers=web_s.cookie_header(), auth={"classroom": "student"}).connect()
    streamer = Streamer(kid, frames, fps=8)
    try:
        streamer.start()
        assert dash.wait_for("mood", mood_with("Sam"), timeout=30), "no cross-process summary before the outage"

        redis_server.stop()
        stored_before = len(samples(cluster.database_url))
        answered = streamer.answered
        # Live streams keep working without the message queue; storage too.
        assert until(lambda: streamer.answered >= answered + 10, 20), "the live stream stopped with Redis"
        assert until(lambda: len(samples(cluster.database_url)) > stored_before, 20)
        for app in cluster.apps:
            status, body = health(app.url)
            assert status == 503 and body["message_queue"] == {"configured": True, "reachable": False}
        # Rate-limited endpoints (limits kept in Redis) still answer: the limiter lets requests through.
        resp = requests.post(cluster.url + "/api/v1/analyze", data=frames[0], timeout=30,
                             headers={"Content-Type": "image/jpeg", "Connection": "close", **xff(addr_a)})
        assert resp.status_code == 200 and len(resp.json()["faces"]) == 1
        assert all(app.proc.poll() is None for app in cluster.apps)

        redis_server.start()
        dash.drain()
        assert dash.wait_for("mood", mood_with("Sam"), timeout=40), "cross-process summaries did not come back"
        assert until(lambda: all(health(app.url)[0] == 200 for app in cluster.apps), 20)
        assert not streamer.errors
    finally:
        streamer.stop()
        kid.close()
        dash.close()


def test_server_restart_during_a_class(tmp_path, model_copy, frames):
    """SQLite in the instance folder, as ``make run``: restart the process on the same port mid-class."""
    server = ServerProcess("threading", workdir=tmp_path, model_path=model_copy)
    server.start()
    web_t, code = teacher(server.url)
    web_s = student(server.url, code, "Sam")
    dash = Dashboard(server.url, web_t, code).connect()
    kid = Probe(server.url, headers=web_s.cookie_header(), auth={"classroom": "student"}, reconnection=True)
    kid.connect()
    streamer = Streamer(kid, frames, fps=8)
    try:
        streamer.start()
        assert dash.wait_for("mood", mood_with("Sam"), timeout=30)
        export = lambda: web_t.get(f"/classes/{code}/export.csv").text.strip().splitlines()  # noqa: E731
        assert until(lambda: len(export()) > 2, 20), "nothing stored before the restart"
        before = export()

        server.stop()   # SIGTERM: gunicorn's graceful stop
        server.start()  # same port, same database file
        # Both clients reconnect by themselves; the dashboard re-joined and resumes; the student streams again.
        assert until(lambda: dash.connects >= 2 and kid.sio.connected, 30), "the clients did not reconnect"
        dash.drain()
        assert dash.wait_for("mood", mood_with("Sam"), timeout=30), "the dashboard did not resume"
        answered = streamer.answered
        assert until(lambda: streamer.answered > answered + 5, 20), "the student's stream did not resume"
        # The restarted process stores the new seconds once each has finished and been flushed (1 s).
        assert until(lambda: len(export()) > len(before), 20), "nothing stored after the restart"
        after = export()
        assert after[:len(before) - 1] == before[:len(before) - 1], "stored seconds changed across the restart"
    finally:
        streamer.stop()
        kid.close()
        dash.close()
        server.stop()
