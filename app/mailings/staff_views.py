"""/staff/mailings: compose, preview, test, check, schedule, send and watch a mailing.

Views parse forms, call app/mailings/campaigns.py (and checks.py), commit, then run
what the service asks to run after the commit (queuing Celery tasks).
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user

from app.extensions import db
from app.integrations.email import EmailProviderError, provider_from_config
from app.mailings import campaigns, checks
from app.mailings.forms import (
    MailingForm,
    PreviewSearchForm,
    ScheduleForm,
    SendForm,
    SendTestForm,
    choices,
    initial_data,
)
from app.mailings.models import Mailing
from app.mailings.service import SenderIdentity
from app.staff.auth import ALL_ROLES, role_required
from app.staff.forms import ConfirmForm
from app.supporters.models import Supporter
from app.timeutil import utcnow

bp = Blueprint("mailings", __name__, url_prefix="/staff/mailings")

# The email preview is staff-written HTML shown on its own: no script, no network, no
# forms, in a sandbox; only our own pages may frame it.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox"
)


def _identity() -> SenderIdentity:
    return SenderIdentity.from_config(current_app.config)


def _mailing_or_404(mailing_id: int) -> Mailing:
    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        abort(404)
    return mailing


def _back(mailing: Mailing) -> Response:
    return redirect(url_for(".edit_mailing", mailing_id=mailing.id), 303)


def _add_errors(form: Any, errors: dict[str, str]) -> None:
    """Put the service's messages beside their fields (a form's own error wins)."""
    for name, message in errors.items():
        field = getattr(form, name, None)
        if field is not None and not field.errors:
            field.errors = [message]


def _mailing_form(mailing: Mailing | None, posted: bool = False) -> MailingForm:
    """The composer, from what was posted or from the saved mailing."""
    form = MailingForm() if posted else MailingForm(formdata=None, data=initial_data(mailing))
    form.segment_id.choices = choices(
        [("", "All subscribers"), *campaigns.segment_choices(db.session)]
    )
    return form


def _test_form(form: SendTestForm | None = None) -> SendTestForm:
    form = form or SendTestForm(formdata=None, data={"addresses": [current_user.email]})
    form.addresses.choices = choices((a, a) for a in campaigns.staff_addresses(db.session))
    return form


def _render(
    mailing: Mailing | None,
    form: MailingForm | None = None,
    status: int = 200,
    **extra: Any,
) -> tuple[str, int]:
    form = form or _mailing_form(mailing)
    chosen = form.draft_data().segment_id
    context: dict[str, Any] = {
        "mailing": mailing,
        "form": form,
        "can_send": campaigns.can_send(current_user),
        "audience": dict(
            (c.value, c.label)
            for c in form.segment_id.choices  # type: ignore[union-attr]
        ).get(str(chosen or ""), "All subscribers"),
        "audience_count": campaigns.mailable_count(db.session, chosen, utcnow()),
        "now_utc": f"{utcnow():%Y-%m-%d %H:%M}",
    }
    if mailing is not None:
        context.update(
            editable=mailing.status in campaigns.pipeline.EDITABLE,
            progress=campaigns.progress(db.session, mailing),
            test_form=extra.pop("test_form", None) or _test_form(),
            schedule_form=extra.pop("schedule_form", None) or ScheduleForm(formdata=None),
            confirm_form=ConfirmForm(formdata=None),
            segment_name=_segment_name(mailing),
        )
    context.update(extra)
    return render_template("staff/mailings_edit.html", **context), status


def _segment_name(mailing: Mailing) -> str:
    if mailing.segment_id is None:
        return "All subscribers"
    return dict(campaigns.segment_choices(db.session)).get(
        mailing.segment_id, str(mailing.segment.get("name", "a deleted segment"))
    )


@bp.get("")
@role_required(*ALL_ROLES)
def list_mailings() -> str:
    return render_template(
        "staff/mailings.html",
        rows=campaigns.list_mailings(db.session),
        can_send=campaigns.can_send(current_user),
    )


def _save(mailing: Mailing | None) -> Response | tuple[str, int]:
    form = _mailing_form(mailing, posted=request.method == "POST")
    if request.method != "POST":
        return _render(mailing, form)
    if not form.validate():
        _add_errors(form, campaigns.validate_draft(db.session, form.draft_data()))
        return _render(mailing, form, 422)
    try:
        saved = campaigns.save_draft(db.session, mailing, form.draft_data(), current_user, utcnow())
    except campaigns.CampaignInvalid as exc:
        db.session.rollback()
        _add_errors(form, exc.errors)
        return _render(mailing and _mailing_or_404(mailing.id), form, 422)
    except campaigns.CampaignError as exc:
        db.session.rollback()
        flash(str(exc))
        return _back(_mailing_or_404(mailing.id)) if mailing else _render(None, form, 422)
    db.session.commit()
    flash("Mailing saved as a draft." if mailing is None else "Changes saved.")
    return _back(saved)


@bp.route("/new", methods=["GET", "POST"])
@role_required(*campaigns.SENDER_ROLES)
def new_mailing() -> Response | tuple[str, int]:
    return _save(None)


@bp.route("/<int:mailing_id>", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def edit_mailing(mailing_id: int) -> Response | tuple[str, int]:
    mailing = _mailing_or_404(mailing_id)
    if request.method == "POST" and not campaigns.can_send(current_user):
        abort(403)
    return _save(mailing)


# --- preview --------------------------------------------------------------------------


def _preview_supporter(mailing: Mailing) -> Supporter | None:
    raw = request.args.get("supporter", "")
    if raw.isdigit():
        return db.session.get(Supporter, int(raw))
    return campaigns.first_subscriber(db.session)


@bp.route("/<int:mailing_id>/preview", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def preview(mailing_id: int) -> Response | tuple[str, int]:
    """The email as one supporter would get it. A search by email is a POST, so that
    addresses never land in URLs (and logs); it redirects to the supporter's id."""
    mailing = _mailing_or_404(mailing_id)
    search = PreviewSearchForm()
    status = 200
    if request.method == "POST" and search.validate():
        found = campaigns.find_supporter(db.session, search.email.data or "")
        if found is not None:
            url = url_for(".preview", mailing_id=mailing.id, supporter=found.id)
            return redirect(url, 303)
        search.email.errors = ["No supporter has that email address."]
        status = 422
    supporter = _preview_supporter(mailing)
    variant = "b" if request.args.get("variant") == "b" and mailing.subject_b else "a"
    try:
        rendered = campaigns.preview(mailing, _identity(), supporter, utcnow(), variant)
    except campaigns.CampaignError as exc:
        rendered, problem = None, str(exc)
    else:
        problem = ""
    return render_template(
        "staff/mailings_preview.html",
        mailing=mailing,
        search=search,
        supporter=supporter,
        rendered=rendered,
        problem=problem,
        variant=variant,
    ), status


