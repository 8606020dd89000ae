"""``python -m app``: serve MoodLens with Socket.IO's own server.

This is how the eventlet mode is served (``ASYNC_MODE=eventlet python -m app``;
gunicorn no longer has an eventlet worker). With ``ASYNC_MODE=threading`` it
runs the development server; production threading uses ``gunicorn`` (wsgi.py).
Listens on ``HOST`` (default 127.0.0.1) and ``PORT`` (default 8000). When the
model or the configuration cannot be loaded it prints why and exits with 1.
"""
import os
import warnings

if os.environ.get("ASYNC_MODE") == "eventlet":
    # Before any other import: sockets, threads and locks must be green everywhere.
    with warnings.catch_warnings():
        # Its "eventlet is deprecated" notice; DESIGN.md says why this mode exists.
        warnings.simplefilter("ignore")
        import eventlet

    eventlet.monkey_patch()

import argparse  # noqa: E402
import sys  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """No options: ``--help`` says where the settings come from; anything else is refused (exit 2)."""
    parser = argparse.ArgumentParser(
        prog="python -m app",
        description="Serve MoodLens with Socket.IO's own server: the eventlet mode (ASYNC_MODE=eventlet), or "
                    "the development server (threading). Production threading mode is served by gunicorn "
                    "(make run, wsgi.py).",
        epilog="Every setting is an environment variable, e.g. HOST (127.0.0.1), PORT (8000), ASYNC_MODE "
               "(threading), MODEL_PATH, DATABASE_URL, MOODLENS_ENV, SECRET_KEY: see the README's Configuration.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the app and serve it until interrupted; 1 when it cannot start."""
    parse_args(argv)
    from app import create_app
    from app.config import ConfigError
    from app.extensions import socketio
    from app.vision.emotions import ModelLoadError

    raw_port = os.environ.get("PORT") or "8000"
    if not (raw_port.isascii() and raw_port.isdigit() and 1 <= int(raw_port) <= 65535):
        print(f"MoodLens cannot start: PORT must be a port number from 1 to 65535, got {raw_port!r}", file=sys.stderr)
        return 1
    try:
        app = create_app()
    except (ModelLoadError, ConfigError) as exc:
        print(f"MoodLens cannot start: {exc}", file=sys.stderr)
        return 1
    port = int(raw_port)
    host = os.environ.get("HOST") or "127.0.0.1"
    # The Werkzeug server only serves the threading mode outside production;
    # it is still refused when MOODLENS_ENV=production (use gunicorn there).
    socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=app.config["ENV"] != "production")
    return 0


if __name__ == "__main__":
    sys.exit(main())
