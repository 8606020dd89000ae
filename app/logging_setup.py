"""Logging to stdout, one line per record, level from LOG_LEVEL."""
from __future__ import annotations

import logging
import sys


def init_app(app) -> None:
    """Send the app's and the recogniser's logs to stdout."""
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    root = logging.getLogger("moodlens")
    if not any(getattr(h, "_moodlens", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._moodlens = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    app.logger.setLevel(level)