@bp.get("/<int:mailing_id>/preview.html")
@role_required(*ALL_ROLES)
def preview_html(mailing_id: int) -> Response:
    """Only the email's HTML, under its own strict CSP, for the preview's sandboxed iframe."""
    mailing = _mailing_or_404(mailing_id)
    variant = "b" if request.args.get("variant") == "b" and mailing.subject_b else "a"
    try:
        rendered = campaigns.preview(
            mailing, _identity(), _preview_supporter(mailing), utcnow(), variant
        )
        body = rendered.html
    except campaigns.CampaignError:  # the preview page itself says why
        body = "<!doctype html><title>Preview</title><p>The email cannot be shown.</p>"
    response = make_response(body)
    response.headers["Content-Type"] = "text/html; charset=utf-8"
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    return response


# --- test send and checks -------------------------------------------------------------


@bp.post("/<int:mailing_id>/test")
@role_required(*campaigns.SENDER_ROLES)
def send_test(mailing_id: int) -> Response | tuple[str, int]:
    mailing = _mailing_or_404(mailing_id)
    form = _test_form(SendTestForm())
    if not form.validate():
        return _render(mailing, test_form=form, status=422)
    config = current_app.config
    try:
        sent = campaigns.send_test(
            db.session,
            provider_from_config(config),
            _identity(),
            mailing,
            current_user,
            list(form.addresses.data or []),
            utcnow(),
        )
    except campaigns.CampaignInvalid as exc:
        db.session.rollback()
        _add_errors(form, exc.errors)
        return _render(mailing, test_form=form, status=422)
    except (campaigns.CampaignError, EmailProviderError) as exc:
        db.session.rollback()
        flash(f"The test was not sent: {exc}")
        return _back(mailing)
    db.session.commit()
    flash(f"Test sent: {sent} message{'s' if sent != 1 else ''} to staff.")
    return _back(mailing)


def _run_checks(mailing: Mailing) -> list[checks.Finding]:
    return checks.run_checks(
        db.session,
        mailing,
        _identity(),
        utcnow(),
        external_links=bool(current_app.config.get("MAILING_CHECK_EXTERNAL_LINKS", True)),
    )


@bp.get("/<int:mailing_id>/checks")
@role_required(*ALL_ROLES)
def run_checks(mailing_id: int) -> str:
    mailing = _mailing_or_404(mailing_id)
    return render_template(
        "staff/mailings_checks.html",
        mailing=mailing,
        findings=_run_checks(mailing),
        can_send=campaigns.can_send(current_user),
    )


# --- send, schedule, control ----------------------------------------------------------


