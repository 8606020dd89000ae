"""Form text at the edge: control, invisible or over-long input is a 4xx with a message at its field and
changes nothing, on SQLite and on a real PostgreSQL (which refuses NUL bytes and over-long text with an error,
so an unchecked field there is a 500); names in any script stay accepted; the log-in limiter's keys stay small."""
from __future__ import annotations

import re
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from app.classroom.models import Classroom, Student, Teacher
from app.extensions import db, limiter
from tests.classroom_fixtures import PASSWORD, classroom_app, create_class, register

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
PW = "long enough 1"

PRINTABLE = "Use letters, digits and ordinary punctuation only."
INVISIBLE = "Remove the invisible characters (such as zero-width spaces or text-direction marks)."
NOTHING_VISIBLE = "Type at least one visible letter, digit or sign."
EMAIL_TOO_LONG = "Field cannot be longer than 254 characters."


@dataclass
class Site:
    """An app with Ann registered (logged in on ``teacher``) and her class ``code`` running."""

    app: object
    teacher: object
    code: str

    def counts(self) -> dict:
        """Rows per table, and every stored teacher email, display name and class name."""
        with self.app.app_context():
            return {"teachers": sorted(db.session.scalars(select(Teacher.email))),
                    "names": sorted(db.session.scalars(select(Teacher.name))),
                    "classes": sorted(db.session.scalars(select(Classroom.name))),
                    "students": db.session.scalar(select(func.count()).select_from(Student))}


def make_site(app) -> Site:
    """Ann, her class and a client logged in as her, on ``app``."""
    teacher = app.test_client()
    assert register(teacher, "ann@example.org", "Ann").status_code == 302
    return Site(app, teacher, create_class(teacher))


def site_on(url: str):
    """A site on the database at ``url`` (limits high: these tests post many forms), stopped afterwards."""
    app = classroom_app(url, LOGIN_RATE_LIMIT="1000 per minute", JOIN_RATE_LIMIT="1000 per minute")
    yield make_site(app)
    app.extensions["classroom"].stop()
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="module", params=BACKENDS)
def site(request, tmp_path_factory):
    """A site on a database of each kind, shared by the module's tests that post refused forms (each checks
    that nothing changed)."""
    url = (f"sqlite:///{tmp_path_factory.mktemp('forms') / 'forms.sqlite3'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_server").new_database())
    yield from site_on(url)


@pytest.fixture(scope="module")
def refusing_sqlite_site(tmp_path_factory):
    """A site on SQLite, shared by the module's tests that post refused forms."""
    yield from site_on(f"sqlite:///{tmp_path_factory.mktemp('forms') / 'forms.sqlite3'}")


@pytest.fixture
def sqlite_site(tmp_path):
    """A site on a fresh SQLite file, for tests that store what they post."""
    yield from site_on(f"sqlite:///{tmp_path / 'forms.sqlite3'}")


def field_errors(resp, field_id: str) -> list[str]:
    """The messages shown inside the label of the field ``field_id``."""
    html = resp.get_data(as_text=True)
    label = re.search(rf'<label class="field" for="{field_id}">(.*?)</label>', html, re.DOTALL)
    assert label, f"no field {field_id} on the page"
    return re.findall(r'class="field-error"[^>]*>([^<]*)<', label.group(1))


def logged_in(client) -> bool:
    return client.get("/classes").status_code == 200


# -- emails -----------------------------------------------------------------------------------------

BAD_EMAILS = [  # (typed, the message at the field)
    pytest.param("eve\x00@example.org", PRINTABLE, id="NUL"),
    pytest.param("eve@example.org\x00", PRINTABLE, id="NUL-at-end"),
    pytest.param("eve\x1b@example.org", PRINTABLE, id="ESC"),
    pytest.param("eve\x7f@example.org", PRINTABLE, id="DEL"),
    pytest.param("eve\x9b@example.org", PRINTABLE, id="C1-CSI"),
    pytest.param("eve\u200b@example.org", INVISIBLE, id="zero-width-space"),
    pytest.param("eve\u202e@example.org", INVISIBLE, id="RLO"),
    # 252 characters as typed, 492 once lower-cased ("İ".lower() is "i" and a combining dot).
    pytest.param("İ" * 240 + "@example.org", EMAIL_TOO_LONG, id="longer-when-lower-cased"),
]


@pytest.mark.parametrize("email, message", BAD_EMAILS)
def test_register_refuses_bad_emails_at_the_field(site, email, message):
    before = site.counts()
    client = site.app.test_client()
    resp = client.post("/register", data={"name": "Eve", "email": email, "password": PW, "confirm": PW})
    assert resp.status_code == 400
    assert field_errors(resp, "email") == [message]
    assert site.counts() == before and not logged_in(client)


