"""Offices' own pages (/t/<token>: stop receiving letters), staff targets, `flask targets`."""

from __future__ import annotations

from pathlib import Path

import click
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import HiddenField

from app.actions import targets as service
from app.actions.models import Target
from app.extensions import csrf, db
from app.staff import service as staff_service
from app.staff.auth import ALL_ROLES, SUPPORTER_EDITORS, role_required
from app.timeutil import utcnow

bp = Blueprint("target_links", __name__)
staff_bp = Blueprint("targets", __name__, url_prefix="/staff/targets", cli_group="targets")

STAFF_LIST_LIMIT = 500


class OfficeChoiceForm(FlaskForm):
    """The office's button: stop letters, or take them again."""

    choice = HiddenField()


class TargetsUploadForm(FlaskForm):
    file = FileField("Targets file (CSV)", validators=[FileRequired("Please choose a CSV file.")])


@bp.after_request
def _private(response: Response) -> Response:
    """The token in the URL must not leak to other sites or a shared cache (same-origin
    Referer only: HTTPS CSRF checking of the stop-letters button needs it)."""
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"
    return response


def _target_or_404(token: str) -> Target:
    target = service.target_for_token(db.session, current_app.config["SECRET_KEY"], token)
    if target is None:
        abort(404)
    return target


@bp.route("/t/<token>", methods=["GET", "POST"])
def office(token: str) -> ResponseReturnValue:
    target = _target_or_404(token)
    form = OfficeChoiceForm()
    error = False
    if request.method == "POST":
        if form.validate_on_submit() and form.choice.data in ("stop", "resume"):
            if form.choice.data == "stop":
                service.opt_out(db.session, target, utcnow())
            else:
                service.opt_back_in(db.session, target)
            db.session.commit()
            return redirect(url_for(".office", token=token, done=form.choice.data), 303)
        error = True
    return render_template(
        "public/target_letters.html",
        target=target,
        token=token,
        form=form,
        error=error,
        done=request.args.get("done", ""),
    ), (400 if error else 200)


@bp.route("/t/<token>/one-click", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients post without cookies or a token
def office_one_click(token: str) -> ResponseReturnValue:
    target = _target_or_404(token)
    if request.method != "POST":  # a link scanner's GET changes nothing
        return render_template("public/target_one_click.html", target=target, token=token)
    if request.form.get("List-Unsubscribe") != "One-Click":
        return make_response(
            render_template("public/target_one_click.html", target=target, token=token, error=True),
            400,
        )
    service.opt_out(db.session, target, utcnow())
    db.session.commit()
    return render_template("public/target_one_click.html", target=target, token=token, done=True)


@staff_bp.route("", methods=["GET", "POST"])
@role_required(*ALL_ROLES)
def targets() -> tuple[str, int]:
    form = TargetsUploadForm()
    report = None
    status = 200
    if request.method == "POST":
        if current_user.role not in SUPPORTER_EDITORS:
            abort(403)
        if form.validate_on_submit():
            report = _import_upload(form.file.data.read())
            status = 200 if report.ok else 422
        else:
            status = 422
    shown, total = service.list_targets(db.session, STAFF_LIST_LIMIT)
    return render_template(
        "staff/targets.html",
        form=form,
        report=report,
        targets=shown,
        total=total,
        can_import=current_user.role in SUPPORTER_EDITORS,
        columns=service.COLUMNS,
    ), status


def _import_upload(data: bytes) -> service.ImportReport:
    """Import an uploaded file and record who did it in the audit log."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return service.ImportReport(
            errors=[service.RowError(1, "The file is not UTF-8 text. Save it as CSV UTF-8.")]
        )
    now = utcnow()
    report = service.import_targets_csv(db.session, text, now)
    staff_service.audit(
        db.session,
        current_user,
        "targets.import",
        "target",
        "",
        now=now,
        created=report.created,
        updated=report.updated,
        errors=len(report.errors),
    )
    db.session.commit()
    return report


@staff_bp.cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def import_command(path: Path) -> None:
    """Create or update officials from a CSV file.

    Columns: name, title, office_email, phone, region, postal_codes.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise click.ClickException("The file is not UTF-8 text.") from None
    now = utcnow()
    report = service.import_targets_csv(db.session, text, now)
    staff_service.audit(
        db.session,
        None,
        "targets.import",
        "target",
        "",
        now=now,
        source="cli",
        created=report.created,
        updated=report.updated,
        errors=len(report.errors),
    )
    db.session.commit()
    click.echo(f"Targets: {report.created} created, {report.updated} updated.")
    for error in report.errors:
        click.echo(f"line {error.line}: {error.message}", err=True)
    if report.errors:
        rows = "1 row" if len(report.errors) == 1 else f"{len(report.errors)} rows"
        click.echo(f"{rows} with errors not imported.", err=True)
        raise click.exceptions.Exit(1)
