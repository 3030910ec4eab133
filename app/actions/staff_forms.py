"""The staff page builder's form: parses types; the rules live in app/actions/pages.py."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    HiddenField,
    IntegerField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    URLField,
)
from wtforms.validators import Length, NumberRange, Optional, Regexp

from app.actions import pages
from app.actions.models import ActionPage, PageKind, PageStatus

LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
WHOLE_NUMBER = "Please enter a whole number, such as 500."
DATE_TIME = "Please enter a date and a time."

KIND_LABELS = {
    PageKind.PETITION: "Petition",
    PageKind.LETTER: "Letter to officials",
    PageKind.CALL: "Call-in",
    PageKind.EVENT: "Event",
    PageKind.SIGNUP: "Sign-up",
}
STATUS_LABELS = {
    PageStatus.DRAFT: "Draft (only staff can see it)",
    PageStatus.LIVE: "Live",
    PageStatus.CLOSED: "Closed",
}


def choices(pairs: object) -> list[SelectChoice]:
    """(value, label) pairs as WTForms select choices."""
    return [SelectChoice(str(value), label) for value, label in pairs]  # type: ignore[attr-defined]


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _number(label: str, minimum: int = 1) -> IntegerField:
    return IntegerField(
        label,
        validators=[
            Optional(),
            NumberRange(min=minimum, message=f"Please enter a whole number of {minimum} or more."),
        ],
        invalid_value_message=WHOLE_NUMBER,
    )


def _when(label: str) -> DateTimeLocalField:
    return DateTimeLocalField(
        label, format=LOCAL_FORMATS, validators=[Optional()], invalid_value_message=DATE_TIME
    )


class PageForm(FlaskForm):
    """Every field of every kind; the template shows the kind-specific ones in their own parts."""

    kind = SelectField("Kind of page", choices=choices(KIND_LABELS.items()))
    title = StringField("Title", filters=[_strip], validators=[Length(max=200)])
    slug = StringField("Address (slug)", filters=[_strip], validators=[Length(max=pages.MAX_SLUG)])
    body_md = TextAreaField("Page text (Markdown)", validators=[Length(max=50_000)])
    share_image = FileField("Share image (PNG, JPEG, WebP or GIF, up to 2 MB)")
    uploaded_image = HiddenField()
    remove_image = BooleanField("Remove the current image")
    share_image_alt = StringField(
        "Image description (alt text)", filters=[_strip], validators=[Length(max=300)]
    )
    goal = _number("Goal (optional)")
    status = SelectField("Status", choices=choices(STATUS_LABELS.items()))
    close_at = _when("Close date (optional, UTC)")
    thank_you_md = TextAreaField("Thank-you message (Markdown)", validators=[Length(max=20_000)])
    next_page_id = SelectField("Next step", choices=choices([("", "None")]), validate_choice=False)
    share_text = TextAreaField("Share text", filters=[_strip], validators=[Length(max=280)])
    hashtag = StringField(
        "Hashtag",
        filters=[_strip],
        validators=[
            Length(max=100),
            Regexp(
                r"^(#?[\w]+)?$",
                message="A hashtag is one word of letters, digits or underscores.",
            ),
        ],
    )
    opt_in_default = BooleanField("Tick the email opt-in box by default")
    opt_in_text = TextAreaField(
        "Email opt-in text shown to signers", filters=[_strip], validators=[Length(max=500)]
    )

    # Letters.
    letter_subject = StringField(
        "Letter subject", filters=[_strip], validators=[Length(max=pages.MAX_LETTER_SUBJECT)]
    )
    letter_body = TextAreaField("Letter text", validators=[Length(max=50_000)])
    letter_editable = SelectField(
        "Signers may change",
        choices=choices(
            [("body", "The letter text"), ("all", "Subject and text"), ("none", "Nothing")]
        ),
    )
    letter_max_length = _number("Maximum letter length (characters)")
    letter_delivery = SelectField(
        "Delivery to each office",
        choices=choices([("each", "One email per letter"), ("digest", "A daily digest")]),
    )
    target_mode = SelectField(
        "Who receives the letters",
        choices=choices(
            [
                ("fixed", "The targets chosen below"),
                ("match", "The officials matching each signer's postal code or region"),
            ]
        ),
    )
    # Letters (fixed targets) and calls.
    target_ids = SelectMultipleField("Targets", coerce=int, validate_choice=False)
    # Calls.
    call_script = TextAreaField("Call script (Markdown)", validators=[Length(max=20_000)])
    # Events.
    starts_at = _when("Starts")
    ends_at = _when("Ends (optional)")
    timezone = StringField(
        "Time zone of the event", filters=[_strip], validators=[Length(max=64)], default="UTC"
    )
    venue = StringField("Venue", filters=[_strip], validators=[Length(max=300)])
    online_url = URLField("Online link (https)", filters=[_strip], validators=[Length(max=500)])
    capacity = _number("Capacity (empty for no limit)")


def _local(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M") if value else ""


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def initial_data(page: ActionPage | None) -> dict[str, Any]:
    """The form's starting values: a page's own, or sensible ones for a new page."""
    if page is None:
        return {
            "kind": PageKind.PETITION.value,
            "status": PageStatus.DRAFT.value,
            "opt_in_text": "Email me about this and other campaigns. "
            "I can unsubscribe at any time.",
            "letter_editable": "body",
            "letter_delivery": "each",
            "target_mode": "fixed",
            "timezone": "UTC",
        }
    s = page.settings or {}
    return {
        **{name: getattr(page, name) for name in pages.EDITABLE_COLUMNS},
        "next_page_id": str(page.next_page_id or ""),
        "letter_subject": s.get("letter_subject", ""),
        "letter_body": s.get("letter_body", ""),
        "letter_editable": s.get("letter_editable", "body"),
        "letter_max_length": _int_or_none(s.get("letter_max_length")),
        "letter_delivery": s.get("letter_delivery", "each"),
        "target_mode": s.get("target_mode", "fixed"),
        "target_ids": [t.id for t in page.targets],
        "call_script": s.get("call_script", ""),
        "starts_at": pages.parse_local(s.get("starts_at")),
        "ends_at": pages.parse_local(s.get("ends_at")),
        "timezone": s.get("timezone", "UTC"),
        "venue": s.get("venue", ""),
        "online_url": s.get("online_url", ""),
        "capacity": _int_or_none(s.get("capacity")),
    }


def _settings(form: PageForm) -> dict[str, Any]:
    """The kind-specific settings as typed values (the service keeps only the kind's own)."""
    return {
        "letter_subject": form.letter_subject.data or "",
        "letter_body": (form.letter_body.data or "").strip(),
        "letter_editable": form.letter_editable.data,
        "letter_max_length": form.letter_max_length.data,
        "letter_delivery": form.letter_delivery.data,
        "target_mode": form.target_mode.data,
        "call_script": form.call_script.data or "",
        "starts_at": _local(form.starts_at.data),
        "ends_at": _local(form.ends_at.data),
        "timezone": form.timezone.data or "",
        "venue": form.venue.data or "",
        "online_url": form.online_url.data or "",
        "capacity": form.capacity.data,
    }


def page_data(form: PageForm, share_image: str | None) -> pages.PageData:
    """The submitted form as service data; a field that failed to parse counts as empty."""
    next_id = form.next_page_id.data or ""
    return pages.PageData(
        kind=form.kind.data or "",
        title=form.title.data or "",
        slug=form.slug.data or "",
        body_md=form.body_md.data or "",
        share_image=share_image,
        share_image_alt=form.share_image_alt.data or "",
        goal=form.goal.data,
        status=form.status.data or "",
        close_at=form.close_at.data,
        thank_you_md=form.thank_you_md.data or "",
        next_page_id=int(next_id) if next_id.isdigit() else None,
        share_text=form.share_text.data or "",
        hashtag=form.hashtag.data or "",
        opt_in_default=bool(form.opt_in_default.data),
        opt_in_text=form.opt_in_text.data or "",
        settings=_settings(form),
        target_ids=tuple(form.target_ids.data or ()),
    )


def add_errors(form: PageForm, errors: dict[str, str]) -> None:
    """Put the service's messages beside their fields (a form error on a field wins)."""
    for name, message in errors.items():
        field = getattr(form, name, None)
        if field is None:
            continue
        if not field.errors:
            field.errors = [message]
