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
of restarting it in a loop. The eventlet mode is served by ``python -m app``.
"""
import sys

from app import create_app
from app.config import ConfigError
from app.vision.emotions import ModelLoadError

APP_LOAD_ERROR = 4  # gunicorn halts (rather than respawning) on this exit code

try:
    app = create_app()
except (ModelLoadError, ConfigError) as exc:
    print(f"MoodLens cannot start: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(APP_LOAD_ERROR) from None
