"""`flask --app wsgi …` commands: staff accounts and demo data."""

from __future__ import annotations

import secrets

import click
from flask import Flask
from flask.cli import AppGroup

from app.extensions import db
from app.staff import service as staff_service
from app.staff.models import Role
from app.timeutil import utcnow

staff_cli = AppGroup("staff", help="Staff accounts.")
demo_cli = AppGroup("demo", help="Demo data for trying Groundswell by hand.")

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
    """Create demo supporters and one live action page of each kind (idempotent)."""
    from app.actions.demo import seed_action_pages
    from app.supporters.demo import seed_supporters

    now = utcnow()
    created = seed_supporters(db.session, count, now)
    pages_created = seed_action_pages(db.session, now)
    db.session.commit()
    click.echo(f"Demo supporters: {created} created, {count} wanted.")
    click.echo(f"Demo action pages: {pages_created} added; one live page of each kind is on /.")


def register_cli(app: Flask) -> None:
    app.cli.add_command(staff_cli)
    app.cli.add_command(demo_cli)
