"""Staff mailing forms: they parse types; the rules live in app/mailings/campaigns.py."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    DateTimeLocalField,
    EmailField,
    IntegerField,
    RadioField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
    widgets,
)
from wtforms.validators import Optional

from app.mailings.campaigns import DraftData
from app.mailings.models import Mailing

LOCAL_FORMATS = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"]
WHOLE_NUMBER = "Please enter a whole number, such as 500."
ALL_SUBSCRIBERS = ""


def choices(pairs: object) -> list[SelectChoice]:
    """(value, label) pairs as WTForms select choices."""
    return [SelectChoice(str(value), label) for value, label in pairs]  # type: ignore[attr-defined]


def _strip(value: str | None) -> str | None:
    return value.strip() if isinstance(value, str) else value


def _number(label: str) -> IntegerField:
    return IntegerField(label, validators=[Optional()], invalid_value_message=WHOLE_NUMBER)


class MailingForm(FlaskForm):
    subject = StringField("Subject", filters=[_strip])
    preheader = StringField("Preheader", filters=[_strip])
    from_name = StringField("From name", filters=[_strip])
    reply_to = EmailField("Reply-to address", filters=[_strip])
    body_format = RadioField(
        "Body format",
        choices=choices([("markdown", "Markdown"), ("html", "HTML")]),
        default="markdown",
        validate_choice=False,  # campaigns.validate_draft says what is wrong, in words
    )
    body_md = TextAreaField("Body")
    segment_id = SelectField("Send to", validate_choice=False)
    throttle_per_hour = _number("Throttle (messages per hour)")
    subject_b = StringField("Second subject (B)", filters=[_strip])
    ab_test_percent = _number("Test share for each subject (percent)")
    ab_metric = SelectField(
        "Choose the winner by",
        choices=choices([("opens", "Unique opens"), ("clicks", "Unique clicks")]),
        validate_choice=False,
    )
    ab_decide_after_minutes = _number("Choose the winner after (minutes)")

    def draft_data(self) -> DraftData:
        segment = (self.segment_id.data or "").strip()
        return DraftData(
            subject=self.subject.data or "",
            body_md=self.body_md.data or "",
            body_format=self.body_format.data or "",
            preheader=self.preheader.data or "",
            from_name=self.from_name.data or "",
            reply_to=self.reply_to.data or "",
            segment_id=int(segment) if segment.isdigit() else None,
            throttle_per_hour=self.throttle_per_hour.data,
            subject_b=self.subject_b.data or "",
            ab_test_percent=self.ab_test_percent.data,
            ab_metric=self.ab_metric.data or "opens",
            ab_decide_after_minutes=self.ab_decide_after_minutes.data,
        )


def initial_data(mailing: Mailing | None) -> dict[str, object]:
    if mailing is None:
        return {"body_format": "markdown", "ab_metric": "opens", "segment_id": ALL_SUBSCRIBERS}
    data: dict[str, object] = {
        name: getattr(mailing, name) for name in DraftData.__dataclass_fields__
    }
    data["segment_id"] = str(mailing.segment_id) if mailing.segment_id else ALL_SUBSCRIBERS
    return data


class ScheduleForm(FlaskForm):
    send_at = DateTimeLocalField(
        "Send at (UTC)",
        format=LOCAL_FORMATS,
        validators=[Optional()],
        invalid_value_message="Please enter a date and a time (UTC).",
    )


class MultiCheckboxField(SelectMultipleField):
    widget = widgets.ListWidget(prefix_label=False)
    option_widget = widgets.CheckboxInput()


class SendTestForm(FlaskForm):
    addresses = MultiCheckboxField("Send a test to", validate_choice=False)


class SendForm(FlaskForm):
    warnings_read = BooleanField("I have read the warnings and want to send anyway")


class PreviewSearchForm(FlaskForm):
    email = EmailField("Supporter's email address", filters=[_strip])
