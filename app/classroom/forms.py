"""Classroom forms; every one carries a CSRF token (Flask-WTF)."""
from __future__ import annotations

import re
import unicodedata

from flask import abort, request
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, InputRequired, Length, ValidationError

from app.classroom.models import CODE_LENGTH, code_shaped, normalise_code
from app.security import form_expired

EMAIL_MAX = 254  # the column's length, checked on the address as stored (lower-cased)
# Passwords may hold any character, spaces only included: InputRequired (anything typed), not DataRequired
# (which refuses a blank string as "This field is required.").
PASSWORD_MAX = 200
NO_PASSWORD = "Enter a password."
LONG_PASSWORD = f"Use at most {PASSWORD_MAX} characters."

PRINTABLE = "Use letters, digits and ordinary punctuation only."
INVISIBLE = "Remove the invisible characters (such as zero-width spaces or text-direction marks)."
NOTHING_VISIBLE = "Type at least one visible letter, digit or sign."

# Letters and symbols to Unicode that draw nothing: the Hangul fillers, the blank Braille pattern and the
# null notehead, the usual ways to make a name that looks empty.
BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\U0001d159")
# Format characters that real text needs: the zero-width non-joiner and joiner shape Persian and Indic
# words and join emoji (👩‍🔬); allowed between two characters that show, never at an edge or in a row.
JOINERS = frozenset("\u200c\u200d")
# A black flag followed by tag letters and a cancel tag is a subdivision flag (Scotland, Wales, England).
FLAG_TAGS = re.compile("\U0001f3f4[\U000e0020-\U000e007e]+\U000e007f")


def _strip(value):
    """``value`` with its whitespace runs made single spaces and the ends trimmed (non-strings unchanged)."""
    return " ".join(value.split()) if isinstance(value, str) else value


def normalise_email(value):
    """An email as stored and looked up: whitespace stripped, lower-cased (non-strings unchanged).

    Lower-casing can lengthen it ("İ" becomes two characters), so the length is checked on this.
    """
    value = _strip(value)
    return value.lower() if isinstance(value, str) else value


def _shows(ch: str) -> bool:
    """Whether ``ch`` draws something: a letter, digit, punctuation or symbol that is not blank.

    A code point unknown to this Python's Unicode tables counts as shown (most likely a newer emoji),
    except in plane 14, which holds only tags and variation selectors.
    """
    category = unicodedata.category(ch)
    if category == "Cn":
        return not 0xE0000 <= ord(ch) <= 0xEFFFF
    return category[0] in "LNPS" and ch not in BLANK


def text_problem(text: str) -> str | None:
    """Why ``text`` would not read as typed (a control or invisible character, nothing visible), else None."""
    if text.isascii() and text.isprintable():  # the common case, without a look at each character
        return None if text.strip() else NOTHING_VISIBLE
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return PRINTABLE
    text = FLAG_TAGS.sub("\U0001f3f4", text)
    for i, ch in enumerate(text):
        if ch in JOINERS:
            if 0 < i < len(text) - 1 and _joins(text[i - 1]) and _shows(text[i + 1]):
                continue
            return INVISIBLE
        if ch in BLANK or unicodedata.category(ch) == "Cf":
            return INVISIBLE
    return None if any(_shows(ch) for ch in text) else NOTHING_VISIBLE


def _joins(ch: str) -> bool:
    """Whether a joiner may follow ``ch``: a character that shows, or a mark on one (🏳️‍🌈 has a variation
    selector before its joiner)."""
    return _shows(ch) or unicodedata.category(ch)[0] == "M"


def _too_long(field) -> bool:
    """Whether the field's Length refuses its text (then a 500 KB post is not worth a look at each character)."""
    return any(isinstance(v, Length) and 0 <= v.max < len(field.data) for v in field.validators)


def _printable(_form, field) -> None:
    """Refuses text with control or invisible characters, or with nothing visible."""
    if isinstance(field.data, str) and field.data and not _too_long(field) and (problem := text_problem(field.data)):
        raise ValidationError(problem)


