"""Classroom test kit: an app on a fresh database, teacher and student clients, a PostgreSQL server.

Loaded as a plugin by tests/conftest.py (``pytest_plugins``), so its fixtures
(``capp``, ``teacher``, ``other_teacher``, ``student``, ``postgres_server``,
``postgres_url``) are available to every test; its helpers are imported.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.browser import free_port, unavailable
from tests.conftest import make_app

PASSWORD = "correct horse battery"


def classroom_app(database_url: str, **overrides):
    """An app on ``database_url``: CSRF off (one test proves it is on by default), no background ticker."""
    config = {"DATABASE_URL": database_url, "WTF_CSRF_ENABLED": False, "CLASSROOM_TICKER": False,
              "RATELIMIT_ENABLED": True, "CLASSROOM_RETENTION_DAYS": 30}
    config.update(overrides)
    return make_app(**config)


@pytest.fixture
def capp(tmp_path):
    """A classroom app on a fresh SQLite file."""
    app = classroom_app(f"sqlite:///{tmp_path / 'classroom.sqlite3'}")
    yield app
    app.extensions["classroom"].stop()


@pytest.fixture
def csrf_app(tmp_path):
    """A classroom app with CSRF on, as in production (the token fields are rendered and checked)."""
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", WTF_CSRF_ENABLED=True)
    yield app
    app.extensions["classroom"].stop()


def register(client, email: str, name: str = "Teacher", password: str = PASSWORD):
    """Register (and so log in) a teacher; returns the response."""
    return client.post("/register", data={"name": name, "email": email, "password": password, "confirm": password})


def login(client, email: str, password: str = PASSWORD):
    """Log a registered teacher in; returns the response."""
    return client.post("/login", data={"email": email, "password": password})


def create_class(client, name: str = "Biology 7B", aggregate_only: bool = False) -> str:
    """Create a class as the client's teacher; returns its join code."""
    data = {"name": name}
    if aggregate_only:
        data["aggregate_only"] = "y"
    resp = client.post("/classes", data=data)
    assert resp.status_code == 302, resp.data[:500]
    return resp.headers["Location"].rstrip("/").rsplit("/", 1)[1]


def join(client, code: str, name: str = "Sam"):
    """Join class ``code`` as a student with consent; returns the response."""
    return client.post(f"/join/{code}", data={"display_name": name, "consent": "y"})


@dataclass
class Teacher:
    """A teacher's test client, email and class code."""

    client: object
    email: str
    code: str


@pytest.fixture
def teacher(capp) -> Teacher:
    """A logged-in teacher with one running class."""
    client = capp.test_client()
    assert register(client, "ann@example.org", "Ann").status_code == 302
    return Teacher(client, "ann@example.org", create_class(client))


@pytest.fixture
def other_teacher(capp) -> Teacher:
    """A second logged-in teacher with a class of their own."""
    client = capp.test_client()
    assert register(client, "otto@example.org", "Otto").status_code == 302
    return Teacher(client, "otto@example.org", create_class(client, "Chemistry 9A"))


@pytest.fixture
def student(capp, teacher):
    """A browser that joined the teacher's class as a student."""
    client = capp.test_client()
    assert join(client, teacher.code).status_code == 302
    return client


STUDENT_AUTH = {"classroom": "student"}  # the Socket.IO auth of a student page


@pytest.fixture
def sockets(capp):
    """``open(flask_client, namespace=None, auth=None)`` -> a Socket.IO test client of ``capp`` (``None``: the
    ``/`` namespace), all disconnected after the test."""
    from app.extensions import socketio

    opened = []

    def open_(client, namespace=None, auth=None):
        sc = socketio.test_client(capp, namespace=namespace, flask_test_client=client, auth=auth)
        opened.append((sc, namespace))
        return sc

    yield open_
    for sc, ns in opened:
        if sc.is_connected(ns):
            sc.disconnect(namespace=ns)


# -- PostgreSQL -------------------------------------------------------------------------------

def _pg_bindir() -> Path | None:
    for candidate in [os.environ.get("PG_BINDIR"), *(str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                                                             reverse=True))]:
        if candidate and (Path(candidate) / "initdb").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _as_user() -> list[str]:
    """initdb and postgres refuse to run as root: run them as the 'postgres' user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.fail("running as root needs a 'postgres' user for the PostgreSQL tests "
                    "(the postgresql package creates it; or: useradd --system postgres)")
    return ["runuser", "-u", "postgres", "--"]


class PostgresServer:
    """A throw-away PostgreSQL cluster on 127.0.0.1 (trust auth, no Unix socket), in a temp dir."""

    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.dir = Path(tempfile.mkdtemp(prefix="moodlens-pg-"))
        self.port = free_port()
        self.prefix = _as_user()
        self.databases = 0

    def _run(self, *args, **kw):
        return subprocess.run([*self.prefix, *args], check=True, capture_output=True, text=True, **kw)

    def start(self) -> "PostgresServer":
        """initdb and start the server; raises CalledProcessError with its output."""
        if self.prefix:
            shutil.chown(self.dir, user="postgres")
        data = self.dir / "data"
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "moodlens", "--auth=trust",
                  "--encoding=UTF8", "--no-locale", "--no-sync")
        self._pg_ctl_start()
        return self

    def _pg_ctl_start(self) -> None:
        """Start the server on its cluster and port (loopback only, no Unix socket, no fsync)."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-l", str(self.dir / "server.log"), "-w",
                  "-t", "60", "-o", f"-h 127.0.0.1 -p {self.port} -k '' -c fsync=off -c full_page_writes=off",
                  "start")

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """The connection URL of ``database`` on this server."""
        return f"postgresql://moodlens@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database; returns its URL."""
        import psycopg

        self.databases += 1
        name = f"t{self.databases}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(kind: type[PostgresServer] = PostgresServer) -> PostgresServer:
    """A started server of ``kind``; skipped (failed under CI) without the binaries, failed if it will not start."""
    bindir = _pg_bindir()
    if bindir is None:
        unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql or set PG_BINDIR")
    server = kind(bindir)
    try:
        return server.start()
    except subprocess.CalledProcessError as exc:
        server.stop()
        pytest.fail(f"PostgreSQL did not start: {exc.stderr or exc.stdout}", pytrace=False)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the session: skipped (failed under CI) without the server binaries."""
    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres_server.new_database()


def send_frame(sc, seq: int, image: bytes, timeout: float = 15.0) -> dict:
    """Emit a ``frame`` from a Flask-SocketIO test client and wait for its answer, as the page does.

    Frames are analysed in a background task, so the answer (``faces`` or
    ``frame_error``) comes a little later; events of other names received
    meanwhile are dropped. Returns ``{"name", "args"}`` of the answer.
    """
    sc.emit("frame", {"seq": seq, "image": image})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in sc.get_received():
            if event["name"] in ("faces", "frame_error") and event["args"][0].get("seq") == seq:
                return event
        time.sleep(0.01)
    raise AssertionError(f"frame {seq} was not answered within {timeout} s")