@pytest.mark.parametrize("email, message", BAD_EMAILS + [
    pytest.param("ann@example.org\x00", PRINTABLE, id="Ann-then-NUL"),
    pytest.param("not-an-email", "Enter an email address.", id="no-at"),
])
def test_login_refuses_bad_emails_at_the_field(site, email, message):
    client = site.app.test_client()
    resp = client.post("/login", data={"email": email, "password": PASSWORD})
    assert resp.status_code == 400
    assert field_errors(resp, "email") == [message]
    assert not logged_in(client)


def test_an_email_of_254_characters_once_lower_cased_is_accepted(sqlite_site):
    email = "A" * 242 + "@example.org"
    assert len(email) == 254
    client = sqlite_site.app.test_client()
    assert register(client, email, "Eve").status_code == 302
    assert email.lower() in sqlite_site.counts()["teachers"]
    assert sqlite_site.app.test_client().post("/login", data={"email": email, "password": PASSWORD}).status_code == 302


@pytest.mark.parametrize("page", ["/register", "/login"])
def test_a_long_domain_of_dots_is_refused_by_its_length_alone(refusing_sqlite_site, page, monkeypatch):
    """A shape check (a regex) that retried at every dot took seconds for 30,000 of them (minutes for 400 KB):
    text the length limit refuses is not looked at character by character."""
    from app.classroom import forms

    def only_short(check):
        def spy(text):
            assert len(text) <= forms.EMAIL_MAX, f"a {len(text)}-character text was checked beyond its length"
            return check(text)
        return spy

    monkeypatch.setattr(forms, "email_shaped", only_short(forms.email_shaped))
    monkeypatch.setattr(forms, "text_problem", only_short(forms.text_problem))
    email = "a@" + "." * 30_000 + " x"
    resp = refusing_sqlite_site.app.test_client().post(page, data={"name": "Eve", "email": email, "password": PW,
                                                                   "confirm": PW})
    assert resp.status_code == 400 and field_errors(resp, "email") == [EMAIL_TOO_LONG]


def test_the_email_shape_check_takes_dots_and_spaces_as_they_come():
    from app.classroom.forms import email_shaped

    assert not email_shaped("a@" + "." * 30_000 + " x")  # linear: no regex backtracking over the dots
    assert email_shaped("ann@example.org") and not email_shaped("ann@example") and not email_shaped("a b@c.org")


@pytest.mark.parametrize("backend", BACKENDS)
def test_passwords_keep_every_character_only_their_hash_is_stored(request, tmp_path, backend):
    """A password is never stored, so it may hold anything, NUL included (PostgreSQL sees only the hash)."""
    url = f"sqlite:///{tmp_path / 'pw.sqlite3'}" if backend == "sqlite" else request.getfixturevalue("postgres_url")
    app = classroom_app(url)
    try:
        password = "odd\x00\x1b\u200b password"
        assert register(app.test_client(), "eve@example.org", "Eve", password).status_code == 302
        assert app.test_client().post("/login", data={"email": "eve@example.org", "password": password}) \
            .status_code == 302
        assert app.test_client().post("/login", data={"email": "eve@example.org", "password": "odd"}) \
            .status_code == 401
    finally:
        app.extensions["classroom"].stop()
        with app.app_context():
            db.engine.dispose()


# -- names ------------------------------------------------------------------------------------------

def post_name(site: Site, form: str, name: str):
    """Post ``name`` as the teacher's name (register), a class name or a student's display name."""
    if form == "teacher":
        return site.app.test_client().post("/register", data={"name": name, "email": "eve@example.org",
                                                               "password": PW, "confirm": PW})
    if form == "class":
        return site.teacher.post("/classes", data={"name": name})
    return site.app.test_client().post(f"/join/{site.code}", data={"display_name": name, "consent": "y"})


FIELD = {"teacher": "name", "class": "name", "student": "display_name"}
FORMS = list(FIELD)


def assert_name_refused(site: Site, form: str, name: str, message: str) -> None:
    """Posting ``name`` in ``form`` gets a 400 with ``message`` at the field, and nothing is stored."""
    before = site.counts()
    resp = post_name(site, form, name)
    assert resp.status_code == 400
    assert field_errors(resp, FIELD[form]) == [message]
    assert site.counts() == before

CONTROL_NAMES = [
    pytest.param("Sam\x00", id="NUL"),
    pytest.param("\x00", id="only-NUL"),
    pytest.param("Sam\x1b[31m", id="ESC"),
    pytest.param("Sam\x9b31m", id="C1-CSI"),
    pytest.param("Sam\x80", id="C1-PAD"),
]

