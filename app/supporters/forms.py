"""Public forms. Field names are the contract's: email, first_name, last_name, postal_code,
country, birth_year. `website` is the honeypot."""

from __future__ import annotations

import unicodedata
from functools import cache

import pycountry
from flask_wtf import FlaskForm
from wtforms import HiddenField, SelectField, StringField
from wtforms.validators import Length, Optional, ValidationError

from app.supporters.emails import InvalidEmail, normalise_email


@cache
def country_choices() -> list[tuple[str, str]]:
    countries = sorted(pycountry.countries, key=lambda c: getattr(c, "common_name", c.name))
    return [("", "Choose your country (optional)")] + [
        (c.alpha_2, getattr(c, "common_name", c.name)) for c in countries
    ]


def clean_text(value: str | None) -> str:
    """Collapse runs of whitespace and drop control characters (NUL, ESC, ...): nobody types
    them, and PostgreSQL refuses NUL in text, which would turn a sign-up into a 500."""
    if not value:
        return ""
    kept = "".join(c for c in value if c.isspace() or unicodedata.category(c) != "Cc")
    return " ".join(kept.split())


class EmailAddress:
    """Validates with email-validator and keeps the normalised address on the field."""

    def __call__(self, form: FlaskForm, field: StringField) -> None:
        try:
            field.normalised = normalise_email(field.data or "")
        except InvalidEmail as exc:
            raise ValidationError(str(exc)) from None


class HoneypotForm(FlaskForm):
    # Hidden from people (CSS and aria-hidden); bots that fill every field fill this.
    website = StringField("Leave this field empty", validators=[Optional()])

    def is_bot(self) -> bool:
        return bool((self.website.data or "").strip())


class SignupForm(HoneypotForm):
    email = StringField("Email address", filters=[clean_text], validators=[EmailAddress()])
    first_name = StringField("First name", filters=[clean_text], validators=[Length(max=100)])
    last_name = StringField("Last name", filters=[clean_text], validators=[Length(max=100)])
    postal_code = StringField("Postal code", filters=[clean_text], validators=[Length(max=20)])
    country = SelectField("Country", choices=country_choices, validate_choice=False)
    birth_year = StringField("Year you were born", filters=[clean_text])
    # Set when we suggested a correction and the person kept their own spelling.
    email_checked = HiddenField()

    def validate_country(self, field: SelectField) -> None:
        if field.data and field.data not in {code for code, _ in country_choices()}:
            raise ValidationError("Please choose a country from the list.")


class NameForm(HoneypotForm):
    first_name = StringField("First name", filters=[clean_text], validators=[Length(max=100)])
    last_name = StringField("Last name", filters=[clean_text], validators=[Length(max=100)])


class ActionForm(FlaskForm):
    """The preferences page's buttons: unsubscribe, snooze, resubscribe."""

    action = HiddenField()
    days = HiddenField()
