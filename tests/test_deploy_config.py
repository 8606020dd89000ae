"""The shipped deployment files agree with each other and with what the tests run.

Docker cannot run here, so docker-compose.yml is checked by reading it: the
services, the settings the app processes get (the same as tests/services.py
gives the processes it runs), the nginx template's placeholders, the
Dockerfile's user, health check and thread count.
"""
from __future__ import annotations

import re
import string

import pytest
import yaml

from tests.browser import free_port
from tests.conftest import ROOT
from tests.services import NGINX_TEMPLATE, NginxServer, app_env, nginx_binary

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_compose_has_nginx_apps_redis_postgres_and_a_one_shot_migration():
    services = COMPOSE["services"]
    apps = sorted(name for name in services if re.fullmatch(r"app\d+", name))
    assert len(apps) >= 2 and {"nginx", "redis", "postgres", "migrate"} <= set(services)
    upstreams = services["nginx"]["environment"]["MOODLENS_UPSTREAM_SERVERS"]
    assert re.findall(r"server (app\d+):8000;", upstreams) == apps  # every app process behind nginx, once
    assert services["migrate"]["command"] == ["flask", "--app", "wsgi", "db", "upgrade"]
    for app in apps:
        deps = services[app]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["nginx"]["depends_on"] == {a: {"condition": "service_healthy"} for a in apps}


def test_app_processes_get_the_settings_the_tests_run_them_with():
    env = COMPOSE["services"]["app1"]["environment"]
    assert env == COMPOSE["services"]["migrate"]["environment"]
    tested = app_env("postgresql://u@h/db", "redis://h:6379/0")
    # Same keys (the values differ: host names, secrets from the operator's environment).
    assert set(tested) - {"LOG_LEVEL"} <= set(env), set(tested) - set(env)
    assert env["DB_AUTO_UPGRADE"] == tested["DB_AUTO_UPGRADE"] == "0"
    assert env["TRUSTED_PROXIES"] == tested["TRUSTED_PROXIES"] == "1"
    assert env["DATABASE_URL"].startswith("postgresql://") and env["SOCKETIO_MESSAGE_QUEUE"].startswith("redis://")
    assert env["RATELIMIT_STORAGE_URI"].startswith("redis://") and env["MOODLENS_ENV"] == "production"
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # no default secret: compose refuses to start


def test_nginx_template_placeholders_are_exactly_what_compose_and_the_tests_fill():
    text = NGINX_TEMPLATE.read_text()
    body = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    placeholders = set(re.findall(r"\$\{(\w+)\}", body))
    nginx_env = COMPOSE["services"]["nginx"]["environment"]
    assert placeholders == {"NGINX_LISTEN", "MOODLENS_UPSTREAM_SERVERS", "NGINX_REAL_IP_FROM"} <= set(nginx_env)
    # What compose gives nginx when the operator sets nothing: a ${VAR:-default} value is its default.
    given = {k: re.sub(r"^\$\{\w+:-(.*)\}$", r"\1", str(v)) for k, v in nginx_env.items()}
    assert given["NGINX_REAL_IP_FROM"] == "127.0.0.1"
    assert nginx_env["NGINX_REAL_IP_FROM"].startswith("${NGINX_REAL_IP_FROM:-")  # the operator's, if set
    rendered = string.Template(body).safe_substitute(given)
    assert "${" not in rendered
    assert "ip_hash;" in body
    volume = COMPOSE["services"]["nginx"]["volumes"][0]
    assert volume.startswith("./deploy/nginx/moodlens.conf.template:/etc/nginx/templates/")


@pytest.mark.parametrize("needle", [
    r"^USER moodlens$",                               # not root
    r"HEALTHCHECK .*?/healthz",                       # model loaded, database and queue reachable
    r"COPY models \./models",                         # the model baked in
    r"--access-logfile - --error-logfile -",          # logs to stdout/stderr
    r"THREADS=64",
    r"COPY wsgi\.py gunicorn\.conf\.py \./",             # the hooks that store queued samples on stop
    r"exec gunicorn -c gunicorn\.conf\.py ",
])
def test_dockerfile(needle):
    assert re.search(needle, DOCKERFILE, re.M | re.S), needle


