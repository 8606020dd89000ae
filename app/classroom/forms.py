"""Classroom forms; every one carries a CSRF token (Flask-WTF)."""
from __future__ import annotations

import re

from flask import abort, request
from flask_wtf import FlaskForm
from wtforms import BooleanField, EmailField, PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, Regexp, ValidationError

from app.classroom.models import CODE_ALPHABET, CODE_LENGTH, normalise_code
from app.security import form_expired

# Deliberately loose: the address is a login name here, nothing is mailed to it.
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"


def _strip(value):
    return " ".join(value.split()) if isinstance(value, str) else value


def _printable(_form, field) -> None:
    if field.data and re.search(r"[\x00-\x1f\x7f]", field.data):
        raise ValidationError("Use letters, digits and ordinary punctuation only.")


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
    email = EmailField("Email", filters=[_strip], validators=[DataRequired(), Length(max=254),
                                                              Regexp(EMAIL, message="Enter an email address.")])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=8, max=200,
                                                     message="Use at least 8 characters.")])
    confirm = PasswordField("Repeat the password", validators=[EqualTo("password", message="The passwords differ.")])


class LoginForm(Form):
    """Teacher log-in."""

    email = EmailField("Email", filters=[_strip], validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class ClassForm(Form):
    """A new class."""

    name = StringField("Class name", filters=[_strip], validators=[DataRequired(), Length(max=80), _printable])
    aggregate_only = BooleanField("Aggregate-only: show class-level figures only, never individual students")


class SettingsForm(Form):
    """A class's settings."""

    aggregate_only = BooleanField("Aggregate-only")


def _join_code(_form, field) -> None:
    code = normalise_code(field.data)
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
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