def email_shaped(text: str) -> bool:
    """Whether ``text`` reads name@domain.tld: one "@", no space, a dot inside the domain.

    Deliberately loose: the address is a login name here, nothing is mailed to it. Checked without a regex:
    ``[^@\\s]+\\.[^@\\s]+$`` retries at every dot when it fails, seconds for a long domain of dots.
    """
    local, at, domain = text.partition("@")
    return bool(local and at) and "@" not in domain and "." in domain[1:-1] and not any(ch.isspace() for ch in text)


def _email(_form, field) -> None:
    """Refuses an address with control or invisible characters, or not shaped like one (one message)."""
    if _too_long(field):
        return
    if problem := text_problem(field.data):
        raise ValidationError(problem)
    if not email_shaped(field.data):
        raise ValidationError("Enter an email address.")


# The same address checks at registration and at log-in, on the address lower-cased: nothing PostgreSQL
# would refuse (a NUL, over 254 characters) ever reaches a query.
def _email_field() -> EmailField:
    return EmailField("Email", filters=[normalise_email], validators=[DataRequired(), Length(max=EMAIL_MAX), _email])


class Form(FlaskForm):
    """A classroom form: reads the submitted text fields only.

    No classroom form takes a file; a text field posted as a file part would
    reach the validators as a FileStorage (and fail them with a TypeError), so
    file parts are ignored and such a field counts as missing (a 400).
    """

    class Meta(FlaskForm.Meta):
        def wrap_formdata(self, form, formdata):
            formdata = super().wrap_formdata(form, formdata)
            if formdata is not None and request.files:
                return request.form
            return formdata


class RegisterForm(Form):
    """A new teacher account."""

    name = StringField("Your name", filters=[_strip], validators=[DataRequired(), Length(max=80), _printable])
    email = _email_field()
    password = PasswordField("Password", validators=[InputRequired(message=NO_PASSWORD),
                                                     Length(min=8, message="Use at least 8 characters."),
                                                     Length(max=PASSWORD_MAX, message=LONG_PASSWORD)])
    confirm = PasswordField("Repeat the password", validators=[EqualTo("password", message="The passwords differ.")])


class LoginForm(Form):
    """Teacher log-in."""

    email = _email_field()
    password = PasswordField("Password", validators=[InputRequired(message=NO_PASSWORD),
                                                     Length(max=PASSWORD_MAX, message=LONG_PASSWORD)])


class ClassForm(Form):
    """A new class."""

    name = StringField("Class name", filters=[_strip], validators=[DataRequired(), Length(max=80), _printable])
    aggregate_only = BooleanField("Aggregate-only: show class-level figures only, never individual students")


class SettingsForm(Form):
    """A class's settings."""

    aggregate_only = BooleanField("Aggregate-only")


def _join_code(_form, field) -> None:
    code = normalise_code(field.data)
    if not code_shaped(code):
        raise ValidationError(f"A class code has {CODE_LENGTH} characters, letters and digits (never 0, O, 1, I "
                              "or L). Check the code with your teacher.")


class CodeForm(Form):
    """A student types the join code (spaces and dashes are ignored; it must be one that could exist)."""

    code = StringField("Class code", filters=[_strip], validators=[DataRequired(), Length(max=20), _join_code])


class JoinForm(Form):
    """A student's display name and consent."""

    display_name = StringField("Display name", filters=[_strip],
                               validators=[DataRequired(), Length(max=40), _printable])
    consent = BooleanField("I have read what is analysed and kept, and I agree to share my camera's "
                           "emotion results with this class.",
                           validators=[DataRequired(message="Tick the box to agree before you start.")])


class ActionForm(Form):
    """A button that changes something: just the CSRF token."""


class DeleteForm(Form):
    """Deleting a class needs an explicit confirmation."""

    confirm = BooleanField("Delete this class and every session, student name and mood sample of it",
                           validators=[DataRequired(message="Tick the box to confirm.")])


FORM_EXPIRED = form_expired()


def require_valid(form: FlaskForm) -> None:
    """A 400 saying so when an action's form (a button with only its CSRF token) fails its checks: nothing
    changes."""
    if not form.validate_on_submit():
        abort(400, description=FORM_EXPIRED)
