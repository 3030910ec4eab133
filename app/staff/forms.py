"""Staff forms."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import DataRequired


class LoginForm(FlaskForm):
    email = EmailField(
        "Email address", validators=[DataRequired("Please enter your email address.")]
    )
    password = PasswordField("Password", validators=[DataRequired("Please enter your password.")])


class ConfirmForm(FlaskForm):
    """A button that changes something: only its CSRF token matters."""
