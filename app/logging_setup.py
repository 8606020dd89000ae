"""Logging to stdout, one line per record, level from LOG_LEVEL."""
from __future__ import annotations

import logging
import sys

from flask.logging import default_handler


def init_app(app) -> None:
    """Send the app's and the recogniser's logs to stdout, in one format (not Flask's default: stderr)."""
    level = getattr(logging, str(app.config.get("LOG_LEVEL", "INFO")).upper(), logging.INFO)
    root = logging.getLogger("moodlens")
    handler = next((h for h in root.handlers if getattr(h, "_moodlens", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler._moodlens = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    app.logger.removeHandler(default_handler)
    if handler not in app.logger.handlers:
        app.logger.addHandler(handler)
    app.logger.setLevel(level)
