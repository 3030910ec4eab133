"""The privacy policy and the health check."""

from __future__ import annotations

from flask import Blueprint, render_template
from markdown_it import MarkdownIt
from markupsafe import Markup
from sqlalchemy import text

from app.extensions import db
from privacy import POLICY_VERSION, policy_text

bp = Blueprint("site", __name__)

# Our own policy text, but still no raw HTML: Markdown only.
_markdown = MarkdownIt("commonmark", {"html": False})


@bp.get("/privacy")
def privacy_policy() -> str:
    body = Markup(_markdown.render(policy_text()))  # noqa: S704 (html disabled above)
    return render_template("public/privacy.html", body=body, version=POLICY_VERSION)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, str], int]:
    try:
        db.session.execute(text("SELECT 1"))
    except Exception:  # the point is to answer, not to raise
        db.session.rollback()
        return {"status": "error", "database": "unreachable"}, 503
    return {"status": "ok", "database": "ok"}, 200
