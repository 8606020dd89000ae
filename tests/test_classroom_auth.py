"""Teacher accounts: registration, log-in, log-out, rate limit, CSRF."""
from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import event, insert, select

from app.classroom.auth import safe_next
from app.classroom.models import Teacher
from app.extensions import db
from app.security import form_expired
from tests.classroom_fixtures import PASSWORD, classroom_app, login, register


def test_register_logs_in_and_stores_only_a_hash(capp):
    client = capp.test_client()
    resp = register(client, "Ann@Example.org", "Ann")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/classes")
    assert client.get("/classes").status_code == 200
    with capp.app_context():
        teacher = db.session.scalar(select(Teacher))
        assert teacher.email == "ann@example.org"
        assert PASSWORD not in teacher.password_hash and teacher.password_hash.startswith(("scrypt:", "pbkdf2:"))
        assert teacher.check_password(PASSWORD) and not teacher.check_password("wrong")


@pytest.mark.parametrize("data, message", [
    ({"name": "A", "email": "a@example.org", "password": "short", "confirm": "short"}, "at least 8"),
    ({"name": "A", "email": "a@example.org", "password": "long enough", "confirm": "different"}, "differ"),
    ({"name": "A", "email": "not-an-email", "password": "long enough", "confirm": "long enough"}, "email address"),
    ({"name": "", "email": "a@example.org", "password": "long enough", "confirm": "long enough"}, "required"),
])
def test_register_validation(capp, data, message):
    resp = capp.test_client().post("/register", data=data)
    assert resp.status_code == 400 and message in resp.get_data(as_text=True)


def test_register_refuses_a_taken_email(capp):
    register(capp.test_client(), "ann@example.org")
    resp = register(capp.test_client(), "ANN@example.org")
    assert resp.status_code == 400 and "exists already" in resp.get_data(as_text=True)


def test_register_twice_at_once_is_refused_not_a_500(capp):
    """Two submissions of one email at once: the other request stores the account between our check and
    our commit; ours gets the form error, not a server error."""
    capp.config["PROPAGATE_EXCEPTIONS"] = False

    done = []

    def the_other_request_wins(_session, _flush_context, _instances):
        if not done:
            done.append(True)
            with db.engine.begin() as conn:
                conn.execute(insert(Teacher).values(email="ann@example.org", name="Ann", password_hash="x"))

    event.listen(db.session, "before_flush", the_other_request_wins)
    try:
        client = capp.test_client()
        resp = register(client, "ann@example.org")
    finally:
        event.remove(db.session, "before_flush", the_other_request_wins)
    assert done and resp.status_code == 400 and "exists already" in resp.get_data(as_text=True)
    assert client.get("/classes").status_code == 302  # not logged in
    with capp.app_context():
        assert len(db.session.scalars(select(Teacher)).all()) == 1


def test_login_logout(capp):
    register(capp.test_client(), "ann@example.org")
    client = capp.test_client()
    assert client.get("/classes").status_code == 302
    resp = login(client, "ann@example.org")
    assert resp.status_code == 302 and client.get("/classes").status_code == 200
    page = client.get("/classes").get_data(as_text=True)
    assert "Signed in as" in page and 'id="logout"' in page
    assert client.get("/logout").status_code == 405  # a GET (a link, an <img>) cannot log anyone out
    assert client.post("/logout").status_code == 302
    assert client.get("/classes").status_code == 302


def test_wrong_password_and_unknown_email_get_the_same_answer(capp):
    register(capp.test_client(), "ann@example.org")
    wrong = login(capp.test_client(), "ann@example.org", "wrong password")
    unknown = login(capp.test_client(), "nobody@example.org")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong email or password" in wrong.get_data(as_text=True)
    assert "Wrong email or password" in unknown.get_data(as_text=True)


