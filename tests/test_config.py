"""Settings read from the environment: a bad value stops the start with a clear ConfigError."""
from __future__ import annotations

import importlib
import importlib.util
import logging
import re
import sys

import pytest

from app.config import Config, ConfigError, finalize


def settings(monkeypatch, **env) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return finalize(Config.from_env())


@pytest.mark.parametrize("name", ["ANALYZE_RATE_LIMIT", "LOGIN_RATE_LIMIT", "JOIN_RATE_LIMIT"])
@pytest.mark.parametrize("value", ["1 per fortnight", "1/minute; junk", "thirty per minute"])
def test_a_rate_limit_with_a_typo_stops_the_start(monkeypatch, name, value):
    with pytest.raises(ConfigError, match=f"{name} must be a rate limit .*{value!r}"):
        settings(monkeypatch, **{name: value})


def test_rate_limits_in_either_notation_are_accepted(monkeypatch):
    cfg = settings(monkeypatch, ANALYZE_RATE_LIMIT="10/second, 5 per hour", LOGIN_RATE_LIMIT="3 per 10 minutes")
    assert cfg["ANALYZE_RATE_LIMIT"] == "10/second, 5 per hour"


@pytest.mark.parametrize("value, match", [
    ("abc", "SCORE_SMOOTHING must be a number"),
    ("nan", "SCORE_SMOOTHING must be a finite number"),
    ("1.5", "SCORE_SMOOTHING must be at least 0"),
    ("1", "SCORE_SMOOTHING must be at least 0"),
    ("-1", "SCORE_SMOOTHING must be at least 0"),
])
def test_score_smoothing_must_be_a_weight_below_one(monkeypatch, value, match):
    with pytest.raises(ConfigError, match=match):
        settings(monkeypatch, SCORE_SMOOTHING=value)


@pytest.mark.parametrize("value", ["0", "0.6", "0.95"])
def test_score_smoothing_in_range_is_accepted(monkeypatch, value):
    assert settings(monkeypatch, SCORE_SMOOTHING=value)["SCORE_SMOOTHING"] == float(value)


@pytest.mark.parametrize("value", ["nan", "inf", "-1"])
def test_stream_max_fps_must_be_finite_and_not_negative(monkeypatch, value):
    with pytest.raises(ConfigError, match="STREAM_MAX_FPS"):
        settings(monkeypatch, STREAM_MAX_FPS=value)


@pytest.mark.parametrize("key, value", [("STREAM_MAX_FPS", float("nan")), ("SCORE_SMOOTHING", float("nan")),
                                        ("SCORE_SMOOTHING", 1.0)])
def test_overrides_are_checked_too(key, value):
    with pytest.raises(ConfigError, match=key):
        finalize({**Config.from_env(), key: value})


@pytest.mark.parametrize("key, value, match", [
    ("FULL_SCAN_EVERY", "0", "FULL_SCAN_EVERY must be 1 .* got 0"),
    ("FULL_SCAN_EVERY", "-3", "FULL_SCAN_EVERY must be 1"),
    ("CLASSROOM_NEGATIVE_SHARE", "0", "CLASSROOM_NEGATIVE_SHARE must be a share .* got 0.0"),
    ("CLASSROOM_NEGATIVE_SHARE", "5", "CLASSROOM_NEGATIVE_SHARE must be a share"),  # the alert could never fire
    ("CLASSROOM_NEGATIVE_SHARE", "-1", "CLASSROOM_NEGATIVE_SHARE must be a share"),
])
def test_settings_out_of_their_range_stop_the_start(monkeypatch, key, value, match):
    with pytest.raises(ConfigError, match=match):
        settings(monkeypatch, **{key: value})


@pytest.mark.parametrize("key, value", [("FULL_SCAN_EVERY", "1"), ("CLASSROOM_NEGATIVE_SHARE", "1"),
                                        ("CLASSROOM_NEGATIVE_SHARE", "0.25")])
def test_settings_at_the_edge_of_their_range_are_accepted(monkeypatch, key, value):
    assert settings(monkeypatch, **{key: value})[key] == type(getattr(Config, key))(value)


# -- settings that were misread instead of refused ----------------------------------------------------------------

STRONG_KEY = "k" * 64
YES_NO = ["MODEL_TTA", "DB_AUTO_UPGRADE", "CLASSROOM_TICKER", "RATELIMIT_ENABLED", "SESSION_COOKIE_SECURE",
          "RATELIMIT_SWALLOW_ERRORS"]


def absent(value, module: str):
    """A case that needs ``module`` not to be installed (skipped where it is)."""
    return pytest.param(*value, marks=pytest.mark.skipif(importlib.util.find_spec(module) is not None,
                                                        reason=f"{module} is installed"))


