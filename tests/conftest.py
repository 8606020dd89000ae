"""Shared fixtures: the app with the shipped model, its clients, test images."""
from __future__ import annotations

import gc
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# Fixtures shared by the test modules, each kit after those it imports: the real-browser kit's (the server
# in a subprocess, Chromium), the classroom's (an app on a fresh database, teachers, students, PostgreSQL)
# and the loopback services' (Redis, nginx, a cluster of app processes).
pytest_plugins = ["tests.browser", "tests.classroom_fixtures", "tests.services"]


def shared_dir() -> Path:
    """The shared data folder beside the repository (or MOODLENS_SHARED)."""
    return Path(os.environ.get("MOODLENS_SHARED", ROOT.parent / "shared")).resolve()


SHARED = shared_dir()
FACES = SHARED / "faces"
FER = SHARED / "fer2013"
MODEL = ROOT / "models" / "emotion.int8.tflite"  # the served model (Config.MODEL_PATH)
FLOAT_MODEL = ROOT / "models" / "emotion.keras"  # its float source


def require(path: Path) -> Path:
    """Fail (in CI) or skip (elsewhere, with the reason) when shared data is missing."""
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: CI needs ../shared beside the repository")
        pytest.skip(f"{path} is missing (set MOODLENS_SHARED)")
    return path


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return require(FACES)


@pytest.fixture(scope="session")
def fer_dir() -> Path:
    return require(FER)


def make_app(**overrides):
    from app import create_app

    # An in-memory database unless a test asks for one: no file in the repository's instance folder.
    config = {"TESTING": True, "SECRET_KEY": "test-secret", "MODEL_PATH": str(MODEL), "DATABASE_URL": "sqlite://"}
    config.update(overrides)
    return create_app(config)


@pytest.fixture(scope="session", autouse=True)
def _short_model_card_timing():
    """The model cards the training tools write in tests time 20 calls, not 300: the tests check what a card
    records, not the figure itself."""
    from app.training import card

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(card, "TIMING_CALLS", 20)
        yield


@pytest.fixture(scope="module", autouse=True)
def _finalise_what_the_module_left():
    """Whatever a test module left unclosed (a socket, a file) is finalised when the module ends.

    Its ResourceWarning, an error in this suite, is then reported against the
    last test of the module that leaked it, not against whichever later test
    happens to run the garbage collector.
    """
    yield
    gc.collect()


@pytest.fixture
def app():
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def socket_client(app, client):
    from app.extensions import socketio

    sc = socketio.test_client(app, flask_test_client=client)
    yield sc
    if sc.is_connected():
        sc.disconnect()
