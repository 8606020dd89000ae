"""Teacher accounts: register, log in (rate-limited), log out.

Each log-in gets a random id in the Flask session (``events.LOGIN_KEY``): the
log-out, or another log-in in the same browser, ends that login, which closes
its open dashboard sockets in every process (see app/classroom/events.py), and
a copy of its session cookie opens no teacher page any more.
"""
from __future__ import annotations

import hashlib
import secrets
import unicodedata
from urllib.parse import urlsplit

from flask import abort, current_app, flash, jsonify, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from app.classroom import bp
from app.classroom.events import LOGIN_KEY, dashboard_logins, end_login
from app.classroom.forms import ActionForm, LoginForm, RegisterForm, normalise_email, require_valid
from app.classroom.models import Teacher
from app.errors import retry_after, wait_words
from app.extensions import db, limiter, login_manager

_DUMMY_HASH: str | None = None
FLASK_LOGIN_KEYS = ("_user_id", "_fresh", "_id", "_remember", "_remember_seconds")  # login_user()'s session keys


def too_many_from_here() -> str:
    """The 429 message of the per-address limit (log-in, registration), with the wait it has left."""
    return f"Too many attempts from this address: {wait_words(retry_after())}, then try again."


def too_many_for_account() -> str:
    """The 429 message of the per-account log-in limit (it counts attempts from every address)."""
    return (f"Too many attempts to log in to this account, from here or elsewhere: {wait_words(retry_after())}, "
            "then try again.")


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def _email_key() -> str:
    """Rate-limit key per account, so spreading guesses over many addresses is not free either.

    The account as the form reads it (stripped, lower-cased, so any case counts for one account), hashed:
    each key is 64 characters, so a posted 400 KB "email" cannot fill the limiter's storage for an hour.
    """
    email = normalise_email(request.form.get("email") or "")
    return "email:" + hashlib.sha256(email.encode("utf-8", "surrogatepass")).hexdigest()


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site, else None (no open redirects).

    Browsers drop tabs and newlines from a URL and read a backslash as ``/``,
    so ``/<tab>/evil.example`` would leave the site: any whitespace, control or
    backslash character is refused outright, as is anything with a scheme or host.
    """
    if not isinstance(target, str) or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ch.isspace() or unicodedata.category(ch)[0] in "CZ" for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def new_login_id() -> str:
    """A random id for one teacher login (``LOGIN_KEY`` in the session)."""
    return secrets.token_urlsafe(18)


def start_login(teacher: Teacher) -> None:
    """Log ``teacher`` in with a fresh login id; the login it replaces in this browser, if any, ends."""
    end_login(session.get(LOGIN_KEY))
    login_user(teacher)
    session[LOGIN_KEY] = new_login_id()


@bp.before_request
def give_login_an_id():
    """A session logged in before login ids existed gets one here, on a classroom page, before any dashboard
    socket of it connects (the session is written only then)."""
    if session.get("_user_id") is not None and not session.get(LOGIN_KEY):
        session[LOGIN_KEY] = new_login_id()


@login_manager.user_loader
def load_teacher(user_id: str) -> Teacher | None:
    """The logged-in teacher for Flask-Login: None when the account is gone, or when this session's login has
    ended (logged out), so a copy of the session cookie is logged out with the browser that logged out."""
    login = session.get(LOGIN_KEY)
    if login and dashboard_logins().ended(login):
        # Out of this session for good: re-signed by a later response, a cookie that still named the user
        # would outlive the record of the log-out.
        for key in FLASK_LOGIN_KEYS + (LOGIN_KEY,):
            session.pop(key, None)
        return None
    try:
        return db.session.get(Teacher, int(user_id))
    except (TypeError, ValueError):
        return None


@login_manager.unauthorized_handler
def unauthorized():
    """Not logged in: 401 for the API and downloads, the log-in page for pages."""
    if request.path.startswith("/api/") or request.path.endswith(".csv"):
        if request.path.startswith("/api/"):
            return jsonify(error="log in as the class's teacher"), 401
        abort(401, description="Log in as the class's teacher to download this.")
    if request.method in ("GET", "HEAD"):
        flash("Log in to see your classes.", "info")
        return redirect(url_for("classroom.login", next=request.full_path if request.query_string else request.path))
    # A button (a POST): after log-in the browser would GET its URL, a 405. Back to the page the button was
    # on instead, when the URL names it (a class's dashboard), with nothing done meanwhile.
    flash("You were logged out, so nothing was changed: log in, then try again.", "info")
    return redirect(url_for("classroom.login", next=_page_of_action()))


def _page_of_action() -> str | None:
    """The page a logged-out POST's button was on: the class's dashboard for ``/classes/<code>/...``, the
    class list for ``/classes``; None for anything else."""
    code = (request.view_args or {}).get("code")
    if request.blueprint != "classroom" or not request.path.startswith("/classes"):
        return None
    if isinstance(code, str):
        return safe_next(url_for("classroom.dashboard", code=code))
    return url_for("classroom.classes") if request.endpoint == "classroom.create_class" else None


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=too_many_from_here)
def register():
    """Create a teacher account and log it in."""
    form = RegisterForm()
    if form.validate_on_submit():
        email = form.email.data  # lower-cased by the form
        teacher = None
        if db.session.scalar(select(Teacher).where(func.lower(Teacher.email) == email)) is None:
            teacher = Teacher(email=email, name=form.name.data)
            teacher.set_password(form.password.data)
            db.session.add(teacher)
            try:
                db.session.commit()
            except IntegrityError:  # the same email registered at the same moment (a double click)
                db.session.rollback()
                teacher = None
        if teacher is None:
            form.email.errors.append("An account with this email exists already: log in instead.")
        else:
            start_login(teacher)
            flash(f"Welcome, {teacher.name}. Create your first class below.", "ok")
            return redirect(url_for("classroom.classes"))
    return render_template("classroom/register.html", form=form), 400 if form.errors else 200


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], error_message=too_many_from_here)
@limiter.limit(_login_limit, methods=["POST"], key_func=_email_key, error_message=too_many_for_account)
def login():
    """Log a teacher in; wrong email or password get the same answer."""
    global _DUMMY_HASH
    form = LoginForm()
    if form.validate_on_submit():
        email = form.email.data  # lower-cased by the form
        teacher = db.session.scalar(select(Teacher).where(func.lower(Teacher.email) == email))
        if teacher is not None and teacher.check_password(form.password.data):
            start_login(teacher)
            return redirect(safe_next(request.args.get("next")) or url_for("classroom.classes"))
        if teacher is None:  # spend the same time as a real check: no account probing by timing
            _DUMMY_HASH = _DUMMY_HASH or generate_password_hash("not a password")
            check_password_hash(_DUMMY_HASH, form.password.data)
        form.password.errors.append("Wrong email or password.")
        return render_template("classroom/login.html", form=form), 401
    return render_template("classroom/login.html", form=form), 400 if form.errors else 200


@bp.post("/logout")
def logout():
    """Log out (a POST with a CSRF token, so no other site can log you out); this login's open dashboard
    sockets, in every process, are disconnected."""
    require_valid(ActionForm())
    end_login(session.pop(LOGIN_KEY, None))
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("classroom.home"))


@bp.app_context_processor
def inject_action_form():
    """Templates get ``action_form()`` for buttons that POST (a CSRF token each)."""
    return {"action_form": ActionForm, "teacher": current_user if current_user.is_authenticated else None}