@pytest.mark.parametrize("name", YES_NO)
@pytest.mark.parametrize("value", ["ture", "flase", "2", "enabled"])
def test_a_yes_no_setting_with_a_typo_stops_the_start(monkeypatch, name, value):
    # e.g. MOODLENS_ENV=production SESSION_COOKIE_SECURE=ture gave cookies without Secure
    with pytest.raises(ConfigError, match=re.escape(f"{name} must be true or false (1/0, yes/no, on/off), "
                                                    f"got '{value}'")):
        settings(monkeypatch, MOODLENS_ENV="production", SECRET_KEY=STRONG_KEY, **{name: value})


@pytest.mark.parametrize("value, expected", [("1", True), ("TRUE", True), (" yes ", True), ("On", True),
                                             ("0", False), ("False", False), ("no", False), (" OFF\n", False)])
def test_yes_no_settings_take_either_spelling_in_any_case(monkeypatch, value, expected):
    cfg = settings(monkeypatch, **{name: value for name in YES_NO})
    assert {name: cfg[name] for name in YES_NO} == {name: expected for name in YES_NO}


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_yes_no_setting_keeps_its_default(monkeypatch, value):
    cfg = settings(monkeypatch, MOODLENS_ENV="production", SECRET_KEY=STRONG_KEY, **{name: value for name in YES_NO})
    assert all(cfg[name] is True for name in YES_NO)  # SESSION_COOKIE_SECURE: on, as production's default


@pytest.mark.parametrize("value", ["prod", "Prod", "staging", "dev", "production!"])
def test_an_unknown_environment_stops_the_start(monkeypatch, value):
    with pytest.raises(ConfigError, match=re.escape(f"MOODLENS_ENV must be 'development' or 'production', "
                                                    f"got '{value}'")):
        settings(monkeypatch, MOODLENS_ENV=value, SECRET_KEY=STRONG_KEY)


@pytest.mark.parametrize("value, env", [("Production", "production"), (" PRODUCTION ", "production"),
                                        ("Development", "development"), ("", "development")])
def test_the_environment_is_read_in_any_case(monkeypatch, value, env):
    cfg = settings(monkeypatch, MOODLENS_ENV=value, SECRET_KEY=STRONG_KEY)
    assert cfg["ENV"] == env and cfg["SESSION_COOKIE_SECURE"] is (env == "production")


def test_production_in_capitals_still_needs_a_secret_key(monkeypatch):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="SECRET_KEY must be set in production"):
        settings(monkeypatch, MOODLENS_ENV="Production")


@pytest.mark.parametrize("key, warned", [(None, True), (STRONG_KEY, False)])
def test_a_made_up_secret_key_is_logged_at_start_up(monkeypatch, caplog, key, warned):
    from flask import Flask

    from app import logging_setup

    monkeypatch.delenv("SECRET_KEY", raising=False)
    app = Flask(__name__)
    app.config.update(finalize({**Config.from_env(), "SECRET_KEY": key}))
    with caplog.at_level(logging.WARNING):
        logging_setup.init_app(app)
    notes = [r for r in caplog.records if r.levelno == logging.WARNING and "SECRET_KEY" in r.getMessage()]
    assert len(notes) == warned
    if warned:
        assert "sessions do not survive a restart" in notes[0].getMessage()
        assert "several processes" in notes[0].getMessage()


@pytest.mark.parametrize("value", ["verbose", "10", "information", "warnings"])
def test_an_unknown_log_level_stops_the_start(monkeypatch, value):
    with pytest.raises(ConfigError, match=re.escape(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, "
                                                    f"got '{value}'")):
        settings(monkeypatch, LOG_LEVEL=value)


@pytest.mark.parametrize("value, level", [("debug", "DEBUG"), (" Warning ", "WARNING"), ("WARN", "WARNING"),
                                          ("error", "ERROR"), ("", "INFO")])
def test_log_levels_are_read_in_any_case(monkeypatch, value, level):
    assert settings(monkeypatch, LOG_LEVEL=value)["LOG_LEVEL"] == level


def engineio_accepts(cors_allowed_origins, origin: str) -> bool:
    """Whether an Engine.IO server given ``cors_allowed_origins`` (as Flask-SocketIO passes it) opens a connection
    for a page from ``origin``."""
    import engineio
    from werkzeug.test import Client

    server = engineio.Server(async_mode="threading", cors_allowed_origins=cors_allowed_origins,
                             monitor_clients=False)
    resp = Client(engineio.WSGIApp(server)).get("/engine.io/?EIO=4&transport=polling", headers={"Origin": origin})
    return resp.status_code == 200


@pytest.mark.parametrize("value, origins", [
    ("*", "*"), (" * ", "*"),  # engineio's wildcard is the bare string, not a list holding it
    ("https://a.example, https://b.example", ["https://a.example", "https://b.example"]),
    (" , ", None),  # nothing listed: the page's own origin only, as when unset
])
def test_cors_allowed_origins_take_engineios_forms(monkeypatch, value, origins):
    assert settings(monkeypatch, CORS_ALLOWED_ORIGINS=value)["CORS_ALLOWED_ORIGINS"] == origins


