"""Friendly error pages: never a stack trace, never a bare 500."""

from __future__ import annotations

import logging

from flask import Flask, Response, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

log = logging.getLogger(__name__)

MESSAGES = {
    400: (
        "Something in that request was not right",
        "Please go back, check what you entered and try again.",
    ),
    403: ("You can't do that here", "Your account does not have permission for this page."),
    404: (
        "We couldn't find that page",
        "The link may be old or mistyped. Try the home page instead.",
    ),
    405: ("That didn't work", "Please use the form on the page rather than the address bar."),
    413: ("That was too large", "Please send something smaller."),
    429: (
        "Please slow down",
        "There have been too many attempts from your connection. Wait a minute, then go back "
        "and submit again: what you typed is still in the form.",
    ),
    500: (
        "Sorry, something went wrong on our side",
        "We have been told about it. Please try again in a few minutes.",
    ),
}


def render_error(code: int, detail: str | None = None) -> tuple[str, int]:
    title, message = MESSAGES.get(code, MESSAGES[400])
    return render_template(
        "errors/error.html", code=code, title=title, message=detail or message
    ), code


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def csrf_error(error: CSRFError) -> tuple[str, int]:
        return render_error(
            400, "This form had expired. Please go back, reload the page and submit again."
        )

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        response = make_response(render_error(error.code or 500))
        # Keep the headers the error carries, such as Allow on a 405 (RFC 9110 requires it).
        for name, value in error.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception) -> Response | tuple[str, int]:
        if isinstance(error, HTTPException):
            return http_error(error)
        # Log the exception type and place only: form values (which may be a
        # child's, or anyone's personal data) never reach the logs.
        log.error(
            "unhandled %s on %s %s",
            type(error).__name__,
            request.method,
            request.path,
            exc_info=(type(error), error, error.__traceback__) if app.debug else None,
        )
        return render_error(InternalServerError.code)
