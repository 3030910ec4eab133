"""Flask-Login wiring and the role check every staff route goes through."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, abort
from flask_login import current_user, login_required

from app.extensions import db, login_manager
from app.staff.models import Role, StaffUser

F = TypeVar("F", bound=Callable[..., Any])

ALL_ROLES = tuple(Role)
# Who may change supporter records (unsubscribe on request, and so on).
SUPPORTER_EDITORS = (Role.ADMIN, Role.ORGANIZER)


def register_auth(app: Flask) -> None:
    login_manager.login_view = "staff.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.session_protection = "strong"

    # Flask-Login's own context processor loads the user for every template,
    # which on public pages runs session protection for anonymous visitors and
    # sends them a remember-cookie deletion and a rewritten session. The proxy
    # loads the user only where a template (the staff pages) uses it.
    @app.context_processor
    def staff_user_context() -> dict[str, Any]:
        return {"current_user": current_user}

    @login_manager.user_loader
    def load_user(user_id: str) -> StaffUser | None:
        if not user_id.isdigit():
            return None
        return db.session.get(StaffUser, int(user_id))


def role_required(*roles: Role) -> Callable[[F], F]:
    """Signed in, and holding one of these roles; otherwise 403."""

    def decorator(view: F) -> F:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorator
