"""/staff/segments: the saved-segment builder with a live count."""

from __future__ import annotations

from flask import Blueprint

from app.staff.auth import ALL_ROLES, role_required

bp = Blueprint("segments", __name__, url_prefix="/staff/segments")


@bp.get("/")
@role_required(*ALL_ROLES)
def list_segments() -> str:
    return "Segments are coming."
