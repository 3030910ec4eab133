"""Demo action pages, one live page of each kind, for trying Groundswell by hand.

The officials are invented: .example addresses and 555 telephone numbers only.
Seeding is idempotent: pages are found by slug and targets by office email.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.actions.models import ActionPage, PageKind, PageStatus, Target

OPT_IN_TEXT = (
    "Email me when there is something I can do to help prevent atrocities. "
    "I can unsubscribe at any time."
)


@dataclass(frozen=True)
class DemoTarget:
    name: str
    title: str
    office_email: str
    phone: str
    region: str


TARGETS = {
    "rivera": DemoTarget(
        "Senator Alex Rivera (demo)",
        "Member, Senate Foreign Relations Committee",
        "letters@rivera.senate.example",
        "+1 202 555 0141",
        "ST",
    ),
    "okoye": DemoTarget(
        "Representative Dana Okoye (demo)",
        "Member, House Appropriations Subcommittee",
        "mail@okoye.house.example",
        "+1 202 555 0162",
        "ST",
    ),
    "chair": DemoTarget(
        "Committee Chair Morgan Hale (demo)",
        "Chair, Subcommittee on Human Rights",
        "office@hale.house.example",
        "+1 202 555 0187",
        "ST",
    ),
}

PETITION_BODY = """\
Genocide and mass atrocities do not come out of nowhere. Long before the killing starts
there are signs: hateful propaganda on the radio, lists of names, militias being armed,
journalists disappearing. Too often those signs are seen, written down and then ignored.

We are asking our government to make prevention a standing commitment rather than an
afterthought:

- **Fund the people who watch for warning signs**, with analysts who can raise the alarm early.
- **Agree in advance who acts and how**, so a warning leads to a decision within days, not months.
- **Report to the public every year** on where risks are rising and what was done about them.

Prevention is cheaper, faster and more humane than any response after the fact.
Add your name.
"""

LETTER_BODY = """\
Dear representative,

I am writing as your constituent to ask you to support steady, multi-year funding for
atrocity prevention, and to press for early action whenever analysts warn that civilians
are at risk of mass violence.

History shows that the window for preventing mass killing is open for months, sometimes
years, before the violence begins. Diplomatic pressure, support for local peacebuilders
and targeted measures against those planning violence work best early, and cost a
fraction of what a crisis response does.

Please tell me what you will do to make sure warnings lead to action.

Sincerely,
"""

CALL_SCRIPT = """\
**Hello, my name is [your name] and I live in [your town].**

I'm calling to ask the Representative to support the atrocity prevention funding in this
year's budget. Early warning only saves lives when someone acts on it, and that takes
trained people and a clear plan.

Can you tell me where the Representative stands?

*Thank them for their time, and let us know below how the call went.*
"""

EVENT_BODY = """\
An evening with practitioners who work on preventing mass violence: an early-warning
analyst, a community peacebuilder and a former diplomat. They will talk about what
warning signs look like, why they are so often missed, and what ordinary people can do
to make sure our representatives act in time.

There will be time for questions, and a short session on writing to your officials.
The room is step-free, and the talk is also streamed online.
"""

SIGNUP_BODY = """\
When warning signs appear, the days that follow matter most. Our rapid-response network
is a list of people ready to act within a day of an alert: a call, a letter, a signature.