INVISIBLE_NAMES = [
    pytest.param("\u200b", id="zero-width-space"),
    pytest.param("\u2800\u2800", id="braille-blank"),
    pytest.param("\u3164", id="hangul-filler"),
    pytest.param("\u115f\u1160", id="hangul-choseong-jungseong-fillers"),
    pytest.param("\uffa0", id="halfwidth-hangul-filler"),
    pytest.param("\u202e", id="RLO"),
    pytest.param("\u200f\u200e", id="RLM-LRM"),
    pytest.param("\u00ad", id="soft-hyphen"),
    pytest.param("\ufeff", id="BOM"),
    pytest.param("\u2060\u2061", id="word-joiner"),
    pytest.param("Sam\u202eevil", id="RLO-inside"),
    pytest.param("Sam\u2066x\u2069", id="bidi-isolate-inside"),
    pytest.param("Sam\u200b", id="zero-width-space-after"),
    pytest.param("S\u3164am", id="hangul-filler-inside"),
    pytest.param("\u200d", id="lone-ZWJ"),
    pytest.param("Sam \u200d", id="ZWJ-after-space"),
]

NOTHING_VISIBLE_NAMES = [
    pytest.param("\ufe0f", id="variation-selector"),
    pytest.param("\u0301\u0301", id="combining-marks"),
    pytest.param("\u034f", id="combining-grapheme-joiner"),
]


@pytest.mark.parametrize("name", CONTROL_NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_control_characters_in_names_are_refused(site, form, name):
    assert_name_refused(site, form, name, PRINTABLE)


@pytest.mark.parametrize("name, message", [pytest.param(*p.values, INVISIBLE, id=p.id) for p in INVISIBLE_NAMES]
                         + [pytest.param(*p.values, NOTHING_VISIBLE, id=p.id) for p in NOTHING_VISIBLE_NAMES])
@pytest.mark.parametrize("form", FORMS)
def test_invisible_names_are_refused(refusing_sqlite_site, form, name, message):
    assert_name_refused(refusing_sqlite_site, form, name, message)


ACCEPTED_NAMES = [
    "Zoë", "José María", "Nguyễn Thị", "e\u0301mile", "学生", "김민준", "محمد", "Ωμέγα–Łódź", "O'Brien-Smith",
    "🙂", "Sam 🙂",
    "👩\u200d🔬",                                    # woman scientist: an emoji joined with ZWJ
    "🏳\ufe0f\u200d🌈",                               # rainbow flag: a variation selector, then ZWJ
    "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",  # Scotland's flag: tag characters
    "می\u200cخواهم",                                  # Persian with a zero-width non-joiner
]


@pytest.mark.parametrize("name", ACCEPTED_NAMES)
@pytest.mark.parametrize("form", FORMS)
def test_names_in_any_script_are_kept(sqlite_site, form, name):
    resp = post_name(sqlite_site, form, name)
    assert resp.status_code == 302, resp.get_data(as_text=True)[:2000]
    after = sqlite_site.counts()
    if form == "student":
        assert after["students"] == 1
        with sqlite_site.app.app_context():
            assert db.session.scalar(select(Student.display_name)) == name
    else:
        assert name in after["names" if form == "teacher" else "classes"]


@pytest.mark.parametrize("code", ["AB\x00C234", "\x00", "\u200bABC234", "ABC\u202e234"])
def test_odd_join_codes_are_a_4xx(site, code):
    """A typed code keeps only its letters and digits before any query (this guards that on PostgreSQL)."""
    before = site.counts()
    resp = site.app.test_client().post("/join", data={"code": code})
    assert resp.status_code in (400, 404)
    assert site.counts() == before


# -- the log-in limiter -----------------------------------------------------------------------------

def limiter_chars() -> int:
    """Characters in every key the limiter's in-memory storage holds (that of the app made last)."""
    storage = limiter.storage
    keys = [*storage.storage, *storage.expirations, *storage.events]
    return sum(len(k) for k in keys)


def test_huge_emails_leave_small_limiter_keys(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="1000 per minute; 5000 per hour")
    try:
        client = app.test_client()
        before = limiter_chars()
        for i in range(6):
            huge = f"{i}" + "x" * 400_000 + "@example.org"
            assert client.post("/login", data={"email": huge, "password": "whatever"}).status_code == 400
        # Two limits (minute, hour) per key, per address and per email: a few hundred characters a post at most.
        assert limiter_chars() - before < 6 * 2 * 2 * 300
    finally:
        app.extensions["classroom"].stop()


def test_guesses_at_one_account_share_a_count_under_any_case(tmp_path):
    app = classroom_app(f"sqlite:///{tmp_path / 'db.sqlite3'}", LOGIN_RATE_LIMIT="3 per minute")
    try:
        register(app.test_client(), "ann@example.org")
        typed = ["ann@example.org", "ANN@EXAMPLE.ORG", " Ann@Example.org ", "aNN@example.ORG"]
        codes = [app.test_client().post("/login", data={"email": email, "password": "wrong"},
                                        environ_base={"REMOTE_ADDR": f"10.0.0.{i}"}).status_code
                 for i, email in enumerate(typed)]
        assert codes == [401, 401, 401, 429]
    finally:
        app.extensions["classroom"].stop()
