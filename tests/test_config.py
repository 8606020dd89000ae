"""Settings read from the environment: a bad value stops the start with a clear ConfigError."""
from __future__ import annotations

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
