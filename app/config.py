"""Configuration: every setting comes from an environment variable.

``Config.from_env()`` reads the environment once; tests build ``TestConfig``
or pass a dict of overrides to ``create_app``.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_NOTE = "development-only secret, generated at start-up"


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the server refuses to start."""


class Config:
    """Settings with their defaults; see the README's configuration table."""

    ENV = "development"
    SECRET_KEY: str | None = None
    MODEL_PATH = str(ROOT / "models" / "emotion.keras")
    MODEL_TTA = True
    ASYNC_MODE = "threading"
    MAX_UPLOAD_BYTES = 10 * 1024 * 1024
    MAX_IMAGE_PIXELS = 40_000_000
    MAX_FRAME_BYTES = 1024 * 1024
    MAX_FRAME_PIXELS = 1920 * 1080
    MAX_FACES = 16
    FULL_SCAN_EVERY = 8
    SCORE_SMOOTHING = 0.6
    CORS_ALLOWED_ORIGINS: str | list[str] | None = None
    SOCKETIO_MESSAGE_QUEUE: str | None = None
    DATABASE_URL: str | None = None
    LOG_LEVEL = "INFO"
    TESTING = False

    @classmethod
    def from_env(cls) -> dict:
        """Read every setting from the environment into a dict."""
        env = os.environ
        cfg = {
            "ENV": env.get("MOODLENS_ENV", cls.ENV),
            "SECRET_KEY": env.get("SECRET_KEY") or None,
            "MODEL_PATH": env.get("MODEL_PATH") or cls.MODEL_PATH,
            "MODEL_TTA": _bool(env.get("MODEL_TTA"), cls.MODEL_TTA),
            "ASYNC_MODE": env.get("ASYNC_MODE", cls.ASYNC_MODE),
            "MAX_UPLOAD_BYTES": _int("MAX_UPLOAD_BYTES", cls.MAX_UPLOAD_BYTES),
            "MAX_IMAGE_PIXELS": _int("MAX_IMAGE_PIXELS", cls.MAX_IMAGE_PIXELS),
            "MAX_FRAME_BYTES": _int("MAX_FRAME_BYTES", cls.MAX_FRAME_BYTES),
            "MAX_FRAME_PIXELS": _int("MAX_FRAME_PIXELS", cls.MAX_FRAME_PIXELS),
            "MAX_FACES": _int("MAX_FACES", cls.MAX_FACES),
            "FULL_SCAN_EVERY": _int("FULL_SCAN_EVERY", cls.FULL_SCAN_EVERY),
            "SCORE_SMOOTHING": float(env.get("SCORE_SMOOTHING", cls.SCORE_SMOOTHING)),
            "CORS_ALLOWED_ORIGINS": env.get("CORS_ALLOWED_ORIGINS") or None,
            "SOCKETIO_MESSAGE_QUEUE": env.get("SOCKETIO_MESSAGE_QUEUE") or None,
            "DATABASE_URL": env.get("DATABASE_URL") or None,
            "LOG_LEVEL": env.get("LOG_LEVEL", cls.LOG_LEVEL),
        }
        return cfg


def finalize(cfg: dict) -> dict:
    """Validate a settings dict and fill in derived values; raises ConfigError."""
    if cfg["ASYNC_MODE"] not in {"threading", "eventlet"}:
        raise ConfigError(f"ASYNC_MODE must be 'threading' or 'eventlet', got {cfg['ASYNC_MODE']!r}")
    if not cfg.get("SECRET_KEY"):
        if cfg["ENV"] == "production":
            raise ConfigError("SECRET_KEY must be set in production (MOODLENS_ENV=production)")
        cfg["SECRET_KEY"] = secrets.token_hex(32)
        cfg["SECRET_KEY_NOTE"] = DEV_SECRET_NOTE
    origins = cfg.get("CORS_ALLOWED_ORIGINS")
    if isinstance(origins, str):
        cfg["CORS_ALLOWED_ORIGINS"] = [o.strip() for o in origins.split(",") if o.strip()]
    for key in ("MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS", "MAX_FRAME_BYTES", "MAX_FRAME_PIXELS", "MAX_FACES"):
        if int(cfg[key]) <= 0:
            raise ConfigError(f"{key} must be positive")
    # Flask refuses bigger request bodies with 413 before a view runs.
    cfg["MAX_CONTENT_LENGTH"] = int(cfg["MAX_UPLOAD_BYTES"]) + 64 * 1024
    return cfg
