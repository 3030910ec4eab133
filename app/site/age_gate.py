"""The Flask side of privacy rule 3: every personal-data form calls `screen_form`.

Runs before any validation, logging or storage, so a child's answers go
nowhere: the request gets the kind page and a cookie holding only a flag.
"""

from __future__ import annotations

from flask import Response, make_response, render_template, request

from app.timeutil import utcnow
from privacy.age_screen import (
    SCREEN_COOKIE_MAX_AGE,
    SCREEN_COOKIE_NAME,
    SCREEN_COOKIE_VALUE,
    AgeCheck,
    browser_is_screened,
    check_birth_year,
)


def screened_response() -> Response:
    """The kind page for a child, setting (or renewing) the flag cookie."""
    response = make_response(render_template("public/age_screen.html"), 200)
    response.set_cookie(
        SCREEN_COOKIE_NAME,
        SCREEN_COOKIE_VALUE,
        max_age=SCREEN_COOKIE_MAX_AGE,
        httponly=True,
        samesite="Lax",
        secure=request.is_secure,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def already_screened() -> Response | None:
    """For GET and POST alike: the kind page again while the flag is set."""
    if browser_is_screened(dict(request.cookies)):
        return screened_response()
    return None


def screen_form(field: str = "birth_year") -> Response | AgeCheck:
    """Check the submitted year of birth: the kind page for a child, else the check's result."""
    if (blocked := already_screened()) is not None:
        return blocked
    check = check_birth_year(request.form.get(field), utcnow().year)
    if check.is_child:
        return screened_response()
    return check
