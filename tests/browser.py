"""Real-browser test kit: a fake camera, the real server in a subprocess, headless Chromium.

Its fixtures reach every test module (``tests/conftest.py`` loads this module
as a pytest plugin); a module imports the helpers it calls and marks its tests
``browser``::

    from tests.browser import make_fake_camera

    pytestmark = pytest.mark.browser

    def test_page(server_factory, browser_factory, tmp_path):
        server = server_factory("threading")
        camera = make_fake_camera(FACES / "obama.jpg", tmp_path / "obama.y4m")
        page = browser_factory(camera).new_page()
        page.goto(server.url + "/live")

Chromium is the system one (``$CHROMIUM``, else ``/usr/bin/chromium``, else ``chromium`` on ``PATH``), driven by
Playwright; nothing is downloaded. Without it the tests are skipped, or fail
when ``CI`` is set.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.conftest import MODEL, ROOT

# $CHROMIUM, else Debian's, else whichever chromium is on PATH (what the test-deps installer accepts).
CHROMIUM = Path(os.environ.get("CHROMIUM") or ("/usr/bin/chromium" if os.path.isfile("/usr/bin/chromium")
                                               else shutil.which("chromium") or "/usr/bin/chromium"))
CHROMIUM_ARGS = (
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
)
SERVER_MODES = ("threading", "eventlet")


def unavailable(reason: str):
    """Fail when ``CI`` is set (a CI job must not silently skip), else skip with the reason."""
    if os.environ.get("CI"):
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


# -- fake camera --------------------------------------------------------------------------------

def letterbox(image_path: str | os.PathLike, size: tuple[int, int] = (640, 480)):
    """The photo as one BGR camera frame of ``size`` (width, height).

    Scaled to fill the frame's height (or its width, when the photo is wider
    than the frame) and centred on black, so a portrait keeps a big face.
    """
    import cv2
    import numpy as np

    width, height = size
    img = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {image_path}")
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    frame = np.zeros((height, width, 3), np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    frame[y0:y0 + nh, x0:x0 + nw] = cv2.resize(img, (nw, nh), interpolation=interp)
    return frame


def make_fake_camera(image_path: str | os.PathLike, out_path: str | os.PathLike,
                     size: tuple[int, int] = (640, 480), frames: int = 5) -> Path:
    """Write a YUV4MPEG2 clip of the photo (see ``letterbox``) for ``--use-file-for-fake-video-capture``.

    Chromium loops the clip, so a few identical frames are enough. Returns the
    clip's absolute path.
    """
    import cv2

    width, height = size
    if width % 2 or height % 2:
        raise ValueError(f"frame size must be even for 4:2:0 video, got {size}")
    yuv = cv2.cvtColor(letterbox(image_path, size), cv2.COLOR_BGR2YUV_I420).tobytes()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        for _ in range(frames):
            f.write(b"FRAME\n")
            f.write(yuv)
    return out.resolve()


# -- the real server ----------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _whole_model(path: Path) -> bool:
    """Whether ``path`` reads as a whole model file: a TensorFlow Lite flatbuffer or a Keras zip archive."""
    if path.suffix == ".tflite":
        with path.open("rb") as fh:
            return fh.read(8)[4:8] == b"TFL3"  # the flatbuffer's file identifier
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except zipfile.BadZipFile:
        return False


def snapshot_model(dest_dir: Path, source: Path = MODEL, attempts: int = 20) -> Path:
    """Copy the model so a training run rewriting ``source`` cannot change it under a test.

    A copy taken while the file is being rewritten is not a valid model file
    (or the file changed during the copy); such a copy is retried.
    """
    if not source.is_file():
        unavailable(f"{source} is missing: train a model first (python -m app.training.train)")
    dest = Path(dest_dir) / source.name
    for _ in range(attempts):
        before = source.stat()
        shutil.copyfile(source, dest)
        after = source.stat()
        if (before.st_mtime_ns, before.st_size) == (after.st_mtime_ns, after.st_size) and _whole_model(dest):
            return dest
        time.sleep(0.5)
    raise RuntimeError(f"could not take a consistent copy of {source}: it keeps changing")


class ServerError(RuntimeError):
    """The server did not start: the message carries its output; ``exit_code`` is None if it hung."""

    def __init__(self, message: str, exit_code: int | None = None, output: str = ""):
        super().__init__(message)
        self.exit_code = exit_code
        self.output = output


class ServerProcess:
    """The real MoodLens server as a subprocess on a free loopback port.

    ``mode="threading"``: ``gunicorn -c gunicorn.conf.py -k gthread -w 1 --threads 64 wsgi:app`` (production);
    ``mode="eventlet"``: ``ASYNC_MODE=eventlet python -m app``. Use as a context
    manager, or call ``start()`` and ``stop()``. Output goes to ``log_path``.
    """

    def __init__(self, mode: str = "threading", *, workdir: str | os.PathLike, model_path: str | os.PathLike = MODEL,
                 env: dict[str, str] | None = None, startup_timeout: float = 120.0, threads: int = 64):
        if mode not in SERVER_MODES:
            raise ValueError(f"mode must be one of {SERVER_MODES}, got {mode!r}")
        self.mode = mode
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model_path = Path(model_path)
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.threads = threads  # gunicorn threads, as the Makefile and the Dockerfile (THREADS)
        self.log_path = self.workdir / f"server-{mode}.log"
        self.port: int | None = None
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        if self.mode == "threading":
            return [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-k", "gthread", "-w", "1",
                    "--threads", str(self.threads),
                    "-b", f"127.0.0.1:{port}", "--graceful-timeout", "5", "--no-control-socket", "wsgi:app"]
        return [sys.executable, "-m", "app"]

    def environment(self, port: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "ASYNC_MODE": self.mode,
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "MODEL_PATH": str(self.model_path),
            "SECRET_KEY": "browser-test-secret",
            "DATABASE_URL": f"sqlite:///{self.workdir / 'moodlens.db'}",
            "INSTANCE_PATH": str(self.workdir / "instance"),
            "SOCKETIO_MESSAGE_QUEUE": "",  # none unless a test asks for one
            "MOODLENS_ENV": "development",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        env.update(self.extra_env)
        return env

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _fail(self, why: str, exit_code: int | None = None) -> ServerError:
        output = self.log_text()
        tail = "\n".join(output.splitlines()[-60:])
        return ServerError(f"{self.mode} server: {why}\n--- server output ({self.log_path}) ---\n{tail}",
                           exit_code, output)

    def start(self) -> "ServerProcess":
        """Start the server and wait until ``/healthz`` answers 200; raises ServerError.

        Started again after ``stop()``, it listens on the same port (a restart).
        """
        if self.proc is not None:
            raise RuntimeError("server already started")
        self.port = self.port or free_port()
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(self.port), cwd=ROOT, env=self.environment(self.port), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,  # its own process group
        )
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                self.stop()
                raise self._fail(f"exited with code {code} before it was ready", code)
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise self._fail(f"/healthz did not answer 200 within {self.startup_timeout:.0f} s")
            time.sleep(0.2)

    def stop(self, timeout: float = 15.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the server's whole process group (as ``docker stop`` or, with SIGINT, Ctrl-C in its terminal);
        SIGKILL after ``timeout``. Returns its exit code."""
        proc, self.proc = self.proc, None
        code = None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            # gunicorn's worker may outlive a killed master: clear the group.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="session")