@bp.route("/<int:mailing_id>/send", methods=["GET", "POST"])
@role_required(*campaigns.SENDER_ROLES)
def send(mailing_id: int) -> Response | tuple[str, int]:
    """A confirm step that states how many will get it and shows the checks; then Send."""
    mailing = _mailing_or_404(mailing_id)
    if mailing.status not in campaigns.pipeline.EDITABLE:
        flash(f"This mailing is {mailing.status}: it was sent already.")
        return _back(mailing)
    form = SendForm()
    findings = _run_checks(mailing)
    status = 200
    if request.method == "POST" and form.validate():
        try:
            after = campaigns.send_now(
                db.session,
                mailing,
                current_user,
                _identity(),
                utcnow(),
                findings=findings,
                warnings_read=bool(form.warnings_read.data),
            )
        except campaigns.CampaignError as exc:
            db.session.rollback()
            mailing = _mailing_or_404(mailing_id)
            form.warnings_read.errors = [str(exc)]
            status = 422
        else:
            db.session.commit()
            after.run()
            flash("Sending has started.")
            return _back(mailing)
    return render_template(
        "staff/mailings_send.html",
        mailing=mailing,
        form=form,
        findings=findings,
        count=campaigns.mailable_count(db.session, mailing.segment_id, utcnow()),
        segment_name=_segment_name(mailing),
    ), status


@bp.post("/<int:mailing_id>/schedule")
@role_required(*campaigns.SENDER_ROLES)
def schedule(mailing_id: int) -> Response | tuple[str, int]:
    mailing = _mailing_or_404(mailing_id)
    form = ScheduleForm()
    if not form.validate():
        return _render(mailing, schedule_form=form, status=422)
    try:
        campaigns.schedule(
            db.session, mailing, current_user, _identity(), form.send_at.data, utcnow()
        )
    except campaigns.CampaignInvalid as exc:
        db.session.rollback()
        _add_errors(form, exc.errors)
        return _render(_mailing_or_404(mailing_id), schedule_form=form, status=422)
    except campaigns.CampaignError as exc:
        db.session.rollback()
        flash(str(exc))
        return _back(mailing)
    db.session.commit()
    flash(f"Scheduled for {mailing.send_at:%Y-%m-%d %H:%M} UTC.")
    return _back(mailing)


def _control(mailing_id: int, action: str) -> Response:
    mailing = _mailing_or_404(mailing_id)
    if not ConfirmForm().validate_on_submit():
        flash("That form had expired. Please try again.")
        return _back(mailing)
    now = utcnow()
    after = campaigns.AfterCommit()
    try:
        if action == "unschedule":
            campaigns.unschedule(db.session, mailing, current_user, now)
            message = "No longer scheduled: the mailing is a draft again."
        elif action == "pause":
            campaigns.pause(db.session, mailing, current_user, now)
            message = "Paused. Nothing more is sent until you resume."
        elif action == "resume":
            queued, after = campaigns.resume(db.session, mailing, current_user, now)
            message = f"Resumed: {queued:,} still to send."
        else:
            cancelled = campaigns.cancel(db.session, mailing, current_user, now)
            message = f"Cancelled: {cancelled:,} messages will not be sent."
    except campaigns.CampaignError as exc:
        db.session.rollback()
        flash(str(exc))
        return _back(mailing)
    db.session.commit()
    after.run()
    flash(message)
    return _back(mailing)


@bp.post("/<int:mailing_id>/unschedule")
@role_required(*campaigns.SENDER_ROLES)
def unschedule(mailing_id: int) -> Response:
    return _control(mailing_id, "unschedule")


@bp.post("/<int:mailing_id>/pause")
@role_required(*campaigns.SENDER_ROLES)
def pause(mailing_id: int) -> Response:
    return _control(mailing_id, "pause")


@bp.post("/<int:mailing_id>/resume")
@role_required(*campaigns.SENDER_ROLES)
def resume(mailing_id: int) -> Response:
    return _control(mailing_id, "resume")


@bp.route("/<int:mailing_id>/cancel", methods=["GET", "POST"])
@role_required(*campaigns.SENDER_ROLES)
def cancel(mailing_id: int) -> Response | str:
    if request.method == "POST":
        return _control(mailing_id, "cancel")
    mailing = _mailing_or_404(mailing_id)
    return render_template(
        "staff/mailings_cancel.html",
        mailing=mailing,
        progress=campaigns.progress(db.session, mailing),
        confirm_form=ConfirmForm(formdata=None),
    )


@bp.get("/<int:mailing_id>/progress")
@role_required(*ALL_ROLES)
def progress(mailing_id: int) -> Response:
    mailing = _mailing_or_404(mailing_id)
    return jsonify(campaigns.progress(db.session, mailing).as_dict())
