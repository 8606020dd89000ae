"""WSGI entry point: ``gunicorn -c gunicorn.conf.py -k gthread -w 1 --threads 64 -b 0.0.0.0:8000 wsgi:app``.

One worker per process (Flask-SocketIO keeps its clients in the process), with
threads for concurrency (``ASYNC_MODE=threading``, the default). Every open
Socket.IO connection holds one thread for its lifetime: ``--threads`` must
exceed the number of clients a process serves at once, or the next ones (and
every page) wait. The model is
loaded when the worker imports this module, not in gunicorn's master: TensorFlow
does not survive a fork once initialised, so do not use ``--preload``.

When the model or the configuration cannot be loaded, the worker prints why and
exits with gunicorn's "app failed to load" code (4), so gunicorn stops instead
of restarting it in a loop. The eventlet mode is served by ``python -m app``, which
monkey-patches before anything else: ``ASYNC_MODE=eventlet`` is refused here.
"""
import os
import sys

from app import create_app
from app.config import Config, ConfigError
from app.vision.emotions import ModelLoadError

APP_LOAD_ERROR = 4  # gunicorn halts (rather than respawning) on this exit code


def refuse_eventlet() -> None:
    """ConfigError for ``ASYNC_MODE=eventlet``: gunicorn's gthread worker is never monkey-patched, and Socket.IO's
    eventlet mode does not work in its plain threads. The ``flask`` command (``flask --app wsgi db upgrade``) serves
    nothing, so it may run with the eventlet settings."""
    eventlet = os.environ.get("ASYNC_MODE", Config.ASYNC_MODE) == "eventlet"
    if eventlet and os.environ.get("FLASK_RUN_FROM_CLI") != "true":
        raise ConfigError("ASYNC_MODE=eventlet is served by python -m app (make run-eventlet); "
                          "gunicorn serves threading")


try:
    refuse_eventlet()
    app = create_app()
except (ModelLoadError, ConfigError) as exc:
    print(f"MoodLens cannot start: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
