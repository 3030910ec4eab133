"""Staff pages: sign-in, dashboard, supporters, outbox, audit log."""

from __future__ import annotations

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
from flask_login import current_user, login_user, logout_user

from app.extensions import db, limiter
from app.integrations.email.outbox import OutboxProvider
from app.staff import service as staff_service
from app.staff.auth import ALL_ROLES, SUPPORTER_EDITORS, role_required
from app.staff.forms import ConfirmForm, LoginForm
from app.staff.models import Role
from app.supporters import service as supporter_service
from app.supporters.models import Supporter
from app.timeutil import utcnow

bp = Blueprint("staff", __name__, url_prefix="/staff")


def _login_rate_limit() -> str:
    return str(current_app.config["LOGIN_RATE_LIMIT"])


def _safe_next(target: str | None) -> str:
    """Only our own staff paths: a login link must not redirect elsewhere."""
    if target and target.startswith("/staff") and not target.startswith("//"):
        return target
    return url_for("staff.dashboard")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_rate_limit, methods=["POST"])
def login() -> Response | str | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("staff.dashboard"))
    form = LoginForm()
    error = ""
    if form.validate_on_submit():
        user = staff_service.authenticate(
            db.session, form.email.data or "", form.password.data or "", utcnow()
        )
        if user is not None:
            db.session.commit()
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
        error = "That email address and password do not match an active staff account."
    elif (
        request.method == "POST"
        and not form.errors.get("email")
        and not form.errors.get("password")
    ):
        error = "This form had expired. Please sign in again."
    form.password.data = ""
    status = 401 if error else (422 if form.errors else 200)
    return render_template("staff/login.html", form=form, error=error), status


@bp.post("/logout")
@role_required(*ALL_ROLES)
def logout() -> Response:
    logout_user()
    flash("You are signed out.")
    return redirect(url_for("staff.login"))


@bp.get("/")
@role_required(*ALL_ROLES)
def dashboard() -> str:
    now = utcnow()
    return render_template(
        "staff/dashboard.html",
        counts=supporter_service.counts(db.session, now),
        daily=supporter_service.daily_signups(db.session, now),
    )


def _page_arg() -> int:
    raw = request.args.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) < 1_000_000 else 1


@bp.get("/supporters")
@role_required(*ALL_ROLES)
def supporters() -> str:
    query = request.args.get("q", "")[:200]
    page = supporter_service.search(db.session, query, _page_arg())
    return render_template(
        "staff/supporters.html",
        page=page,
        query=query,
        now=utcnow(),
        email_state=supporter_service.email_state,
    )


@bp.route("/supporters/<int:supporter_id>", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def supporter(supporter_id: int) -> Response | str:
    person = db.session.get(Supporter, supporter_id)
    if person is None:
        abort(404)
    form = ConfirmForm()
    if request.method == "POST":
        if current_user.role not in SUPPORTER_EDITORS:
            abort(403)
        if form.validate_on_submit():
            now = utcnow()
            if supporter_service.unsubscribe(
                db.session, person, "staff, on the supporter's request", now
            ):
                staff_service.audit(
                    db.session,
                    current_user,
                    "supporter.unsubscribe",
                    "supporter",
                    person.id,
                    now=now,
                )
            db.session.commit()
            flash("Unsubscribed. They will receive no more email.")
        return redirect(url_for("staff.supporter", supporter_id=person.id), 303)
    now = utcnow()
    return render_template(
        "staff/supporter.html",
        person=person,
        form=form,
        state=supporter_service.email_state(person, now),
        can_edit=current_user.role in SUPPORTER_EDITORS,
    )


def _outbox() -> OutboxProvider:
    return OutboxProvider(current_app.config["OUTBOX_DIR"])


@bp.get("/outbox")
@role_required(*ALL_ROLES)
def outbox() -> str:
    return render_template(
        "staff/outbox.html",
        entries=_outbox().entries(),
        provider=current_app.config["EMAIL_PROVIDER"],
    )


@bp.get("/outbox/<name>")
@role_required(*ALL_ROLES)
def outbox_message(name: str) -> str:
    try:
        message = _outbox().read(name)
    except (FileNotFoundError, OSError):
        abort(404)
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    return render_template(
        "staff/outbox_message.html",
        name=name,
        headers=list(message.items()),
        text=text_part.get_content() if text_part else "",
        html=html_part.get_content() if html_part else "",
    )


@bp.get("/privacy")
@role_required(Role.ADMIN)
def privacy() -> str:
    return render_template(
        "staff/privacy.html",
        entries=staff_service.recent_audit(db.session),
        disclosures=staff_service.recent_disclosures(db.session),
    )