@pytest.mark.parametrize("value, origin, accepted", [
    ("*", "https://anywhere.example", True),
    (" , ", "https://evil.example", False),  # engineio's empty list would switch the origin check off
    ("https://a.example", "https://a.example", True),
    ("https://a.example", "https://evil.example", False),
])
def test_the_configured_origins_reach_engineio_as_meant(monkeypatch, value, origin, accepted):
    origins = settings(monkeypatch, CORS_ALLOWED_ORIGINS=value)["CORS_ALLOWED_ORIGINS"]
    assert engineio_accepts(origins, origin) is accepted


@pytest.mark.parametrize("value, match", [
    ("nonsense", "DATABASE_URL is not a database URL such as postgresql://"),
    ("://", "DATABASE_URL is not a database URL"),
    ("postgresql://moodlens:hunter2@db:port/moodlens", "DATABASE_URL is not a database URL"),
    ("bogus://x", "DATABASE_URL names an unknown kind of database 'bogus'"),
    ("bogus://moodlens:hunter2@db/x", "DATABASE_URL names an unknown kind of database 'bogus'"),
    absent(("mysql+mysqldb://moodlens:hunter2@db/moodlens",
            "DATABASE_URL needs a database driver that is not installed .*mysql"), "MySQLdb"),
])
def test_a_malformed_database_url_stops_the_start(monkeypatch, value, match):
    with pytest.raises(ConfigError, match=match) as refused:
        settings(monkeypatch, DATABASE_URL=value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("value", ["sqlite://", "sqlite:////tmp/moodlens.sqlite3", "postgres://u:p@db/moodlens",
                                   "postgresql://u:p@db:5432/moodlens", "postgresql+psycopg://u:p@db/moodlens"])
def test_database_urls_are_checked_without_connecting(monkeypatch, value):
    assert settings(monkeypatch, DATABASE_URL=value)["SQLALCHEMY_DATABASE_URI"].startswith(value.split(":")[0])


@pytest.mark.parametrize("value, match", [
    ("nonsense", "RATELIMIT_STORAGE_URI must be memory:// or a storage such as redis://host:6379/1, got no scheme"),
    ("bogus://x", "RATELIMIT_STORAGE_URI must be memory:// .* got the scheme 'bogus://'"),
    ("bogus://:hunter2@x", "RATELIMIT_STORAGE_URI must be memory://"),
    ("async+memory://", "RATELIMIT_STORAGE_URI must be memory:// .* got the scheme 'async\\+memory://'"),
    absent(("memcached://localhost:11211", "RATELIMIT_STORAGE_URI: memcached:// needs pymemcache"), "pymemcache"),
])
def test_a_malformed_rate_limit_storage_stops_the_start(monkeypatch, value, match):
    with pytest.raises(ConfigError, match=match) as refused:
        settings(monkeypatch, RATELIMIT_STORAGE_URI=value)
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize("value", ["", "memory://", "redis://localhost:6379/1", "rediss://:pw@cache:6380/0"])
def test_rate_limit_storages_are_checked_without_connecting(monkeypatch, value):
    assert settings(monkeypatch, RATELIMIT_STORAGE_URI=value)["RATELIMIT_STORAGE_URI"] == (value or "memory://")


@pytest.fixture
def load_wsgi(monkeypatch):
    """Import wsgi.py afresh, as a gunicorn worker does, with ``create_app`` replaced by a stub; forgotten after."""
    import app as moodlens

    built = object()
    monkeypatch.setattr(moodlens, "create_app", lambda: built)
    monkeypatch.delenv("ASYNC_MODE", raising=False)
    monkeypatch.delenv("FLASK_RUN_FROM_CLI", raising=False)
    sys.modules.pop("wsgi", None)
    yield lambda: (importlib.import_module("wsgi"), built)
    sys.modules.pop("wsgi", None)


def test_gunicorn_refuses_the_eventlet_mode(monkeypatch, capsys, load_wsgi):
    monkeypatch.setenv("ASYNC_MODE", "eventlet")
    with pytest.raises(SystemExit) as stopped:
        load_wsgi()
    assert stopped.value.code == 4  # gunicorn stops instead of restarting the worker
    assert capsys.readouterr().err == ("MoodLens cannot start: ASYNC_MODE=eventlet is served by python -m app "
                                       "(make run-eventlet); gunicorn serves threading\n")


@pytest.mark.parametrize("env", [{}, {"ASYNC_MODE": "threading"},
                                 # flask --app wsgi db upgrade serves nothing: any mode
                                 {"ASYNC_MODE": "eventlet", "FLASK_RUN_FROM_CLI": "true"}])
def test_wsgi_builds_the_app_in_the_threading_mode_and_for_flask_commands(monkeypatch, load_wsgi, env):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module, built = load_wsgi()
    assert module.app is built
