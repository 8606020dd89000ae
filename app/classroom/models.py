"""Stored data: teachers, classes, sessions, students and per-second mood samples.

Never an image or a face crop: a sample is seven mean probabilities and two
frame counts. Schema changes go through migrations (``migrations/``).
"""
from __future__ import annotations

import secrets
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, select, text
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db

# No 0/O, 1/I/L: a code read off a projector must not be ambiguous.
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
CODE_LENGTH = 6


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (how every DateTime column is stored)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def new_code() -> str:
    """A random join code (uniqueness is checked by the caller)."""
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def new_token() -> str:
    """A random secret that ties a browser to its student record."""
    return secrets.token_urlsafe(32)


def normalise_code(raw) -> str:
    """A typed code as stored: upper case, without spaces or dashes ("" for anything but a string)."""
    if not isinstance(raw, str):
        return ""
    return "".join(ch for ch in raw.upper() if ch.isalnum())[:16]


def code_shaped(code: str) -> bool:
    """Whether a normalised code could be a class code: CODE_LENGTH characters of CODE_ALPHABET."""
    return len(code) == CODE_LENGTH and all(ch in CODE_ALPHABET for ch in code)


class Teacher(UserMixin, db.Model):
    """A teacher account (password stored as a salted hash only)."""

    __tablename__ = "teacher"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    classes: Mapped[list["Classroom"]] = relationship(back_populates="teacher", order_by="Classroom.created_at")

    def set_password(self, password: str) -> None:
        """Store a salted hash of ``password``."""
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        """True when ``password`` matches the stored hash."""
        return check_password_hash(self.password_hash, password)


class EndedLogin(db.Model):
    """A teacher login that was logged out (its random id, nothing about the teacher): a copy of its session
    cookie opens nothing until ``until``, when the cookie itself expires, in any process and after a restart."""

    __tablename__ = "ended_login"
    login: Mapped[str] = mapped_column(String(64), primary_key=True)
    until: Mapped[datetime] = mapped_column(DateTime, index=True)


class Classroom(db.Model):
    """A class: its teacher, its join code and whether it is aggregate-only."""

    __tablename__ = "classroom"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teacher.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    code: Mapped[str] = mapped_column(String(16), unique=True)
    aggregate_only: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    teacher: Mapped[Teacher] = relationship(back_populates="classes")
    sessions: Mapped[list["ClassSession"]] = relationship(
        back_populates="classroom", order_by="ClassSession.started_at.desc()", passive_deletes=True)

    def running_session(self) -> "ClassSession | None":
        """The session students can join now, if any."""
        return db.session.scalar(select(ClassSession).where(
            ClassSession.classroom_id == self.id, ClassSession.ended_at.is_(None)).order_by(ClassSession.id.desc()))

    def latest_session(self) -> "ClassSession | None":
        """The running session, else the most recent one."""
        return self.running_session() or db.session.scalar(
            select(ClassSession).where(ClassSession.classroom_id == self.id).order_by(ClassSession.id.desc()))


class ClassSession(db.Model):
    """One lesson of a class, from start to end.

    ``aggregate_only`` is sticky: set when the session starts in, or is switched
    to, aggregate-only mode, it stays set, so per-student data of that session
    is never shown, even if the class setting is switched off later.
    """

    __tablename__ = "class_session"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    classroom_id: Mapped[int] = mapped_column(ForeignKey("classroom.id", ondelete="CASCADE"), index=True)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    aggregate_only: Mapped[bool] = mapped_column(Boolean, default=False)

    classroom: Mapped[Classroom] = relationship(back_populates="sessions")
    students: Mapped[list["Student"]] = relationship(
        back_populates="session", order_by="Student.display_name", passive_deletes=True)

    # One running session per class: a second "Start a session" at the same moment fails to insert.
    __table_args__ = (Index("uq_class_session_running", "classroom_id", unique=True,
                            sqlite_where=text("ended_at IS NULL"), postgresql_where=text("ended_at IS NULL")),)

    @property
    def running(self) -> bool:
        """True until the teacher ends the session."""
        return self.ended_at is None

    def shows_students(self) -> bool:
        """Whether per-student data of this session may be shown (neither it nor its class is aggregate-only)."""
        return not (self.aggregate_only or self.classroom.aggregate_only)


class Student(db.Model):
    """A student in one session: a display name and when they consented, nothing else.

    ``token`` is a random secret kept in the student's signed session cookie
    next to the id: ids can be reused once rows are deleted (SQLite reuses the
    highest), a token never matches another student. Students who joined
    before tokens existed got one by migration, so their old cookies match none.
    """

    __tablename__ = "student"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("class_session.id", ondelete="CASCADE"), index=True)
    display_name: Mapped[str] = mapped_column(String(40))
    consent_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    token: Mapped[str | None] = mapped_column(String(64), default=new_token)  # set for every student

    session: Mapped[ClassSession] = relationship(back_populates="students")


class MoodSample(db.Model):
    """One student's mood within one second: mean probabilities over the frames with a face.

    ``second`` is Unix time (UTC); ``face_frames`` frames had a face, out of
    ``frames`` analysed (the means are 0 when ``face_frames`` is 0).
    """

    __tablename__ = "mood_sample"
    student_id: Mapped[int] = mapped_column(ForeignKey("student.id", ondelete="CASCADE"), primary_key=True)
    second: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    session_id: Mapped[int] = mapped_column(ForeignKey("class_session.id", ondelete="CASCADE"))
    frames: Mapped[int] = mapped_column(Integer)
    face_frames: Mapped[int] = mapped_column(Integer)
    angry: Mapped[float] = mapped_column(Float)
    disgust: Mapped[float] = mapped_column(Float)
    fear: Mapped[float] = mapped_column(Float)
    happy: Mapped[float] = mapped_column(Float)
    sad: Mapped[float] = mapped_column(Float)
    surprise: Mapped[float] = mapped_column(Float)
    neutral: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_mood_sample_session_second", "session_id", "second"),)

