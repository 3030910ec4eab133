"""Event routes: the public .ics file, cancelling from /u/<token>, the staff attendee list."""

from __future__ import annotations

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from app.actions import events, service
from app.actions.models import ActionPage, PageKind, PageStatus
from app.actions.tasks import enqueue_rsvp_email
from app.extensions import db
from app.staff import service as staff_service
from app.staff.auth import ALL_ROLES, role_required
from app.supporters import service as supporters
from app.timeutil import utcnow
from privacy.ledger import DisclosureRefused

bp = Blueprint("events", __name__)


def _public_event_or_404(slug: str) -> ActionPage:
    page = service.page_by_slug(db.session, slug)
    if page is None or page.status == PageStatus.DRAFT or page.kind != PageKind.EVENT:
        abort(404)
    return page


@bp.get("/a/<slug>/event.ics")
def calendar_file(slug: str) -> Response:
    """The event's calendar file: the same for everyone, nothing personal in it."""
    page = _public_event_or_404(slug)
    data = events.calendar_file(page, current_app.config["BASE_URL"])
    if data is None:
        abort(404)
    response = Response(data, mimetype="text/calendar")
    response.headers["Content-Disposition"] = f'attachment; filename="{page.slug}.ics"'
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.post("/u/<token>/events/<int:page_id>/cancel")
def cancel(token: str, page_id: int) -> Response:
    """Cancel the supporter's RSVP (CSRF checked by CSRFProtect); the freed place moves up."""
    supporter = supporters.supporter_for_token(db.session, current_app.config["SECRET_KEY"], token)
    page = db.session.get(ActionPage, page_id)
    if supporter is None or page is None or page.kind != PageKind.EVENT:
        abort(404)
    try:
        promoted = events.cancel_rsvp(db.session, supporter, page, utcnow())
    except events.EventError:
        db.session.rollback()
        return redirect(url_for("supporters.preferences", token=token, done="event-none"), 303)
    db.session.commit()
    if promoted is not None:
        enqueue_rsvp_email(promoted.id, "promoted")
    return redirect(url_for("supporters.preferences", token=token, done="event-cancelled"), 303)


@bp.get("/staff/pages/<int:page_id>/attendees")
@role_required(*ALL_ROLES)
def attendees(page_id: int) -> Response | tuple[str, int]:
    """Who is going and who is waiting; ?format=csv downloads it (and is audited)."""
    page = db.session.get(ActionPage, page_id)
    if page is None or page.kind != PageKind.EVENT:
        abort(404)
    rows = events.attendees(db.session, page)
    export_error = ""
    if request.args.get("format") == "csv":
        # A staff export is personal data leaving the system: it needs a purpose, and the
        # disclosure ledger records it (privacy rule 1).
        try:
            staff_service.record_staff_export(
                db.session,
                current_user,
                f"attendees of event page {page.id} (name, email, RSVP status)",
                request.args.get("purpose", ""),
                len(rows),
                utcnow(),
            )
        except DisclosureRefused:
            db.session.rollback()
            export_error = "Please say why you need this export; it is recorded in the ledger."
        else:
            db.session.commit()
            response = Response(events.attendees_csv(rows), mimetype="text/csv")
            response.headers["Content-Disposition"] = (
                f'attachment; filename="attendees-{page.slug}.csv"'
            )
            response.headers["Cache-Control"] = "no-store"
            return response
    return render_template(
        "staff/attendees.html",
        page=page,
        rows=rows,
        context=events.public_context(db.session, page),
        waitlisted=events.waitlist_count(db.session, page),
        export_error=export_error,
        purpose=request.args.get("purpose", "")[:500],
    ), (422 if export_error else 200)
