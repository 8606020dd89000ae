"""gunicorn hooks for MoodLens: a stopping worker closes its Socket.IO connections and stores the classroom's
queued samples, as ``python -m app`` does.

gunicorn reads this file from the folder it starts in; ``make run`` and the Dockerfile name it too
(``-c gunicorn.conf.py``). The command line keeps the settings (``-k gthread -w 1 --threads N``, see wsgi.py).

Why: on SIGTERM (``docker stop``, systemd) a gthread worker stops accepting and waits up to
``--graceful-timeout`` (30 s) for its open connections, and a Socket.IO connection lasts as long as its page.
Left open, they outlast the grace period (and docker's 10 s): the worker is killed, and the samples queued since
the last write are lost. So the worker closes them at once (each page reconnects by itself, to this server once it
is back or to another process), and writes what is queued as it exits; the same on SIGINT (Ctrl-C) and SIGQUIT,
gunicorn's quick stop.
"""
import signal
import sys
import threading

_received: list[str] = []  # the stop signals this worker received, first first
_closing: list[threading.Thread] = []  # the thread closing the Socket.IO connections after SIGTERM
QUICK_STOPS = ("SIGINT", "SIGQUIT")  # gunicorn's worker leaves at once on these


def post_worker_init(worker):
    """Note each stop signal; on SIGTERM also start closing the Socket.IO connections, then let gunicorn's own
    handler run (SIGTERM: finish in-flight requests; SIGINT and SIGQUIT: leave at once).

    Once the worker is leaving at once, further stop signals are only noted: after Ctrl-C the master's SIGQUIT
    follows the terminal's SIGINT, and gunicorn's handler would raise ``SystemExit`` wherever the worker is, the
    ``worker_exit`` hook included, before it has ignored them. A SIGINT or SIGQUIT after SIGTERM still turns the
    graceful stop into a quick one.
    """
    from app.shutdown import close_connections

    def wrap(signum):
        previous = signal.getsignal(signum)

        def handler(sig, frame):
            leaving = any(name in QUICK_STOPS for name in _received)
            _received.append(signal.Signals(sig).name)
            if leaving:
                return
            if sig == signal.SIGTERM and not _closing:
                _closing.append(threading.Thread(target=close_connections, name="moodlens-stop", daemon=True))
                _closing[0].start()
            previous(sig, frame)

        signal.signal(signum, handler)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        wrap(signum)
    signal.siginterrupt(signal.SIGTERM, False)  # as gunicorn set it: the signal does not interrupt system calls


def worker_exit(server, worker):
    """The worker is leaving: close what is still connected, store the queued samples, and end the process.

    Ended with ``app.shutdown.end_process`` (``os._exit``): analyses still in flight run on threads inside
    TensorFlow Lite, which the interpreter's finalization would abort. The exit code is gunicorn's own when the worker
    failed (-1 after a crash, 3 when it could not boot: the master stops); otherwise 0, or 1 when the samples are
    not confirmed stored. A worker whose app never loaded exits as gunicorn decides (code 4 stops the master).
    """
    from flask import Flask

    app = getattr(worker, "wsgi", None)
    if not isinstance(app, Flask):
        return
    # A repeated signal (the master's SIGQUIT after Ctrl-C) must not cut the write short.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    leaving = sys.exc_info()[1]  # gunicorn calls this hook while its sys.exit(code) propagates
    failed = leaving.code if isinstance(leaving, SystemExit) and leaving.code not in (0, None) else None
    from app.shutdown import close_connections, end_process, store_queued_samples

    stored = False
    try:
        for thread in _closing:
            thread.join(5)  # its disconnect handlers done before the last ones run here
        close_connections()
        # The first signal says why (after Ctrl-C the master's SIGQUIT follows the terminal's SIGINT).
        stored = store_queued_samples(app, _received[0] if _received else "worker exiting")
    finally:
        if failed is not None:
            end_process(failed if isinstance(failed, int) else 1)
        end_process(0 if stored else 1)
