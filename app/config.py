"""Configuration: every setting comes from an environment variable.

``Config.from_env()`` reads the environment once; tests build ``TestConfig``
or pass a dict of overrides to ``create_app``.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import secrets
import urllib.parse
from pathlib import Path

import limits
import limits.storage
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

ROOT = Path(__file__).resolve().parent.parent
DEV_SECRET_NOTE = "development-only secret, generated at start-up"
MIN_SECRET_KEY_LENGTH = 32  # production: e.g. `openssl rand -hex 32` (64 characters)
ENVIRONMENTS = ("development", "production")
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off"}


def _bool(name: str, default: bool | None) -> bool | None:
    """The environment's yes/no ``name`` (any case; empty: ``default``); anything else stops the start.

    A typo must not turn a setting off: ``SESSION_COOKIE_SECURE=ture`` would give cookies without ``Secure``.
    """
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigError(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    return value


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
    MODEL_PATH = str(ROOT / "models" / "emotion.int8.tflite")
    MODEL_TTA = True
    ASYNC_MODE = "threading"
    MAX_UPLOAD_BYTES = 10 * 1024 * 1024
    MAX_IMAGE_PIXELS = 40_000_000
    UPLOAD_CONCURRENCY = 2  # uploads decoded and analysed at once per process (a large photo takes ~300 MB)
    MAX_FRAME_BYTES = 1024 * 1024
    MAX_FRAME_PIXELS = 1920 * 1080
    MAX_FACES = 16
    FULL_SCAN_EVERY = 8
    SCORE_SMOOTHING = 0.6
    CORS_ALLOWED_ORIGINS: str | list[str] | None = None
    SOCKETIO_MESSAGE_QUEUE: str | None = None
    DATABASE_URL: str | None = None
    INSTANCE_PATH: str | None = None
    LOG_LEVEL = "INFO"
    # Classroom: storage, accounts and the live class aggregate.
    DB_AUTO_UPGRADE = True
    CLASSROOM_RETENTION_DAYS = 30
    CLASSROOM_WINDOW_SECONDS = 10.0
    CLASSROOM_PUSH_SECONDS = 1.5
    CLASSROOM_FLUSH_SECONDS = 1.0
    CLASSROOM_TIMELINE_STEP = 5
    CLASSROOM_STALE_SECONDS = 8.0
    CLASSROOM_NEGATIVE_SHARE = 0.5
    CLASSROOM_NEGATIVE_SECONDS = 30.0
    CLASSROOM_TICKER = True
    LOGIN_RATE_LIMIT = "10 per minute; 50 per hour"
    JOIN_RATE_LIMIT = "30 per minute"
    RATELIMIT_ENABLED = True
    RATELIMIT_STORAGE_URI = "memory://"
    # Security. None: Secure cookies in production (MOODLENS_ENV=production), not in development.
    SESSION_COOKIE_SECURE: bool | None = None
    ANALYZE_RATE_LIMIT = "30 per minute; 300 per hour"
    RATELIMIT_SWALLOW_ERRORS = True  # rate-limit storage (Redis) away: log it and let requests through
    # Threads one TensorFlow op may use (0: TensorFlow's default, one per core). With one, ops of
    # several streams run side by side instead of each splitting its work over busy cores.
    TF_INTRA_OP_THREADS = 1
    STREAM_MAX_FPS = 30.0  # analyses per second per live client at most (camera speed; 0: no cap); newest frame wins
    TRUSTED_PROXIES = 0
    TESTING = False

    @classmethod
    def from_env(cls) -> dict:
        """Read every setting from the environment into a dict."""
        env = os.environ
        cfg = {
            "ENV": env.get("MOODLENS_ENV") or cls.ENV,
            "SECRET_KEY": env.get("SECRET_KEY") or None,
            "MODEL_PATH": env.get("MODEL_PATH") or cls.MODEL_PATH,
            "MODEL_TTA": _bool("MODEL_TTA", cls.MODEL_TTA),
            "ASYNC_MODE": env.get("ASYNC_MODE", cls.ASYNC_MODE),
            "MAX_UPLOAD_BYTES": _int("MAX_UPLOAD_BYTES", cls.MAX_UPLOAD_BYTES),
            "MAX_IMAGE_PIXELS": _int("MAX_IMAGE_PIXELS", cls.MAX_IMAGE_PIXELS),
            "UPLOAD_CONCURRENCY": _int("UPLOAD_CONCURRENCY", cls.UPLOAD_CONCURRENCY),
            "MAX_FRAME_BYTES": _int("MAX_FRAME_BYTES", cls.MAX_FRAME_BYTES),
            "MAX_FRAME_PIXELS": _int("MAX_FRAME_PIXELS", cls.MAX_FRAME_PIXELS),
            "MAX_FACES": _int("MAX_FACES", cls.MAX_FACES),
            "FULL_SCAN_EVERY": _int("FULL_SCAN_EVERY", cls.FULL_SCAN_EVERY),
            "SCORE_SMOOTHING": _float("SCORE_SMOOTHING", cls.SCORE_SMOOTHING),
            "CORS_ALLOWED_ORIGINS": env.get("CORS_ALLOWED_ORIGINS") or None,
            "SOCKETIO_MESSAGE_QUEUE": env.get("SOCKETIO_MESSAGE_QUEUE") or None,
            "DATABASE_URL": env.get("DATABASE_URL") or None,
            "INSTANCE_PATH": env.get("INSTANCE_PATH") or None,
            "LOG_LEVEL": env.get("LOG_LEVEL") or cls.LOG_LEVEL,
            "DB_AUTO_UPGRADE": _bool("DB_AUTO_UPGRADE", cls.DB_AUTO_UPGRADE),
            "CLASSROOM_RETENTION_DAYS": _int("CLASSROOM_RETENTION_DAYS", cls.CLASSROOM_RETENTION_DAYS),
            "CLASSROOM_WINDOW_SECONDS": _float("CLASSROOM_WINDOW_SECONDS", cls.CLASSROOM_WINDOW_SECONDS),
            "CLASSROOM_PUSH_SECONDS": _float("CLASSROOM_PUSH_SECONDS", cls.CLASSROOM_PUSH_SECONDS),
            "CLASSROOM_FLUSH_SECONDS": _float("CLASSROOM_FLUSH_SECONDS", cls.CLASSROOM_FLUSH_SECONDS),
            "CLASSROOM_TIMELINE_STEP": _int("CLASSROOM_TIMELINE_STEP", cls.CLASSROOM_TIMELINE_STEP),
            "CLASSROOM_STALE_SECONDS": _float("CLASSROOM_STALE_SECONDS", cls.CLASSROOM_STALE_SECONDS),
            "CLASSROOM_NEGATIVE_SHARE": _float("CLASSROOM_NEGATIVE_SHARE", cls.CLASSROOM_NEGATIVE_SHARE),
            "CLASSROOM_NEGATIVE_SECONDS": _float("CLASSROOM_NEGATIVE_SECONDS", cls.CLASSROOM_NEGATIVE_SECONDS),
            "CLASSROOM_TICKER": _bool("CLASSROOM_TICKER", cls.CLASSROOM_TICKER),
            "LOGIN_RATE_LIMIT": env.get("LOGIN_RATE_LIMIT") or cls.LOGIN_RATE_LIMIT,
            "JOIN_RATE_LIMIT": env.get("JOIN_RATE_LIMIT") or cls.JOIN_RATE_LIMIT,
            "RATELIMIT_ENABLED": _bool("RATELIMIT_ENABLED", cls.RATELIMIT_ENABLED),
            "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI") or cls.RATELIMIT_STORAGE_URI,
            "SESSION_COOKIE_SECURE": _bool("SESSION_COOKIE_SECURE", cls.SESSION_COOKIE_SECURE),
            "ANALYZE_RATE_LIMIT": env.get("ANALYZE_RATE_LIMIT") or cls.ANALYZE_RATE_LIMIT,
            "STREAM_MAX_FPS": _float("STREAM_MAX_FPS", cls.STREAM_MAX_FPS),
            "TF_INTRA_OP_THREADS": _int("TF_INTRA_OP_THREADS", cls.TF_INTRA_OP_THREADS),
            "RATELIMIT_SWALLOW_ERRORS": _bool("RATELIMIT_SWALLOW_ERRORS", cls.RATELIMIT_SWALLOW_ERRORS),
            "TRUSTED_PROXIES": _int("TRUSTED_PROXIES", cls.TRUSTED_PROXIES),
        }
        return cfg


def finalize(cfg: dict) -> dict:
    """Validate a settings dict and fill in derived values; raises ConfigError."""
    if cfg["ASYNC_MODE"] not in {"threading", "eventlet"}:
        raise ConfigError(f"ASYNC_MODE must be 'threading' or 'eventlet', got {cfg['ASYNC_MODE']!r}")
    env_name = str(cfg.get("ENV") or Config.ENV).strip().lower()
    if env_name not in ENVIRONMENTS:  # "prod" must not quietly serve in development mode
        raise ConfigError(f"MOODLENS_ENV must be 'development' or 'production', got {cfg['ENV']!r}")
    cfg["ENV"] = env_name
    production = env_name == "production"
    cfg["LOG_LEVEL"] = logging.getLevelName(log_level(cfg.get("LOG_LEVEL") or Config.LOG_LEVEL))
    if not cfg.get("SECRET_KEY"):
        if production:
            raise ConfigError("SECRET_KEY must be set in production (MOODLENS_ENV=production); "
                              "generate one with: openssl rand -hex 32")
        cfg["SECRET_KEY"] = secrets.token_hex(32)
        cfg["SECRET_KEY_NOTE"] = DEV_SECRET_NOTE
    elif production and len(str(cfg["SECRET_KEY"])) < MIN_SECRET_KEY_LENGTH:
        raise ConfigError(f"SECRET_KEY is too short for production: use at least {MIN_SECRET_KEY_LENGTH} "
                          "random characters (openssl rand -hex 32)")
    max_fps = float(cfg.get("STREAM_MAX_FPS", Config.STREAM_MAX_FPS))
    if not (math.isfinite(max_fps) and max_fps >= 0):
        raise ConfigError("STREAM_MAX_FPS must be 0 (no cap) or a positive number of frames per second")
    smoothing = float(cfg.get("SCORE_SMOOTHING", Config.SCORE_SMOOTHING))
    if not 0 <= smoothing < 1:  # also false for nan
        raise ConfigError(f"SCORE_SMOOTHING must be at least 0 (no smoothing) and below 1, got {smoothing}")
    for key in ("ANALYZE_RATE_LIMIT", "LOGIN_RATE_LIMIT", "JOIN_RATE_LIMIT"):
        value = cfg.get(key, getattr(Config, key))
        try:
            limits.parse_many(str(value))
        except ValueError as exc:
            raise ConfigError(f"{key} must be a rate limit such as '30 per minute; 300 per hour', "
                              f"got {value!r} ({exc})") from None
    if int(cfg.get("TF_INTRA_OP_THREADS", Config.TF_INTRA_OP_THREADS)) < 0:
        raise ConfigError("TF_INTRA_OP_THREADS must be 0 (TensorFlow's default: one per core) or a number of threads")
    if int(cfg.get("TRUSTED_PROXIES", 0)) < 0:
        raise ConfigError("TRUSTED_PROXIES must be 0 (clients connect directly) or the number of proxies in front")
    uploads = cfg.get("UPLOAD_CONCURRENCY", Config.UPLOAD_CONCURRENCY)
    if isinstance(uploads, bool) or not isinstance(uploads, int) or uploads < 1:
        raise ConfigError(f"UPLOAD_CONCURRENCY must be a whole number of uploads analysed at once, 1 or more, "
                          f"got {uploads!r}")
    origins = cfg.get("CORS_ALLOWED_ORIGINS")
    if isinstance(origins, str):
        listed = [o.strip() for o in origins.split(",") if o.strip()]
        # engineio's wildcard is the bare string '*'; its empty list would turn the origin check off.
        cfg["CORS_ALLOWED_ORIGINS"] = "*" if listed == ["*"] else listed or None
    for key in ("MAX_UPLOAD_BYTES", "MAX_IMAGE_PIXELS", "MAX_FRAME_BYTES", "MAX_FRAME_PIXELS", "MAX_FACES"):
        if int(cfg[key]) <= 0:
            raise ConfigError(f"{key} must be positive")
    for key in ("CLASSROOM_WINDOW_SECONDS", "CLASSROOM_PUSH_SECONDS", "CLASSROOM_FLUSH_SECONDS",
                "CLASSROOM_TIMELINE_STEP", "CLASSROOM_STALE_SECONDS", "CLASSROOM_NEGATIVE_SECONDS"):
        if float(cfg.get(key, getattr(Config, key))) <= 0:
            raise ConfigError(f"{key} must be positive")
    if int(cfg.get("FULL_SCAN_EVERY", Config.FULL_SCAN_EVERY)) < 1:
        raise ConfigError(f"FULL_SCAN_EVERY must be 1 (a full scan every frame) or more frames, "
                          f"got {cfg['FULL_SCAN_EVERY']!r}")
    share = float(cfg.get("CLASSROOM_NEGATIVE_SHARE", Config.CLASSROOM_NEGATIVE_SHARE))
    if not 0 < share <= 1:
        raise ConfigError(f"CLASSROOM_NEGATIVE_SHARE must be a share of the class above 0 and at most 1, got {share}")
    if int(cfg.get("CLASSROOM_RETENTION_DAYS", Config.CLASSROOM_RETENTION_DAYS)) < 0:
        raise ConfigError("CLASSROOM_RETENTION_DAYS must be 0 (keep forever) or a number of days")
    if cfg.get("INSTANCE_PATH") and not os.path.isabs(cfg["INSTANCE_PATH"]):
        raise ConfigError(f"INSTANCE_PATH must be an absolute path, got {cfg['INSTANCE_PATH']!r}")
    cfg["SQLALCHEMY_DATABASE_URI"] = database_uri(cfg.get("DATABASE_URL"))
    if cfg["SQLALCHEMY_DATABASE_URI"]:
        check_database_uri(cfg["SQLALCHEMY_DATABASE_URI"])
    check_rate_limit_storage(str(cfg.get("RATELIMIT_STORAGE_URI") or Config.RATELIMIT_STORAGE_URI))
    cfg.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    # Cookies: never readable by scripts, not sent on cross-site requests, HTTPS-only in production.
    if cfg.get("SESSION_COOKIE_SECURE") is None:
        cfg["SESSION_COOKIE_SECURE"] = production
    cfg.setdefault("SESSION_COOKIE_HTTPONLY", True)
    cfg.setdefault("REMEMBER_COOKIE_SECURE", cfg["SESSION_COOKIE_SECURE"])
    cfg.setdefault("REMEMBER_COOKIE_HTTPONLY", True)
    cfg.setdefault("REMEMBER_COOKIE_SAMESITE", cfg["SESSION_COOKIE_SAMESITE"])
    # CSRF tokens do not expire on their own (Flask-WTF's default: after 1 hour). A token is valid only with
    # the random value it was made from, kept in this browser's session cookie (signed, HttpOnly,
    # SameSite=Lax; gone when the browser closes or the cookie is older than PERMANENT_SESSION_LIFETIME),
    # which another site can neither read nor set: a time limit adds no protection, and it refused End
    # session, Log out, the settings and a student's Leave on a page opened more than an hour before (a
    # 90-minute lesson). A form still "expires" with its session: another browser, a new SECRET_KEY.
    cfg.setdefault("WTF_CSRF_TIME_LIMIT", None)
    # Flask refuses bigger request bodies with 413 before a view runs.
    cfg["MAX_CONTENT_LENGTH"] = int(cfg["MAX_UPLOAD_BYTES"]) + 64 * 1024
    return cfg


def database_uri(url: str | None) -> str | None:
    """SQLAlchemy URI for ``DATABASE_URL`` (None: the SQLite file in the instance folder).

    ``postgres://`` and ``postgresql://`` select the installed psycopg (v3) driver;
    SQLAlchemy would otherwise look for psycopg2.
    """
    if not url:
        return None
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def check_database_uri(uri: str) -> None:
    """ConfigError (naming DATABASE_URL, never its password) unless SQLAlchemy can parse ``uri`` and load its
    dialect and driver; nothing is connected."""
    try:
        url = make_url(uri)
    except (ArgumentError, ValueError):
        raise ConfigError("DATABASE_URL is not a database URL such as postgresql://user:password@host/moodlens "
                          "or sqlite:////absolute/path/moodlens.sqlite3") from None
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ConfigError(f"DATABASE_URL names an unknown kind of database {url.drivername!r} "
                          "(use postgresql:// or sqlite://)") from None
    except ImportError as exc:
        raise ConfigError(f"DATABASE_URL needs a database driver that is not installed "
                          f"({url.drivername}: {exc})") from None


def check_rate_limit_storage(uri: str) -> None:
    """ConfigError unless ``uri`` names a storage the rate limiter knows, with its client library installed;
    nothing is connected."""
    scheme = urllib.parse.urlsplit(uri).scheme
    storage = limits.storage.SCHEMES.get(scheme)
    if storage is None or scheme.startswith("async+"):  # async+: the asyncio storages, not Flask-Limiter's
        raise ConfigError("RATELIMIT_STORAGE_URI must be memory:// or a storage such as redis://host:6379/1, got "
                          + (f"the scheme {scheme + '://'!r}" if scheme else "no scheme"))
    needs = sorted({name.split(".")[0] for name in storage.DEPENDENCIES})
    if needs and not any(importlib.util.find_spec(name) for name in needs):
        raise ConfigError(f"RATELIMIT_STORAGE_URI: {scheme}:// needs {' or '.join(needs)}, which is not installed")


def log_level(name: str) -> int:
    """The logging level called ``name`` (any case: DEBUG, INFO, WARNING, ERROR, CRITICAL); ConfigError otherwise."""
    level = logging.getLevelNamesMapping().get(str(name).strip().upper())
    if level is None:
        raise ConfigError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {name!r}")
    return level