def test_login_redirects_only_to_local_next(capp):
    register(capp.test_client(), "ann@example.org")
    client = capp.test_client()
    resp = client.post("/login?next=/classes/ABC", data={"email": "ann@example.org", "password": PASSWORD})
    assert resp.headers["Location"] == "/classes/ABC"
    resp = capp.test_client().post("/login?next=//evil.example/x", data={"email": "ann@example.org",
                                                                         "password": PASSWORD})
    assert resp.headers["Location"] == "/classes"


@pytest.mark.parametrize("target", ["/\t/evil.example", "/\n/evil.example", "/\r/evil.example",
                                    "/ /evil.example", "/\r\nSet-Cookie: x=1", "/\\evil.example"])
def test_login_never_redirects_off_site(capp, target):
    capp.config["PROPAGATE_EXCEPTIONS"] = False
    register(capp.test_client(), "ann@example.org")
    resp = capp.test_client().post("/login", query_string={"next": target},
                                   data={"email": "ann@example.org", "password": PASSWORD})
    assert resp.status_code == 302 and resp.headers["Location"] == "/classes"


@pytest.mark.parametrize("target, ok", [
    ("/classes", True), ("/classes/ABC234?session=3", True), ("//evil.example", False),
    ("https://evil.example", False), ("/\\evil.example", False), ("", False), (None, False),
    ("/\t/evil.example", False), ("/\n/evil.example", False), ("/\r/x", False), ("/ /evil.example", False),
    ("/\x00x", False), ("/\x7f/evil.example", False), ("/\u2028/evil.example", False), ("/\u00a0/x", False),
    ("/x:y@evil.example", True), ("http:/evil.example", False),
])
def test_safe_next(target, ok):
    assert (safe_next(target) is not None) == ok


def test_login_is_rate_limited(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="3 per minute")
    register(app.test_client(), "ann@example.org")
    client = app.test_client()
    codes = [login(client, "ann@example.org", "wrong").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    # Still limited with the right password: guessing cannot continue.
    resp = login(client, "ann@example.org")
    assert resp.status_code == 429 and "Too many attempts" in resp.get_data(as_text=True)
    # The page itself (GET) is not limited.
    assert client.get("/login").status_code == 200


def test_login_guesses_at_one_account_are_limited_from_any_number_of_addresses(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="3 per minute")
    register(app.test_client(), "ann@example.org")
    codes = [app.test_client().post("/login", data={"email": " Ann@Example.org", "password": "wrong"},
                                    environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code for i in range(4)]
    assert codes == [401, 401, 401, 429]  # the fourth address is fresh, the account is not
    # Another account from a fifth address is not held up by Ann's.
    other = app.test_client().post("/login", data={"email": "bob@example.org", "password": "wrong"},
                                   environ_base={"REMOTE_ADDR": "10.0.0.9"})
    assert other.status_code == 401


def test_csrf_rejects_forms_without_a_token(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", WTF_CSRF_ENABLED=True)
    client = app.test_client()
    data = {"name": "Ann", "email": "ann@example.org", "password": PASSWORD, "confirm": PASSWORD}
    resp = client.post("/register", data=data)
    assert resp.status_code == 400 and form_expired() in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(Teacher)) is None
    page = client.get("/register").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post("/register", data={**data, "csrf_token": token}).status_code == 302
    # Logged in now: creating a class without a token is refused as well.
    resp = client.post("/classes", data={"name": "Biology"})
    assert resp.status_code == 400


@pytest.mark.parametrize("page, fields", [
    ("/login", {"email": "ann@example.org", "password": PASSWORD}),
    ("/register", {"name": "Eve", "email": "eve@example.org", "password": PASSWORD, "confirm": PASSWORD}),
])
def test_text_fields_posted_as_files_are_a_400(capp, page, fields):
    register(capp.test_client(), "ann@example.org")
    capp.config["PROPAGATE_EXCEPTIONS"] = False
    data = {name: (io.BytesIO(value.encode()), f"{name}.txt") for name, value in fields.items()}
    resp = capp.test_client().post(page, data=data, content_type="multipart/form-data")
    assert resp.status_code == 400