We will only email you when there is something specific you can do, and you can pause or
leave at any time.
"""


def _target(session: Session, spec: DemoTarget, now: datetime) -> Target:
    target = session.scalar(select(Target).where(Target.office_email == spec.office_email))
    if target is None:
        target = Target(
            name=spec.name,
            title=spec.title,
            office_email=spec.office_email,
            phone=spec.phone,
            region=spec.region,
            postal_codes="",
            created_at=now,
        )
        session.add(target)
        session.flush()
    return target


def _page_specs(now: datetime) -> list[dict[str, Any]]:
    event_day = (now + timedelta(days=30)).strftime("%Y-%m-%d")
    return [
        {
            "kind": PageKind.PETITION,
            "slug": "make-prevention-a-priority",
            "title": "Make atrocity prevention a standing priority",
            "body_md": PETITION_BODY,
            "goal": 10_000,
            "share_text": "Warning signs of mass atrocities come early. "
            "I signed to make sure our government acts on them. Will you?",
            "hashtag": "PreventAtrocities",
            "thank_you_md": "Thank you for adding your name. Every signature shows "
            "officials that people are paying attention.",
        },
        {
            "kind": PageKind.LETTER,
            "slug": "write-fund-prevention",
            "title": "Write to your representatives: fund prevention",
            "body_md": "Officials read letters from constituents. Use ours, or better, "
            "put it in your own words: a personal letter counts for more.",
            "share_text": "I just wrote to my representatives asking them to fund "
            "atrocity prevention. It takes two minutes.",
            "hashtag": "PreventAtrocities",
            "settings": {
                "letter_subject": "Please fund atrocity prevention this year",
                "letter_body": LETTER_BODY.strip(),
                "letter_editable": "body",
                "letter_max_length": 5000,
                "letter_delivery": "each",
                "target_mode": "fixed",
            },
            "targets": ("rivera", "okoye"),
        },
        {
            "kind": PageKind.CALL,
            "slug": "call-in-day",
            "title": "Call-in day: ask for a prevention budget line",
            "body_md": "A phone call takes three minutes and is counted by the office the "
            "same day. Use the script, then tell us how it went.",
            "share_text": "I called my representative's office to ask for atrocity "
            "prevention funding. Join the call-in day.",
            "hashtag": "PreventAtrocities",
            "settings": {"call_script": CALL_SCRIPT},
            "targets": ("chair",),
        },
        {
            "kind": PageKind.EVENT,
            "slug": "symposium-warning-to-action",
            "title": "Symposium: from early warning to early action",
            "body_md": EVENT_BODY,
            "share_text": "Join me at a symposium on preventing mass atrocities: "
            "from early warning to early action.",
            "settings": {
                "starts_at": f"{event_day}T18:30",
                "ends_at": f"{event_day}T20:30",
                "timezone": "America/New_York",
                "venue": "Springfield Public Library, Community Room, 12 Main Street",
                "online_url": "https://stream.groundswell.example/symposium",
                "capacity": 50,
            },
        },
        {
            "kind": PageKind.SIGNUP,
            "slug": "rapid-response-network",
            "title": "Join the rapid-response network",
            "body_md": SIGNUP_BODY,
            "share_text": "I joined a rapid-response network that acts within a day "
            "when warning signs of mass atrocities appear.",
        },
    ]


def seed_action_pages(session: Session, now: datetime) -> int:
    """Make sure one live demo page of each kind exists; returns how many were created."""
    targets = {key: _target(session, spec, now) for key, spec in TARGETS.items()}
    created = 0
    chain: list[ActionPage] = []
    for spec in _page_specs(now):
        page = session.scalar(select(ActionPage).where(ActionPage.slug == spec["slug"]))
        if page is None:
            page = ActionPage(
                kind=spec["kind"],
                slug=spec["slug"],
                title=spec["title"],
                body_md=spec["body_md"],
                goal=spec.get("goal"),
                status=PageStatus.LIVE,
                thank_you_md=spec.get("thank_you_md", ""),
                share_text=spec.get("share_text", ""),
                hashtag=spec.get("hashtag", ""),
                opt_in_default=False,
                opt_in_text=OPT_IN_TEXT,
                settings=dict(spec.get("settings", {})),
                created_at=now,
                updated_at=now,
                published_at=now,
            )
            page.targets = [targets[key] for key in spec.get("targets", ())]
            session.add(page)
            session.flush()
            created += 1
        chain.append(page)
    # Each page offers the next as its follow-up step; the last points back to the first.
    for page, following in zip(chain, chain[1:] + chain[:1], strict=True):
        if page.next_page_id is None:
            page.next_page_id = following.id
    session.flush()
    return created