@pytest.mark.parametrize("path", ["/api/v1/analyze", "/socket.io/?EIO=4&transport=polling&sid=x"])
def test_nginx_keeps_request_bodies_off_disk(path):
    """A photo or a long-polling frame passes nginx in memory: nothing of it lands in a temporary file."""
    import urllib.error
    import urllib.request

    nginx = NginxServer(nginx_binary(), [free_port()])  # no app behind it: nginx reads the body, then answers 502
    nginx.start()
    try:
        body = bytes(range(256)) * (1_400_000 // 256)  # a 1.4 MB photo's worth
        request = urllib.request.Request(nginx.url + path, data=body, headers={"Content-Type": "image/jpeg"})
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)
        answer.value.close()
        assert answer.value.code == 502
    finally:
        nginx.stop()
    log = (nginx.dir / "error.log").read_text()
    assert "buffered to a temporary file" not in log, log
    nginx.cleanup()


def test_postgres_counts_as_healthy_only_once_it_answers_over_tcp():
    """The image's first start runs a temporary server on the Unix socket only (initdb), then restarts it: a
    socket check passes too early and the one-shot migration finds no server."""
    (check,) = [part for part in COMPOSE["services"]["postgres"]["healthcheck"]["test"] if "pg_isready" in part]
    assert re.search(r"pg_isready\b.*\s-h\s+127\.0\.0\.1\b", check), check


def test_compose_secrets_come_from_one_env_file_written_once_and_kept_out_of_git_and_images(tmp_path):
    import subprocess

    env_file = tmp_path / ".env"
    make = ["make", "--no-print-directory", "-C", str(ROOT), "compose-env", f"ENV_FILE={env_file}"]
    subprocess.run(make, check=True, capture_output=True, text=True)
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert re.fullmatch(r"[0-9a-f]{64}", values["SECRET_KEY"]) and re.fullmatch(r"[0-9a-f]{32}",
                                                                               values["POSTGRES_PASSWORD"])
    assert env_file.stat().st_mode & 0o777 == 0o600
    # Run again (a code update, a new shell): the database volume's password and the sessions' key stay.
    again = subprocess.run(make, check=True, capture_output=True, text=True)
    assert "kept" in again.stdout and dict(
        line.split("=", 1) for line in env_file.read_text().splitlines()) == values
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=ROOT, check=False).returncode == 0
    assert ".env" in (ROOT / ".dockerignore").read_text().split()
    header = (ROOT / "docker-compose.yml").read_text().split("\n\n")[0]
    assert "make compose-env" in header and "openssl rand" not in header


def _pins(path) -> dict[str, str]:
    """name -> version of every ``name==version`` line of a requirements or constraints file (names normalised)."""
    pins = {}
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return pins


def test_every_installed_package_is_pinned_in_the_constraints_and_installed_with_them():
    """Not only the requirements: their own dependencies too, so that a fresh setup gets what the suite ran."""
    from importlib.metadata import distributions

    constraints = _pins(ROOT / "constraints.txt")
    installed = {re.sub(r"[-_.]+", "-", d.metadata["Name"]).lower(): d.version for d in distributions()}
    installed = {name: version for name, version in installed.items() if name not in {"setuptools", "wheel"}}
    unpinned = {name: version for name, version in installed.items() if constraints.get(name) != version}
    assert unpinned == {}, "installed but not pinned so in constraints.txt (run make lock)"
    for requirements in ("requirements.txt", "requirements-dev.txt"):
        for name, version in _pins(ROOT / requirements).items():
            assert constraints.get(name) == version, (requirements, name, version)
    makefile = (ROOT / "Makefile").read_text()
    assert len(re.findall(r"pip install .*-r requirements(-dev)?\.txt -c constraints\.txt", makefile)) == 2
    assert "pip install --quiet --upgrade pip -c constraints.txt" in makefile
    assert re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", DOCKERFILE)
    assert re.search(r"COPY requirements\.txt constraints\.txt", DOCKERFILE)
