"""/staff/mailings: compose, preview, test, schedule, send and watch a mailing."""

from __future__ import annotations

from flask import Blueprint

from app.staff.auth import ALL_ROLES, role_required

bp = Blueprint("mailings", __name__, url_prefix="/staff/mailings")


@bp.get("/")
@role_required(*ALL_ROLES)
def list_mailings() -> str:
    return "Mailings are coming."
