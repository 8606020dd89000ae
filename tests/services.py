"""Real services on loopback for the multi-process tests: Redis, nginx (deploy/nginx), PostgreSQL, app processes.

Each runs as a child process in a temp folder on a free 127.0.0.1 port, and
can be stopped and started again on the same port (the fault tests take a
service away and bring it back). PostgreSQL is the classroom kit's
``PostgresServer`` with ``halt``/``resume`` added. The fixtures (``redis_server``,
``pausable_postgres``, ``cluster_factory``) reach every test module:
``tests/conftest.py`` loads this module as a pytest plugin.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser import ServerProcess, free_port, unavailable
from tests.classroom_fixtures import PostgresServer
from tests.conftest import ROOT

NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "moodlens.conf.template"


def wait_port(port: int, timeout: float, alive=lambda: True) -> bool:
    """True once something accepts connections on 127.0.0.1:``port`` (False at timeout or if not ``alive()``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        time.sleep(0.05)
    return False


def _find(name: str, *extra: str) -> str | None:
    for candidate in (shutil.which(name), *extra):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


class _Child:
    """A service run as a child process in its own process group."""

    name = "service"

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix=f"moodlens-{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / f"{self.name}.log"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout: float = 20.0):
        """Start (again, on the same port) and wait until it accepts connections."""
        if self.proc is not None:
            raise RuntimeError(f"{self.name} already running")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if not wait_port(self.port, timeout, alive=lambda: self.proc.poll() is None):
            output = self.log_path.read_text(errors="replace")[-3000:]
            self.stop()
            raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{output}")
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Stop the process group (SIGKILL after ``timeout``)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(_Child):
    """redis-server on 127.0.0.1, nothing persisted."""

    name = "redis"

    def __init__(self, binary: str):
        super().__init__()
        self.binary = binary

    def command(self) -> list[str]:
        return [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
                "--dir", str(self.dir), "--protected-mode", "yes"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


class NginxServer(_Child):
    """nginx running ``deploy/nginx/moodlens.conf.template`` with the given app ports as upstreams."""

    name = "nginx"

    def __init__(self, binary: str, upstream_ports: list[int], real_ip_from: str = "127.0.0.1"):
        super().__init__()
        self.binary = binary
        self.upstream_ports = list(upstream_ports)
        self.real_ip_from = real_ip_from
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / "tmp" / sub).mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        for d in (self.dir / "tmp").rglob("*"):  # workers run as an unprivileged user when started as root
            os.chmod(d, 0o777)
        os.chmod(self.dir / "tmp", 0o777)
        self.access_log = self.dir / "access.log"
        self.conf = self.dir / "nginx.conf"
        self.write_config()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def site_config(self) -> str:
        """The deployment template with this cluster's values, exactly as envsubst fills it in the container."""
        servers = " ".join(f"server 127.0.0.1:{p};" for p in self.upstream_ports)
        values = {"NGINX_LISTEN": f"127.0.0.1:{self.port}", "MOODLENS_UPSTREAM_SERVERS": servers,
                  "NGINX_REAL_IP_FROM": self.real_ip_from}
        text = NGINX_TEMPLATE.read_text()
        rendered = string.Template(text).safe_substitute(values)
        # The test reads the access log (which process served whom); the container logs to stdout.
        return rendered.replace("access_log /dev/stdout moodlens;", f"access_log {self.access_log} moodlens;")

    def write_config(self) -> None:
        (self.dir / "moodlens.conf").write_text(self.site_config())
        tmp = self.dir / "tmp"
        self.conf.write_text(f"""daemon off;
worker_processes 1;
pid {self.dir / 'nginx.pid'};
error_log {self.dir / 'error.log'} warn;
events {{ worker_connections 512; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    client_body_temp_path {tmp / 'client_body'};
    proxy_temp_path {tmp / 'proxy'};
    fastcgi_temp_path {tmp / 'fastcgi'};
    uwsgi_temp_path {tmp / 'uwsgi'};
    scgi_temp_path {tmp / 'scgi'};
    include {self.dir / 'moodlens.conf'};
}}
""")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf), "-p", str(self.dir), "-e", str(self.dir / "error.log")]

    def check(self) -> None:
        """``nginx -t`` on the configuration (raises with nginx's message)."""
        done = subprocess.run([*self.command(), "-t"], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"nginx -t failed:\n{done.stderr}")

    def upstreams_of(self, marker: str, timeout: float = 10.0) -> set[str]:
        """The upstreams (127.0.0.1:port) that served the logged requests containing ``marker``.

        Waits up to ``timeout`` for a first one; nginx logs a request when it ends
        (a WebSocket only when it closes).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.access_log.exists():
                found = {line.split("upstream=", 1)[1].split()[0].split(",")[0]
                         for line in self.access_log.read_text(errors="replace").splitlines()
                         if marker in line and "upstream=" in line}
                if found:
                    return found
            time.sleep(0.05)
        return set()

    def upstream_of(self, marker: str, timeout: float = 10.0) -> str | None:
        """The one upstream that served the requests containing ``marker`` (None: none, or several)."""
        found = self.upstreams_of(marker, timeout)
        return found.pop() if len(found) == 1 else None


class PausablePostgres(PostgresServer):
    """The classroom kit's PostgreSQL, which can also be halted and resumed on the same port with its data."""

    def halt(self) -> None:
        """Stop the server now (fast shutdown: open connections are cut), keeping the data."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start it again on the same port."""
        self._pg_ctl_start()


# -- fixtures ---------------------------------------------------------------------------------------

class HungServer:
    """A listener on 127.0.0.1:``port`` that accepts connections and never answers a byte (a paused VM, a
    network partition, a stopped process); ``close()`` drops it and every connection it accepted."""

    def __init__(self, port: int = 0):
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                self.held.append(self.server.accept()[0])
            except TimeoutError:
                continue

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(5)
        self.server.close()
        for conn in self.held:
            conn.close()


def redis_binary() -> str:
    found = _find("redis-server", "/usr/bin/redis-server")
    if not found:
        unavailable("redis-server not found (apt-get install redis-server; make system-test-deps)")
    return found


def nginx_binary() -> str:
    found = _find("nginx", "/usr/sbin/nginx")
    if not found:
        unavailable("nginx not found (apt-get install nginx; make system-test-deps)")
    return found


@pytest.fixture
def redis_server():
    """A fresh Redis on loopback for one test (stopped and removed afterwards)."""
    server = RedisServer(redis_binary()).start()
    yield server
    server.cleanup()


@pytest.fixture
def pausable_postgres():
    """A PostgreSQL server of its own for a test that takes it away (skipped/failed as the kit's one)."""
    from tests.classroom_fixtures import start_postgres

    server = start_postgres(PausablePostgres)
    yield server
    with contextlib.suppress(subprocess.CalledProcessError):
        server.resume()  # stop() expects it running; a halted one just fails to resume twice
    server.stop()


@dataclass
class Cluster:
    """N app processes behind nginx, sharing PostgreSQL and Redis, as docker-compose.yml runs them."""

    apps: list[ServerProcess]
    nginx: NginxServer
    database_url: str
    redis: RedisServer | None
    env: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.nginx.url

    def app_at(self, upstream: str) -> ServerProcess:
        port = int(upstream.rsplit(":", 1)[1])
        return next(a for a in self.apps if a.port == port)


def app_env(database_url: str, redis_url: str | None, **extra: str) -> dict[str, str]:
    """The app processes' settings, as in docker-compose.yml (x-app environment)."""
    env = {
        "DATABASE_URL": database_url,
        "DB_AUTO_UPGRADE": "0",                # the migrate step did it, once
        "TRUSTED_PROXIES": "1",                # nginx in front: client address from X-Forwarded-For
        "SECRET_KEY": "cluster-test-secret-" + "s" * 32,
        "LOG_LEVEL": "INFO",
    }
    if redis_url:
        env["SOCKETIO_MESSAGE_QUEUE"] = redis_url
        env["RATELIMIT_STORAGE_URI"] = redis_url
    env.update(extra)
    return env


def migrate(env: dict[str, str], workdir: Path) -> None:
    """``flask --app wsgi db upgrade``: the compose file's one-shot ``migrate`` service."""
    full = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "MOODLENS_ENV": "development",
            "INSTANCE_PATH": str(workdir / "instance"), **env}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"flask db upgrade failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


@pytest.fixture
def cluster_factory(tmp_path_factory, model_copy):
    """``start(database_url, redis, n=2, **env) -> Cluster``: migrate, start n app processes and nginx."""
    started: list = []

    def start(database_url: str, redis: RedisServer | None, n: int = 2, **extra: str) -> Cluster:
        env = app_env(database_url, redis.url if redis else None, **extra)
        work = tmp_path_factory.mktemp("cluster")
        migrate(env, work)
        apps = []
        for i in range(n):
            app = ServerProcess("threading", workdir=work / f"app{i + 1}", model_path=model_copy,
                                env={**env, "INSTANCE_PATH": str(work / f"app{i + 1}" / "instance")})
            started.append(app)
            apps.append(app.start())
        nginx = NginxServer(nginx_binary(), [a.port for a in apps])
        started.append(nginx)
        nginx.check()
        nginx.start()
        return Cluster(apps, nginx, database_url, redis, env)

    yield start
    for thing in reversed(started):
        if isinstance(thing, NginxServer):
            thing.cleanup()
        else:
            thing.stop()
