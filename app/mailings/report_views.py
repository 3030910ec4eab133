"""/staff/mailings/<id>/report: the mailing report for staff, with a chart of 48 hours."""

from __future__ import annotations

from flask import Blueprint, abort, render_template

from app.extensions import db
from app.mailings import pipeline, reports
from app.mailings.models import Mailing
from app.staff.auth import ALL_ROLES, role_required

bp = Blueprint("mailing_reports", __name__, url_prefix="/staff/mailings")


@bp.get("/<int:mailing_id>/report")
@role_required(*ALL_ROLES)
def report(mailing_id: int) -> str:
    result = reports.mailing_report(db.session, mailing_id)
    if result is None:
        abort(404)
    mailing = db.session.get(Mailing, mailing_id)
    ab = pipeline.ab_scores(db.session, mailing) if mailing and mailing.subject_b else []
    return render_template("staff/mailing_report.html", mailing=mailing, report=result, ab=ab)
