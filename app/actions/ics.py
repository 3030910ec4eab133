"""A small RFC 5545 writer: one VEVENT in a VCALENDAR, times in UTC, text escaped and folded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PRODID = "-//Groundswell//Events//EN"
MAX_OCTETS = 75  # RFC 5545 3.1: lines SHOULD NOT be longer than 75 octets, excluding CRLF
CRLF = "\r\n"


@dataclass(frozen=True)
class CalendarEvent:
    """What a calendar file says about one event; nothing about who is going."""

    uid: str
    stamp: datetime
    starts: datetime
    ends: datetime | None
    summary: str
    location: str = ""
    url: str = ""
    description: str = ""


def escape_text(value: str) -> str:
    """A TEXT value per RFC 5545 3.3.11: backslash, semicolon, comma and newlines escaped."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = value.replace("\\", "\\\\").replace(";", "\\;").replace(",", "\\,")
    return value.replace("\n", "\\n")


def utc_stamp(moment: datetime) -> str:
    """A DATE-TIME in UTC ("Z") form; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%SZ")


def fold(line: str) -> str:
    """Fold a content line into CRLF-joined pieces of at most 75 octets, never inside a
    UTF-8 character; each continuation starts with one space (RFC 5545 3.1)."""
    pieces: list[str] = []
    current, size = "", 0
    limit = MAX_OCTETS
    for char in line:
        width = len(char.encode("utf-8"))
        if size + width > limit:
            pieces.append(current)
            current, size = " ", 1
        current += char
        size += width
    pieces.append(current)
    return CRLF.join(pieces)


def _text_line(name: str, value: str) -> str:
    return f"{name}:{escape_text(value)}"


def build_calendar(event: CalendarEvent) -> bytes:
    """The .ics file for one event: UTF-8, CRLF line endings, long lines folded."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        "CALSCALE:GREGORIAN",
        "METHOD:PUBLISH",
        "BEGIN:VEVENT",
        f"UID:{event.uid}",
        f"DTSTAMP:{utc_stamp(event.stamp)}",
        f"DTSTART:{utc_stamp(event.starts)}",
    ]
    if event.ends is not None:
        lines.append(f"DTEND:{utc_stamp(event.ends)}")
    lines.append(_text_line("SUMMARY", event.summary))
    if event.location:
        lines.append(_text_line("LOCATION", event.location))
    if event.url:
        # URL is a URI value, not TEXT: it is written as is (RFC 5545 3.8.4.6).
        lines.append(f"URL:{event.url}")
    if event.description:
        lines.append(_text_line("DESCRIPTION", event.description))
    lines += ["END:VEVENT", "END:VCALENDAR"]
    return (CRLF.join(fold(line) for line in lines) + CRLF).encode("utf-8")