def camera(faces_dir, tmp_path_factory) -> Path:
    """The fake camera most page tests stream: Obama's portrait (a module may define its own ``camera``)."""
    from tests.conftest import require

    return make_fake_camera(require(faces_dir / "obama.jpg"), tmp_path_factory.mktemp("camera") / "obama.y4m")


@pytest.fixture(scope="session")
def model_copy(tmp_path_factory) -> Path:
    """A stable copy of the shipped model for the servers of this session."""
    return snapshot_model(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory, model_copy):
    """``start(mode="threading", **env) -> ServerProcess``, started; all are stopped at the session's end."""
    servers: list[ServerProcess] = []

    def start(mode: str = "threading", **env: str) -> ServerProcess:
        workdir = tmp_path_factory.mktemp(f"server-{mode}")
        server = ServerProcess(mode, workdir=workdir, model_path=model_copy, env=env)
        servers.append(server)
        return server.start()

    yield start
    for server in reversed(servers):
        server.stop()


# -- headless Chromium --------------------------------------------------------------------------

_PLAYWRIGHT: dict = {"driver": None, "users": 0}


@pytest.fixture(scope="session")
def playwright_session():
    """One Playwright driver for the session (skips, or fails in CI, without Chromium).

    Each test module that imports this fixture gets its own session-scoped
    instance; they share one driver (a second sync driver in the same thread
    fails with "Sync API inside the asyncio loop"), stopped when the last ends.
    """
    if not CHROMIUM.is_file():
        unavailable(f"Chromium not found at {CHROMIUM} (install the 'chromium' package or set CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is not installed (pip install -r requirements-dev.txt)")
    if _PLAYWRIGHT["driver"] is None:
        _PLAYWRIGHT["driver"] = sync_playwright().start()
    _PLAYWRIGHT["users"] += 1
    try:
        yield _PLAYWRIGHT["driver"]
    finally:
        _PLAYWRIGHT["users"] -= 1
        if _PLAYWRIGHT["users"] == 0:
            driver, _PLAYWRIGHT["driver"] = _PLAYWRIGHT["driver"], None
            driver.stop()


@pytest.fixture
def browser_factory(playwright_session):
    """``launch(camera=None, *, fake_device=None, fake_ui=True, extra_args=()) -> Browser``.

    ``camera``: a .y4m file (see ``make_fake_camera``) the fake webcam plays;
    ``fake_device``: offer a fake webcam (default: when ``camera`` is given;
    ``True`` without a file gives Chromium's test pattern); ``fake_ui``: accept
    the camera permission prompt. Every browser launched is closed after the test.
    """
    launched = []

    def launch(camera: str | os.PathLike | None = None, *, fake_device: bool | None = None, fake_ui: bool = True,
               extra_args: tuple[str, ...] = ()):
        args = list(CHROMIUM_ARGS)
        if fake_ui:
            args.append("--use-fake-ui-for-media-stream")
        if fake_device if fake_device is not None else camera is not None:
            args.append("--use-fake-device-for-media-stream")
        if camera is not None:
            args.append(f"--use-file-for-fake-video-capture={Path(camera).resolve()}")
        args.extend(extra_args)
        browser = playwright_session.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        launched.append(browser)
        return browser

    yield launch
    for browser in reversed(launched):
        with contextlib.suppress(Exception):
            browser.close()


def watch(page) -> list[str]:
    """Collect the page's uncaught errors and console errors into the returned list."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
    return problems
