"""The teacher's account side: CSRF tokens through a long lesson, log-in after a logged-out click, password
messages, the log-in limits' messages and Retry-After."""
from __future__ import annotations

import re
import time

import pytest
from itsdangerous.timed import TimestampSigner
from sqlalchemy import select

from app.classroom.models import Classroom, ClassSession
from app.extensions import db
from app.security import form_expired
from tests.classroom_fixtures import PASSWORD, classroom_app, create_class, login, register

TOKEN = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


def token(client, url: str) -> str:
    """The CSRF token of the page at ``url``, as a browser holding it would post it."""
    return TOKEN.search(client.get(url).get_data(as_text=True)).group(1)


def running_sessions(app, code: str) -> int:
    """How many sessions of class ``code`` are running."""
    with app.app_context():
        return len(db.session.scalars(select(ClassSession).join(Classroom).where(
            Classroom.code == code, ClassSession.ended_at.is_(None))).all())


# -- 1. CSRF tokens last as long as the session ---------------------------------------------------

def test_end_session_works_from_a_dashboard_opened_two_hours_ago(csrf_app, monkeypatch):
    client = csrf_app.test_client()
    data = {"name": "Ann", "email": "ann@example.org", "password": PASSWORD, "confirm": PASSWORD}
    assert client.post("/register", data={**data, "csrf_token": token(client, "/register")}).status_code == 302
    resp = client.post("/classes", data={"name": "Biology", "csrf_token": token(client, "/classes")})
    code = resp.headers["Location"].rstrip("/").rsplit("/", 1)[1]
    on_dashboard = token(client, f"/classes/{code}")  # the page opened at the start of the lesson
    stranger = csrf_app.test_client()
    register(stranger, "eve@example.org")  # CSRF on: refused, but the page gave this browser a token of its own
    strangers_token = token(stranger, "/register")

    later = time.time() + 2 * 3600  # a 90-minute lesson, and more
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(later))
    # Still bound to the session: another browser's token is refused, whatever its age.
    forged = client.post(f"/classes/{code}/end", data={"csrf_token": strangers_token})
    assert forged.status_code == 400 and form_expired() in forged.get_data(as_text=True)
    assert running_sessions(csrf_app, code) == 1
    resp = client.post(f"/classes/{code}/end", data={"csrf_token": on_dashboard})
    assert resp.status_code == 302 and resp.headers["Location"] == f"/classes/{code}"
    assert running_sessions(csrf_app, code) == 0
    assert client.post("/logout", data={"csrf_token": on_dashboard}).status_code == 302


# -- 2. A logged-out click: back to its page after log-in, never a 405 ----------------------------

@pytest.mark.parametrize("action", ["end", "start", "settings", "delete"])
def test_a_logged_out_button_leads_back_to_the_class_dashboard(capp, action):
    client = capp.test_client()
    register(client, "ann@example.org")
    code = create_class(client)
    client.post("/logout")
    resp = client.post(f"/classes/{code}/{action}", data={"aggregate_only": "y", "confirm": "y"})
    assert resp.status_code == 302
    assert resp.headers["Location"] == f"/login?next=/classes/{code}"
    assert "nothing was changed" in client.get(resp.headers["Location"]).get_data(as_text=True)
    assert running_sessions(capp, code) == 1  # the button did nothing
    after = login_at(client, resp.headers["Location"])
    assert after.status_code == 302 and after.headers["Location"] == f"/classes/{code}"
    assert client.get(after.headers["Location"]).status_code == 200


def login_at(client, url: str):
    """Post the log-in form of the page at ``url`` (its ``next`` included)."""
    return client.post(url, data={"email": "ann@example.org", "password": PASSWORD})


def test_a_logged_out_new_class_leads_back_to_the_class_list(capp):
    client = capp.test_client()
    resp = client.post("/classes", data={"name": "Biology"})
    assert resp.status_code == 302 and resp.headers["Location"] == "/login?next=/classes"


def test_a_logged_out_page_still_comes_back_after_log_in(capp):
    register(capp.test_client(), "ann@example.org")
    client = capp.test_client()
    resp = client.get("/classes/ABC234/history?session=3")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/login?next=")
    assert login_at(client, resp.headers["Location"]).headers["Location"] == "/classes/ABC234/history?session=3"


# -- 3. Password messages -------------------------------------------------------------------------

def post_register(capp, password: str, email: str = "a@example.org"):
    return capp.test_client().post("/register", data={"name": "A", "email": email, "password": password,
                                                      "confirm": password})


def test_a_long_password_is_told_the_upper_limit(capp):
    page = post_register(capp, "x" * 201)
    text = page.get_data(as_text=True)
    assert page.status_code == 400 and "Use at most 200 characters." in text and "at least 8" not in text
    assert post_register(capp, "x" * 200).status_code == 302
    assert "Use at least 8 characters." in post_register(capp, "x" * 7, "b@example.org").get_data(as_text=True)


def test_a_password_of_spaces_is_a_password(capp):
    assert post_register(capp, " " * 10).status_code == 302
    assert login(capp.test_client(), "a@example.org", " " * 10).status_code == 302
    assert login(capp.test_client(), "a@example.org", " " * 11).status_code == 401


@pytest.mark.parametrize("page", ["/register", "/login"])
def test_an_empty_password_is_asked_for(capp, page):
    resp = capp.test_client().post(page, data={"name": "A", "email": "a@example.org", "password": "", "confirm": ""})
    assert resp.status_code == 400 and "Enter a password." in resp.get_data(as_text=True)


# -- 4. The log-in limits: which one, how long, Retry-After ---------------------------------------

def limited_app(tmp_path, limit: str = "3 per minute"):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT=limit)
    register(app.test_client(), "ann@example.org")
    return app


def test_the_per_address_limit_says_so_and_how_long(tmp_path):
    app = limited_app(tmp_path)
    client = app.test_client()
    codes = [login(client, f"user{i}@example.org", "wrong").status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    resp = login(client, "ann@example.org")
    text = resp.get_data(as_text=True)
    seconds = int(resp.headers["Retry-After"])
    assert resp.status_code == 429 and 1 <= seconds <= 60
    assert "Too many attempts from this address: wait " in text and " seconds, then try again." in text
    assert "Wait a minute" not in text and "this account" not in text


def test_the_per_account_limit_says_so_and_how_long(tmp_path):
    app = limited_app(tmp_path)
    codes = [app.test_client().post("/login", data={"email": "ann@example.org", "password": "wrong"},
                                    environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]
    resp = app.test_client().post("/login", data={"email": "ann@example.org", "password": PASSWORD},
                                  environ_base={"REMOTE_ADDR": "10.0.0.9"})
    text = resp.get_data(as_text=True)
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
    assert "Too many attempts to log in to this account" in text and "from this address" not in text


def test_the_hourly_limit_gives_the_wait_in_minutes(tmp_path):
    app = limited_app(tmp_path, "100 per minute; 2 per hour")
    client = app.test_client()
    assert [login(client, "ann@example.org", "wrong").status_code for _ in range(3)] == [401, 401, 429]
    resp = login(client, "ann@example.org")
    seconds = int(resp.headers["Retry-After"])
    assert resp.status_code == 429 and 3000 < seconds <= 3600
    assert "wait about 60 minutes, then try again." in resp.get_data(as_text=True)


def test_registrations_over_the_limit_get_retry_after(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="1 per minute")
    client = app.test_client()
    assert register(client, "ann@example.org").status_code == 302
    resp = register(client, "bob@example.org")
    assert resp.status_code == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
    assert "Too many attempts from this address" in resp.get_data(as_text=True)
