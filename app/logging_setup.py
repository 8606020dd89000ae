"""Logging to stdout, one line per record, level from LOG_LEVEL."""
from __future__ import annotations

import logging
import sys

from flask.logging import default_handler

from app.config import log_level


def init_app(app) -> None:
    """Send the app's and the recogniser's logs to stdout, in one format (not Flask's default: stderr); warn when
    the sessions are signed with a key made up at start-up."""
    level = log_level(app.config.get("LOG_LEVEL") or "INFO")  # finalize() refused any other name
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
    if app.config.get("SECRET_KEY_NOTE"):
        app.logger.warning("SECRET_KEY not set: using a %s; sessions do not survive a restart, and several "
                           "processes do not accept each other's (set SECRET_KEY: openssl rand -hex 32)",
                           app.config["SECRET_KEY_NOTE"])
