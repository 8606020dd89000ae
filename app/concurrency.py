"""Run CPU-bound or blocking work without blocking the event loop, whatever the async mode."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

log = logging.getLogger("moodlens.concurrency")


def run_cpu(async_mode: str, fn: Callable[..., Any], *args) -> Any:
    """Call ``fn(*args)``; under eventlet in a native thread pool (``eventlet.tpool``)."""
    if async_mode == "eventlet":
        from eventlet import tpool

        return tpool.execute(fn, *args)
    return fn(*args)


class Background:
    """``fn(*args)`` started now on a thread of its own (through :func:`run_cpu`), to be waited on for a
    bounded time: a caller that must not hang (a push, a health check) gives up waiting, ``fn`` goes on.

    Under eventlet (monkey-patched) the thread and the event are green and ``fn`` itself runs in the
    native pool, so neither a slow ``fn`` nor the wait blocks the event loop. An exception of ``fn``
    is never raised: ``error`` holds it, and it is logged unless ``log_errors`` is false.
    """

    def __init__(self, async_mode: str, fn: Callable[..., Any], *args, name: str = "background",
                 log_errors: bool = True):
        self.result: Any = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self._done = threading.Event()
        self._name = name
        self._log_errors = log_errors
        threading.Thread(target=self._run, args=(async_mode, fn, args), name=name, daemon=True).start()

    def _run(self, async_mode: str, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self.result = run_cpu(async_mode, fn, *args)
        except Exception as exc:  # a background job must report, not kill its thread silently
            self.error = exc
            if self._log_errors:
                log.exception("%s failed", self._name)
        finally:
            self._done.set()

    def running(self) -> bool:
        """True until ``fn`` has returned or raised."""
        return not self._done.is_set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for ``fn``; True when it has finished."""
        return self._done.wait(max(0.0, timeout))
