"""Demo data for mailings: one draft action alert, linking to the demo petition."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.mailings import pipeline
from app.mailings.models import Mailing

DEMO_SUBJECT = "Demo: warning signs come early. Will you act today?"
DEMO_BODY = """Dear {{ first_name | default("friend") }},

Warning signs of mass atrocities come early: hate speech, arms build-ups, attacks on
journalists. Governments that act on them early save lives.

**[Add your name to the petition](BASE/a/make-prevention-a-priority)** asking our
government to make atrocity prevention a standing priority.

Then [call your representative](BASE/a/call-in-day): it takes two minutes
and the script is on the page.

Thank you for standing with us.
"""


def seed_draft_mailing(session: Session, base_url: str, now: datetime) -> int:
    """Add the demo draft mailing unless it exists; return how many were added (0 or 1)."""
    if session.scalar(select(Mailing.id).where(Mailing.subject == DEMO_SUBJECT)) is not None:
        return 0
    pipeline.create_mailing(
        session,
        subject=DEMO_SUBJECT,
        body_md=DEMO_BODY.replace("BASE", base_url),
        preheader="Two minutes, two actions, and warning signs get acted on.",
        now=now,
    )
    return 1
