"""/staff/segments: the saved-segment builder with a live count."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user
from flask_wtf.csrf import CSRFError, validate_csrf
from wtforms import ValidationError

from app.extensions import csrf, db
from app.staff.auth import ALL_ROLES, role_required
from app.supporters import segments
from app.supporters.models import Segment
from app.supporters.segment_forms import (
    PARTS,
    TYPE_CHOICES,
    BuilderForm,
    from_definition,
    from_post,
)
from app.timeutil import utcnow

bp = Blueprint("segments", __name__, url_prefix="/staff/segments")


def _segment_or_404(segment_id: int) -> Segment:
    segment = segments.get_segment(db.session, segment_id)
    if segment is None:
        abort(404)
    return segment


def _count(definition: object) -> segments.SegmentCount | None:
    try:
        return segments.count(db.session, definition, utcnow())
    except segments.SegmentError:
        return None


@bp.get("/")
@role_required(*ALL_ROLES)
def list_segments() -> str:
    rows = [(s, _count(s.definition)) for s in segments.list_segments(db.session)]
    return render_template(
        "staff/segments.html", rows=rows, can_edit=segments.can_edit(current_user)
    )


def _render(
    builder: BuilderForm,
    segment: Segment | None,
    result: segments.SegmentCount | None = None,
    status: int = 200,
) -> tuple[str, int]:
    return render_template(
        "staff/segments_form.html",
        builder=builder,
        segment=segment,
        result=result,
        parts=PARTS,
        type_choices=TYPE_CHOICES,
        choices=segments.builder_choices(db.session),
        can_edit=segments.can_edit(current_user),
    ), status


def _builder(segment: Segment | None) -> tuple[str, int] | Response:
    """GET shows the builder; POST adds a row, counts, or saves, keeping what was typed."""
    if request.method != "POST":
        if segment is None:
            return _render(BuilderForm(), None)
        return _render(
            from_definition(segment.name, segment.description, segment.definition), segment
        )
    builder = from_post(request.form)
    definition = builder.definition()
    add = request.form.get("add", "")
    if add:
        builder.add_row(add)
        return _render(builder, segment)
    if request.form.get("do") != "save":
        try:
            result = segments.count(db.session, definition, utcnow())
        except segments.SegmentError as exc:
            builder.place_errors(exc.errors)
            return _render(builder, segment, status=422)
        return _render(builder, segment, result)
    if not segments.can_edit(current_user):
        abort(403)
    now = utcnow()
    fields: dict[str, Any] = {
        "name": builder.name,
        "description": builder.description,
        "definition": definition,
        "actor": current_user,
        "now": now,
    }
    try:
        if segment is None:
            segment = segments.create_segment(db.session, **fields)
            message = f"Segment “{segment.name}” saved."
        else:
            changed = segments.update_segment(db.session, segment, **fields)
            message = "Changes saved." if changed else "Nothing had changed."
    except segments.SegmentError as exc:
        db.session.rollback()
        builder.place_errors(exc.errors)
        return _render(builder, None if segment is None else _segment_or_404(segment.id), None, 422)
    db.session.commit()
    flash(message)
    return redirect(url_for(".list_segments"), 303)


@bp.route("/new", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def new_segment() -> tuple[str, int] | Response:
    return _builder(None)


@bp.route("/<int:segment_id>/edit", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def edit_segment(segment_id: int) -> tuple[str, int] | Response:
    return _builder(_segment_or_404(segment_id))


@bp.post("/<int:segment_id>/delete")
@role_required(*segments.SEGMENT_EDITORS)
def delete_segment(segment_id: int) -> Response:
    segment = _segment_or_404(segment_id)
    name = segment.name
    try:
        segments.delete_segment(db.session, segment, actor=current_user, now=utcnow())
    except segments.SegmentError as exc:
        db.session.rollback()
        flash(f"“{name}” was not deleted: {exc}")
        return redirect(url_for(".edit_segment", segment_id=segment_id), 303)
    db.session.commit()
    flash(f"Segment “{name}” deleted.")
    return redirect(url_for(".list_segments"), 303)


@bp.post("/count")
@csrf.exempt  # checked below, so a stale token gets a JSON answer the script can show
@role_required(*ALL_ROLES)
def count_json() -> tuple[Response, int]:
    try:
        validate_csrf(request.form.get("csrf_token", ""))
    except (ValidationError, CSRFError):
        return jsonify(error="This page has expired: reload it to count again."), 400
    builder = from_post(request.form)
    try:
        result = segments.count(db.session, builder.definition(), utcnow())
    except segments.SegmentError as exc:
        builder.place_errors(exc.errors)
        return jsonify(error=str(exc), fields=builder.errors), 400
    return jsonify(matching=result.matching, mailable=result.mailable), 200
