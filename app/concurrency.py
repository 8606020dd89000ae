"""Run CPU-bound work without blocking the event loop, whatever the async mode."""
from __future__ import annotations

from typing import Any, Callable


def run_cpu(async_mode: str, fn: Callable[..., Any], *args) -> Any:
    """Call ``fn(*args)``; under eventlet in a native thread pool (``eventlet.tpool``)."""
    if async_mode == "eventlet":
        from eventlet import tpool

        return tpool.execute(fn, *args)
    return fn(*args)
