"""Classroom: teacher accounts, classes, students joining with a code, a live class-mood dashboard."""
from __future__ import annotations

import os

import click
from flask import Blueprint

from app.config import ROOT

bp = Blueprint("classroom", __name__)
MIGRATIONS = ROOT / "migrations"
SQLITE_NAME = "moodlens.sqlite3"

from app.classroom import auth, events, routes  # noqa: E402,F401  (register views and handlers)


def postgres_engine_options() -> dict:
    """SQLAlchemy engine options for PostgreSQL (psycopg 3): every wait on the server bounded.

    A server that hangs (a paused VM, a network partition, a stopped process) must cost a bounded wait,
    never a thread stuck for good: libpq's ``connect_timeout`` (s) covers the whole connection start-up,
    TCP keepalives and ``tcp_user_timeout`` (ms) drop a connection whose peer stopped acknowledging,
    ``pool_timeout`` bounds the wait for a pooled connection. A slow query is not cut short.
    """
    return {"pool_pre_ping": True, "pool_timeout": 10,
            "connect_args": {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 10,
                             "keepalives_interval": 5, "keepalives_count": 3, "tcp_user_timeout": 15_000}}


def purge_at_start(app, purge) -> None:
    """Apply the retention setting at start-up, whoever migrates the schema; a schema not created yet
    (``DB_AUTO_UPGRADE=0`` before ``flask db upgrade``) holds nothing to purge and is only reported."""
    from sqlalchemy.exc import SQLAlchemyError

    from app.extensions import db

    try:
        purge(int(app.config["CLASSROOM_RETENTION_DAYS"]))
    except SQLAlchemyError as exc:
        db.session.rollback()
        app.logger.warning("classroom retention not applied at start-up (run 'flask db upgrade'?): %s",
                           str(exc).splitlines()[0])


def init_app(app) -> None:
    """Bind storage (migrated to the latest schema at start-up), accounts, rate limits and the live hooks."""
    from flask_migrate import upgrade

    from app.classroom.cluster import SCHEMES, redis_options
    from app.classroom.service import ClassroomService
    from app.classroom.storage import install_pragmas, purge_expired
    from app.extensions import db, limiter, login_manager, migrate

    if not app.config.get("SQLALCHEMY_DATABASE_URI"):
        # No DATABASE_URL: a SQLite file in the instance folder, created here, no setup.
        os.makedirs(app.instance_path, exist_ok=True)
        app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite:///" + os.path.join(app.instance_path, SQLITE_NAME)
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    if uri.startswith("postgresql"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", postgres_engine_options())
    elif not uri.startswith("sqlite"):
        app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", {"pool_pre_ping": True})
    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS))
    login_manager.init_app(app)
    login_manager.login_view = "classroom.login"
    if str(app.config["RATELIMIT_STORAGE_URI"]).startswith(SCHEMES):
        # A Redis that hangs costs each rate-limited request 0.5 s once (not redis-py's 5 s each): the counts
        # then move to this process's memory until Redis answers again.
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", redis_options())
        app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter.init_app(app)

    with app.app_context():
        install_pragmas(db.engine)
        if app.config["DB_AUTO_UPGRADE"]:  # off: the operator runs 'flask db upgrade' (several processes)
            upgrade(directory=str(MIGRATIONS))
    app.extensions["classroom"] = ClassroomService(app)
    with app.app_context():  # with the service: sessions it ends are ended on the other processes too
        purge_at_start(app, purge_expired)
    events.install_hooks()
    app.register_blueprint(bp)

    @app.cli.group("classroom")
    def classroom_cli():
        """Classroom data maintenance."""

    @classroom_cli.command("purge")
    def purge_cmd():
        """Apply the retention setting (CLASSROOM_RETENTION_DAYS) now."""
        counts = purge_expired(int(app.config["CLASSROOM_RETENTION_DAYS"]))
        click.echo(f"deleted {counts['sessions']} sessions and {counts['samples']} samples")
