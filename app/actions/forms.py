"""Public action forms: the sign-up fields of CONTRACT.md plus each kind's own fields."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    RadioField,
    SelectChoice,
    StringField,
    TextAreaField,
)
from wtforms.validators import Length, Optional

from app.actions.service import CALL_OUTCOMES
from app.supporters.forms import HoneypotForm, SignupForm, clean_text

MAX_COMMENT = 1000


class KindFields:
    """Fields every kind may show; the page template shows only its own."""

    email_opt_in = BooleanField()
    comment = TextAreaField("Comment (optional)", validators=[Length(max=MAX_COMMENT)])
    show_publicly = BooleanField("Show my first name and town with my signature")
    town = StringField("Town (optional)", filters=[clean_text], validators=[Length(max=100)])
    letter_subject = StringField("Subject", filters=[clean_text], validators=[Optional()])
    letter_body = TextAreaField("Your letter", validators=[Optional()])
    call_outcome = RadioField(
        "How did your call go?",
        choices=[SelectChoice(value, label) for value, label in CALL_OUTCOMES.items()],
        validate_choice=False,
    )
    call_target_id = HiddenField()
    ref = HiddenField()
    mid = HiddenField()


class ActionForm(KindFields, SignupForm):
    """For a visitor who types who they are."""


class ConfirmActionForm(KindFields, HoneypotForm):
    """For a supporter recognised from the signed link in their email."""

    t = HiddenField()


DEFAULT_LETTER_MAX = 5000


def letter_limits(settings: dict[str, object]) -> tuple[str, int]:
    """What a signer may edit ("none", "body" or "all") and the letter's maximum length."""
    editable = str(settings.get("letter_editable", "body"))
    raw_max = settings.get("letter_max_length", DEFAULT_LETTER_MAX)
    max_length = raw_max if isinstance(raw_max, int) and raw_max > 0 else DEFAULT_LETTER_MAX
    return (editable if editable in ("none", "body", "all") else "body"), max_length


def check_kind_fields(form: FlaskForm, kind: str, settings: dict[str, object]) -> bool:
    """Validate the fields of this page's kind, adding messages to the form; True if fine."""
    ok = True
    if kind == "call" and form.call_outcome.data not in CALL_OUTCOMES:
        form.call_outcome.errors = [*form.call_outcome.errors, "Please tell us how your call went."]
        ok = False
    if kind == "letter":
        editable, max_length = letter_limits(settings)
        if editable != "all":
            form.letter_subject.data = str(settings.get("letter_subject", ""))
        if editable == "none":
            form.letter_body.data = str(settings.get("letter_body", ""))
        subject = (form.letter_subject.data or "").strip()
        body = (form.letter_body.data or "").strip()
        if not subject or len(subject) > 200:
            form.letter_subject.errors = [
                *form.letter_subject.errors,
                "Please give your letter a subject of up to 200 characters.",
            ]
            ok = False
        if not body:
            form.letter_body.errors = [*form.letter_body.errors, "Please write your letter."]
            ok = False
        elif len(body) > max_length:
            form.letter_body.errors = [
                *form.letter_body.errors,
                f"Please keep your letter under {max_length:,} characters (it has {len(body):,}).",
            ]
            ok = False
    return ok
