"""`flask --app wsgi …` commands: staff accounts and demo data."""

from __future__ import annotations

import secrets

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from app.extensions import db
from app.staff import service as staff_service
from app.staff.models import Role
from app.timeutil import utcnow

staff_cli = AppGroup("staff", help="Staff accounts.")
demo_cli = AppGroup("demo", help="Demo data for trying Groundswell by hand.")
mailings_cli = AppGroup("mailings", help="Compose and send mailings.")

DEMO_STAFF_EMAIL = "demo-admin@groundswell.example"


@staff_cli.command("create")
@click.argument("email")
@click.option(
    "--role",
    type=click.Choice([r.value for r in Role]),
    default=Role.VIEWER.value,
    show_default=True,
)
@click.option("--password", help="Prompted for (hidden) when not given.")
def create_staff(email: str, role: str, password: str | None) -> None:
    """Create a staff account."""
    if password is None:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = staff_service.create_staff(db.session, email, password, role)
    except staff_service.StaffError as exc:
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(f"Created {user.role} {user.email}")


@staff_cli.command("ensure-demo")
def ensure_demo_staff() -> None:
    """Create a demo admin when there is no staff account yet, printing its password once."""
    if staff_service.staff_count(db.session):
        return
    password = secrets.token_urlsafe(12)
    staff_service.create_staff(db.session, DEMO_STAFF_EMAIL, password, Role.ADMIN.value)
    db.session.commit()
    click.echo("")
    click.echo("  A demo staff login was created (shown only this once):")
    click.echo(f"    email:    {DEMO_STAFF_EMAIL}")
    click.echo(f"    password: {password}")
    click.echo("")


@demo_cli.command("seed")
@click.option(
    "--supporters",
    "count",
    type=click.IntRange(0, 10_000_000),
    default=200,
    show_default=True,
    help="How many demo supporters should exist.",
)
def seed(count: int) -> None:
    """Create demo supporters, one live action page of each kind and a draft mailing
    (idempotent)."""
    from app.actions.demo import seed_action_pages
    from app.mailings.demo import seed_draft_mailing
    from app.supporters.demo import seed_supporters

    now = utcnow()
    created = seed_supporters(db.session, count, now)
    pages_created = seed_action_pages(db.session, now)
    mailings_created = seed_draft_mailing(db.session, current_app.config["BASE_URL"], now)
    db.session.commit()
    click.echo(f"Demo supporters: {created} created, {count} wanted.")
    click.echo(f"Demo action pages: {pages_created} added; one live page of each kind is on /.")
    click.echo(f"Demo mailings: {mailings_created} draft added; see /staff/mailings.")


@mailings_cli.command("create")
@click.option("--subject", required=True, help="The subject line.")
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.File("r", encoding="utf-8"),
    help="A Markdown file with the body ({{ first_name }} is filled in per recipient).",
)
@click.option("--segment", default="", help="A saved segment's name (default: every subscriber).")
@click.option("--throttle", type=click.IntRange(1), default=None, help="Messages per hour.")
@click.option(
    "--format",
    "body_format",
    type=click.Choice(["markdown", "html"]),
    default="markdown",
    show_default=True,
    help="How the body file is written.",
)
def create_mailing(
    subject: str,
    body_file: click.utils.LazyFile,
    segment: str,
    throttle: int | None,
    body_format: str,
) -> None:
    """Create a draft mailing and print its id."""
    from app.mailings import campaigns

    segment_id = None
    if segment:
        found = campaigns.segment_by_name(db.session, segment)
        if found is None:
            raise click.ClickException(f"no saved segment is called {segment!r}")
        segment_id = found.id
    data = campaigns.DraftData(
        subject=subject,
        body_md=body_file.read(),
        body_format=body_format,
        segment_id=segment_id,
        throttle_per_hour=throttle,
    )
    try:
        mailing = campaigns.save_draft(db.session, None, data, None, utcnow())
    except (campaigns.CampaignInvalid, campaigns.CampaignError) as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    click.echo(mailing.id)


def _mailing_or_fail(mailing_id: int):  # type: ignore[no-untyped-def]
    from app.mailings.models import Mailing

    mailing = db.session.get(Mailing, mailing_id)
    if mailing is None:
        raise click.ClickException(f"no mailing {mailing_id}")
    return mailing


@mailings_cli.command("send")
@click.argument("mailing_id", type=int)
def send_mailing(mailing_id: int) -> None:
    """Queue a mailing to every recipient it has not reached yet; print how many."""
    from app.mailings import campaigns

    mailing = _mailing_or_fail(mailing_id)
    try:
        started = campaigns.send_now_inline(db.session, mailing, None, utcnow())
    except campaigns.CampaignError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    started.after.run()
    click.echo(
        f"Mailing {mailing_id}: {started.added} recipients added, {started.queued} queued "
        f"in {campaigns.chunks_for(started.queued)} chunks."
    )


@mailings_cli.command("control")
@click.argument("action", type=click.Choice(["pause", "resume", "cancel"]))
@click.argument("mailing_id", type=int)
def control_mailing(action: str, mailing_id: int) -> None:
    """Pause, resume or cancel a mailing that is sending."""
    from app.mailings import campaigns

    mailing = _mailing_or_fail(mailing_id)
    now = utcnow()
    try:
        if action == "pause":
            campaigns.pause(db.session, mailing, None, now)
            message = f"Mailing {mailing_id} paused."
            after = campaigns.AfterCommit()
        elif action == "resume":
            queued, after = campaigns.resume(db.session, mailing, None, now)
            message = f"Mailing {mailing_id} resumed: {queued} still queued."
        else:
            cancelled = campaigns.cancel(db.session, mailing, None, now)
            message = f"Mailing {mailing_id} cancelled: {cancelled} deliveries will not be sent."
            after = campaigns.AfterCommit()
    except campaigns.CampaignError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from None
    db.session.commit()
    after.run()
    click.echo(message)


def register_cli(app: Flask) -> None:
    app.cli.add_command(staff_cli)
    app.cli.add_command(demo_cli)
    app.cli.add_command(mailings_cli)
