"""``python -m app``: serve MoodLens with Socket.IO's own server.

This is how the eventlet mode is served (``ASYNC_MODE=eventlet python -m app``;
gunicorn no longer has an eventlet worker). With ``ASYNC_MODE=threading`` it
runs the development server; production threading uses ``gunicorn`` (wsgi.py).
Listens on ``HOST`` (default 127.0.0.1) and ``PORT`` (default 8000). When the
model or the configuration cannot be loaded it prints why and exits with 1.
SIGTERM (``docker stop``, systemd, ``kill``) and SIGINT (Ctrl-C) stop it alike:
the server closes, the classroom's queued samples are written, one log line
says so, and it exits with 0 (1 when the database did not confirm them in time).
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
import signal  # noqa: E402
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


def end_serving_on_signals(eventlet: bool) -> list[str]:
    """Make SIGINT and SIGTERM end ``socketio.run`` by a KeyboardInterrupt in its loop, as Ctrl-C always did;
    the list returned receives the name of each signal received."""
    received: list[str] = []
    if eventlet:
        import greenlet
        from eventlet import hubs

        server_loop = greenlet.getcurrent()  # the greenlet that will run socketio.run

    def end(signum, frame):
        received.append(signal.Signals(signum).name)
        if eventlet and greenlet.getcurrent() not in (server_loop, hubs.get_hub().greenlet):
            # A green thread was running (a request, a frame): raised there, the interrupt would cut its work
            # short. The hub throws it into the server's loop as soon as that thread yields, as eventlet's
            # Timeout does; raised in the hub, it reaches that loop too (the hub's parent).
            hubs.get_hub().schedule_call_global(0, server_loop.throw, KeyboardInterrupt())
            return
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGTERM, end)  # its default action killed the process: no flush, no log line
    return received


def main(argv: list[str] | None = None) -> int:
    """Build the app and serve it until SIGINT or SIGTERM, then store the classroom's queued samples and return 0;
    1 when it cannot start, or when those samples could not be confirmed stored."""
    parse_args(argv)
    from app import create_app
    from app.config import ConfigError
    from app.extensions import socketio
    from app.shutdown import store_queued_samples
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
    received = end_serving_on_signals(app.config["ASYNC_MODE"] == "eventlet")
    try:
        # The Werkzeug server only serves the threading mode outside production;
        # it is still refused when MOODLENS_ENV=production (use gunicorn there).
        socketio.run(app, host=host, port=port, allow_unsafe_werkzeug=app.config["ENV"] != "production")
    except KeyboardInterrupt:
        pass  # the signal came while the server was closing, outside its loop's own handling of it
    # A repeated SIGTERM or Ctrl-C must not cut the final flush short.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return 0 if store_queued_samples(app, "/".join(received) or "server closed") else 1


if __name__ == "__main__":
    code = main()
    from app.shutdown import end_process  # without finalizing: see there

    end_process(code)
