"""Scale-out for real: two app processes behind nginx (ip_hash), Redis message queue, PostgreSQL storage.

Everything runs on loopback as docker-compose.yml runs it: the migrate step,
two gunicorn processes with the same settings, nginx with
deploy/nginx/moodlens.conf.template. Clients reach nginx with an
``X-Forwarded-For`` address, as from a trusted load balancer in front, which is
how the test steers nginx's ``ip_hash`` to one process or the other.
"""
from __future__ import annotations

import os
import signal
import time

import cv2
import pytest
from sqlalchemy import create_engine, text

from tests.imagegen import encode, fit_frame
from tests.live_clients import Probe, Streamer, Web, student, teacher

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

# Client addresses in different /24s (ip_hash keys on the first three octets).
CANDIDATES = [f"{a}.{b}.{c}.7" for a, b, c in ((198, 51, 100), (203, 0, 113), (192, 0, 2), (100, 64, 1),
                                              (100, 64, 2), (100, 64, 3), (100, 64, 4), (100, 64, 5),
                                              (172, 16, 9), (10, 20, 30), (10, 20, 31), (10, 20, 32))]


def xff(addr: str) -> dict:
    return {"X-Forwarded-For": addr}


def addresses_per_process(cluster) -> dict[str, str]:
    """{upstream "127.0.0.1:port": a client address that nginx sends there}, for every process."""
    found: dict[str, str] = {}
    for addr in CANDIDATES:
        marker = f"probe-{addr}"
        Web(cluster.url, xff(addr)).get(f"/healthz?{marker}")
        upstream = cluster.nginx.upstream_of(marker)
        assert upstream, f"nginx logged no upstream for {marker}"
        found.setdefault(upstream, addr)
        if len(found) == len(cluster.apps):
            return found
    pytest.fail(f"ip_hash sent every candidate address to {sorted(found)}")


@pytest.fixture
def frames(faces_dir) -> list[bytes]:
    return [encode(fit_frame(cv2.imread(str(faces_dir / "obama.jpg"))), ".jpg", quality=70)]


def sample_count(database_url: str) -> int:
    engine = create_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM mood_sample")).scalar_one()
    finally:
        engine.dispose()


def mood_with(name: str):
    """A predicate: a mood summary in which student ``name`` is streaming with a face label."""
    def ok(msg) -> bool:
        return isinstance(msg, dict) and any(s.get("name") == name and s.get("label")
                                             for s in msg.get("per_student") or [])
    return ok


def test_dashboard_on_one_process_sees_a_student_on_the_other_and_survives_losing_it(
        cluster_factory, postgres_server, redis_server, frames):
    cluster = cluster_factory(postgres_server.new_database(), redis_server)
    where = addresses_per_process(cluster)
    (up_a, addr_a), (up_b, addr_b) = sorted(where.items())
    proc_a, proc_b = cluster.app_at(up_a), cluster.app_at(up_b)

    # The teacher's HTTP and dashboard socket go to A; the student's to B.
    web_t, code = teacher(cluster.url, headers=xff(addr_a))
    web_s = student(cluster.url, code, "Sam", headers=xff(addr_b))
    dash = Probe(cluster.url, headers=web_t.cookie_header(), namespaces=["/classroom"],
                 transports=("polling", "websocket"), reconnection=True, tag="teacher-dashboard").connect()
    kid = Probe(cluster.url, headers=web_s.cookie_header(), auth={"classroom": "student"},
                transports=("polling", "websocket"), reconnection=True, tag="student-stream").connect()
    streamer = Streamer(kid, frames, fps=8)
    try:
        assert dash.call("dashboard_join", {"code": code}, namespace="/classroom")["ok"] is True
        sids = {proc_a: dash.sio.get_sid("/classroom"), proc_b: kid.sio.get_sid("/")}
        assert all(sids.values())
        # Each socket's handshake (polling) went to the process we meant, and both upgraded to WebSocket
        # (the upgrade request must reach the same process: a 400 there would have left them on polling).
        assert cluster.nginx.upstreams_of("tag=student-stream") == {up_b}
        assert cluster.nginx.upstreams_of("tag=teacher-dashboard") == {up_a}
        assert kid.sio.transport() == dash.sio.transport() == "websocket"

        streamer.start()
        summary = dash.wait_for("mood", mood_with("Sam"), timeout=30)
        assert summary is not None, "the dashboard on A never got the summary of the student streaming on B"
        assert summary["students"] >= 1 and summary["class"]["code"] == code
        deadline = time.monotonic() + 20
        while sample_count(cluster.database_url) == 0 and time.monotonic() < deadline:
            time.sleep(0.25)
        stored_before = sample_count(cluster.database_url)
        assert stored_before > 0, "process B stored nothing in the shared database"

        # Process B dies (no goodbye). The student reconnects through nginx to A, where the dashboard is.
        connects = kid.connects
        _kill(proc_b)
        assert sample_count(cluster.database_url) >= stored_before  # nothing stored was lost
        deadline = time.monotonic() + 30
        while kid.connects == connects and time.monotonic() < deadline:
            time.sleep(0.1)
        assert kid.connects > connects, "the student never reconnected through nginx"
        dash.drain()
        again = dash.wait_for("mood", mood_with("Sam"), timeout=30)
        assert again is not None, "after the failover the dashboard never saw the student again"
        assert streamer.answered > 0 and not [e for e in streamer.errors if "internal" in str(e)]
        # The same student (the signed session cookie), not a new one, and their data keeps growing.
        assert [s["name"] for s in again["per_student"]].count("Sam") == 1
        grown = sample_count(cluster.database_url)
        deadline = time.monotonic() + 20
        while grown <= stored_before and time.monotonic() < deadline:
            time.sleep(0.25)
            grown = sample_count(cluster.database_url)
        assert grown > stored_before
        assert "Traceback" not in proc_a.log_text()
    finally:
        streamer.stop()
        kid.close()
        dash.close()


def _kill(server) -> None:
    """SIGKILL a server's whole process group: a crash, nothing flushed, no goodbye to clients."""
    proc = server.proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    server.stop()


def test_teacher_room_gets_no_contradicting_summaries_from_a_process_without_students(
        cluster_factory, postgres_server, redis_server, frames):
    """With the student on B, every summary the dashboard on A gets must count that student."""
    cluster = cluster_factory(postgres_server.new_database(), redis_server)
    (up_a, addr_a), (up_b, addr_b) = sorted(addresses_per_process(cluster).items())
    web_t, code = teacher(cluster.url, email="ben@example.org", headers=xff(addr_a))
    web_s = student(cluster.url, code, "Kim", headers=xff(addr_b))
    dash = Probe(cluster.url, headers=web_t.cookie_header(), namespaces=["/classroom"]).connect()
    kid = Probe(cluster.url, headers=web_s.cookie_header(), auth={"classroom": "student"}).connect()
    streamer = Streamer(kid, frames, fps=8)
    try:
        assert dash.call("dashboard_join", {"code": code}, namespace="/classroom")["ok"] is True
        streamer.start()
        assert dash.wait_for("mood", mood_with("Kim"), timeout=30) is not None
        seen = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            msg = dash.wait_for("mood", timeout=max(0.1, deadline - time.monotonic()))
            if msg is not None:
                seen.append(msg["students"])
        assert seen and min(seen) >= 1, f"students counted in the summaries the dashboard got: {seen}"
    finally:
        streamer.stop()
        kid.close()
        dash.close()
