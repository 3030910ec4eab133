"""Staff page builder under /staff/pages: list, create, edit, publish, close, preview, report."""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from app.actions import events, pages, reports, service
from app.actions.models import ActionPage, EventRsvp, PageKind, PageStatus
from app.actions.staff_forms import PageForm, add_errors, choices, initial_data, page_data
from app.actions.tasks import enqueue_rsvp_email
from app.actions.views import blank_form, page_context
from app.extensions import db
from app.staff.auth import ALL_ROLES, role_required
from app.staff.forms import ConfirmForm
from app.timeutil import utcnow

bp = Blueprint("staff_pages", __name__, url_prefix="/staff/pages")

# Builder forms carry a share image of up to 2 MB plus the text fields. The app-wide
# request limit is 2 MB, which would turn a large image into an error page that loses
# the form; signed-in staff get room for the image so it can be refused with a message.
BUILDER_REQUEST_LIMIT = 6 * 1024 * 1024
BUILDER_ENDPOINTS = {"staff_pages.new_page", "staff_pages.edit_page"}


@bp.url_value_preprocessor
def _room_for_uploads(endpoint: str | None, values: dict[str, Any] | None) -> None:
    # URL value preprocessors run before every before_request function, so this is in
    # place before CSRFProtect reads (and size-checks) the form body.
    if endpoint in BUILDER_ENDPOINTS and current_user.is_authenticated:
        request.max_content_length = BUILDER_REQUEST_LIMIT


def _page_or_404(page_id: int) -> ActionPage:
    page = db.session.get(ActionPage, page_id)
    if page is None:
        abort(404)
    return page


def _uploads() -> str:
    return service.uploads_dir(current_app.instance_path)


@bp.get("")
@role_required(*ALL_ROLES)
def list_pages() -> str:
    return render_template(
        "staff/pages.html",
        rows=pages.list_pages(db.session, utcnow()),
        can_edit=pages.can_edit(current_user),
    )


def _form_for(page: ActionPage | None) -> PageForm:
    form = PageForm() if request.method == "POST" else PageForm(data=initial_data(page))
    form.next_page_id.choices = choices([("", "None"), *pages.next_step_choices(db.session, page)])
    form.target_ids.choices = choices(pages.target_choices(db.session))
    return form


def _share_image(form: PageForm) -> str | None:
    """Store a new upload (kept in a hidden field if the rest of the form needs fixing).

    Returns the image name to use, "" to remove the image, or None to keep the current one.
    """
    upload = form.share_image.data
    if upload is not None and upload.filename:
        try:
            name = pages.store_image(_uploads(), upload.stream.read(pages.MAX_IMAGE_BYTES + 1))
        except pages.PageInvalid as exc:
            form.share_image.errors = [exc.errors["share_image"]]
            return None
        form.uploaded_image.data = name
        return name
    kept = form.uploaded_image.data or ""
    if kept and pages.is_stored_image(_uploads(), kept):
        return kept
    form.uploaded_image.data = ""
    return "" if form.remove_image.data else None


def _render_form(form: PageForm, page: ActionPage | None, status: int = 200) -> tuple[str, int]:
    return render_template(
        "staff/pages_form.html",
        form=form,
        page=page,
        can_publish=pages.can_publish(current_user),
        embed_url=current_app.config["BASE_URL"] + url_for("actions.embed", slug=page.slug)
        if page is not None and page.status != PageStatus.DRAFT
        else "",
    ), status


def _save(page: ActionPage | None) -> Response | tuple[str, int]:
    """Parse the builder form, call the service, and render again with messages if needed."""
    form = _form_for(page)
    if request.method != "POST":
        return _render_form(form, page)
    now = utcnow()
    form_ok = form.validate()
    data = page_data(form, _share_image(form))
    if not form_ok or form.share_image.errors:
        add_errors(form, pages.validate(db.session, data, page, now))
        return _render_form(form, page, 422)
    promoted: list[EventRsvp] = []
    try:
        if page is None:
            page = pages.create_page(db.session, data, current_user, now)
            message = f"Page “{page.title}” created."
        else:
            changed = pages.update_page(db.session, page, data, current_user, now)
            message = "Changes saved." if changed else "Nothing had changed."
            # A raised capacity moves people up from the waitlist at once.
            if page.kind == PageKind.EVENT:
                promoted = events.fill_free_places(db.session, page, now)
    except pages.NotAllowed:
        db.session.rollback()
        abort(403)
    except pages.PageInvalid as exc:
        db.session.rollback()
        add_errors(form, exc.errors)
        return _render_form(form, None if page is None else _page_or_404(page.id), 422)
    db.session.commit()
    for rsvp in promoted:
        enqueue_rsvp_email(rsvp.id, "promoted")
    flash(message)
    return redirect(url_for(".edit_page", page_id=page.id), 303)


@bp.route("/new", methods=["GET", "POST"])
@role_required(*pages.PAGE_EDITORS)
def new_page() -> Response | tuple[str, int]:
    return _save(None)


@bp.route("/<int:page_id>", methods=["GET", "POST"])
@role_required(*pages.PAGE_EDITORS)
def edit_page(page_id: int) -> Response | tuple[str, int]:
    return _save(_page_or_404(page_id))


@bp.post("/<int:page_id>/publish")
@role_required(*pages.PAGE_PUBLISHERS)
def publish_page(page_id: int) -> Response:
    page = _page_or_404(page_id)
    if not ConfirmForm().validate_on_submit():
        flash("That form had expired. Please try again.")
        return redirect(url_for(".edit_page", page_id=page.id), 303)
    try:
        pages.publish(db.session, page, current_user, utcnow())
    except pages.NotAllowed:
        db.session.rollback()
        abort(403)
    except pages.PageInvalid as exc:
        db.session.rollback()
        flash("This page can't go live yet: " + " ".join(exc.errors.values()))
        return redirect(url_for(".edit_page", page_id=page_id), 303)
    db.session.commit()
    flash(f"“{page.title}” is live at /a/{page.slug}.")
    return redirect(url_for(".edit_page", page_id=page.id), 303)


@bp.post("/<int:page_id>/close")
@role_required(*pages.PAGE_EDITORS)
def close_page(page_id: int) -> Response:
    page = _page_or_404(page_id)
    if not ConfirmForm().validate_on_submit():
        flash("That form had expired. Please try again.")
        return redirect(url_for(".edit_page", page_id=page.id), 303)
    try:
        pages.close(db.session, page, current_user, utcnow())
    except pages.NotAllowed:
        db.session.rollback()
        abort(403)
    db.session.commit()
    flash(f"“{page.title}” is closed: visitors now see its next step.")
    return redirect(url_for(".edit_page", page_id=page.id), 303)


@bp.get("/<int:page_id>/preview")
@role_required(*ALL_ROLES)
def preview_page(page_id: int) -> str:
    """The public page as visitors would see it, drafts included, with its form switched off."""
    page = _page_or_404(page_id)
    return render_template(
        "staff/pages_preview.html",
        form=blank_form(page),
        via="",
        open_now=service.is_open(page, utcnow()),
        **page_context(page),
    )


@bp.get("/<int:page_id>/report")
@role_required(*ALL_ROLES)
def page_report(page_id: int) -> str:
    page = _page_or_404(page_id)
    return render_template(
        "staff/page_report.html",
        page=page,
        report=reports.page_report(db.session, page, utcnow()),
    )
