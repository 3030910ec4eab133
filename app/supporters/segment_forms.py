"""The segment builder form: posted fields to a definition, and a definition back to rows.

Each condition row posts `<part>-<n>-<key>` (part is include or exclude), so every
condition kind's inputs can sit in the same row and the page works without JavaScript.
Values that do not parse are passed on as typed, so validation in
app/supporters/segments.py words the message and the form keeps what was typed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from werkzeug.datastructures import MultiDict

from app.supporters.segments import MAX_CONDITIONS

PARTS = ("include", "exclude")
TYPE_CHOICES = [
    ("", "— no condition —"),
    ("tags", "Has tags"),
    ("action", "Took action (or did not)"),
    ("joined", "Joined between dates"),
    ("location", "Country and postal code"),
    ("mailing", "Received, opened or clicked a mailing"),
    ("engaged", "Engaged recently"),
    ("custom_field", "Custom field"),
]
# Every key a row may post, with its blank value.
ROW_KEYS = {
    "type": "",
    "mode": "any",
    "tag_ids": [],
    "took": "took",
    "page_ids": [],
    "from": "",
    "to": "",
    "country": "",
    "postal_prefix": "",
    "event": "opened",
    "mailing_id": "",
    "days": "",
    "field": "",
    "op": "equals",
    "value": "",
}


@dataclass
class BuilderForm:
    """What the builder shows: typed values, condition rows, and messages keyed by field id."""

    name: str = ""
    description: str = ""
    match: str = "all"
    rows: dict[str, list[dict[str, Any]]] = field(
        # A new segment starts with two blank conditions to include and one to exclude.
        default_factory=lambda: {"include": [_blank(), _blank()], "exclude": [_blank()]}
    )
    # For each part, the row each condition of the definition came from.
    sources: dict[str, list[int]] = field(default_factory=lambda: {"include": [], "exclude": []})
    errors: dict[str, str] = field(default_factory=dict)

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"match": self.match, "include": [], "exclude": []}
        self.sources = {"include": [], "exclude": []}
        for part in PARTS:
            for n, row in enumerate(self.rows[part]):
                cond = _condition(row)
                if cond is not None:
                    out[part].append(cond)
                    self.sources[part].append(n)
        return out

    def place_errors(self, errors: dict[str, str]) -> None:
        """Turn the service's "include.2.days" into this page's field id "include-0-days"."""
        for where, message in errors.items():
            bits = where.split(".")
            if len(bits) >= 2 and bits[0] in PARTS and bits[1].isdigit():
                index = int(bits[1])
                row = self.sources[bits[0]][index] if index < len(self.sources[bits[0]]) else 0
                key = bits[2] if len(bits) > 2 else "type"
                self.errors[f"{bits[0]}-{row}-{key}"] = message
            else:
                self.errors[where or "form"] = message

    def add_row(self, part: str) -> None:
        if part in PARTS and len(self.rows[part]) < MAX_CONDITIONS:
            self.rows[part].append(_blank())


def _blank() -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in ROW_KEYS.items()}


def _number(raw: str) -> int | str | None:
    raw = raw.strip()
    if not raw:
        return None
    return int(raw) if raw.isdigit() else raw


def _ids(raw: list[str]) -> list[int | str]:
    return [int(v) if v.isdigit() else v for v in raw if v.strip()]


def _condition(row: dict[str, Any]) -> dict[str, Any] | None:
    kind = row["type"]
    if not kind:
        return None
    if kind == "tags":
        return {"type": kind, "mode": row["mode"], "tag_ids": _ids(row["tag_ids"])}
    if kind == "action":
        return {"type": kind, "took": row["took"] != "not", "page_ids": _ids(row["page_ids"])}
    if kind == "joined":
        return {"type": kind, "from": row["from"] or None, "to": row["to"] or None}
    if kind == "location":
        return {"type": kind, "country": row["country"], "postal_prefix": row["postal_prefix"]}
    if kind == "mailing":
        return {"type": kind, "event": row["event"], "mailing_id": _number(row["mailing_id"])}
    if kind == "engaged":
        return {"type": kind, "days": _number(row["days"])}
    if kind == "custom_field":
        return {"type": kind, "field": row["field"], "op": row["op"], "value": row["value"]}
    return {"type": kind}  # unknown: validation says so beside the row


def _row_count(form: MultiDict[str, str], part: str) -> int:
    raw = form.get(f"{part}_rows", "1")
    count = int(raw) if raw.isdigit() else 1
    return max(1, min(count, MAX_CONDITIONS))


def from_post(form: MultiDict[str, str]) -> BuilderForm:
    """The builder as posted: every value kept as typed."""
    builder = BuilderForm(
        name=form.get("name", ""),
        description=form.get("description", ""),
        match=form.get("match", "all"),
        rows={"include": [], "exclude": []},
    )
    for part in PARTS:
        for n in range(_row_count(form, part)):
            row = _blank()
            for key, blank in ROW_KEYS.items():
                name = f"{part}-{n}-{key}"
                row[key] = form.getlist(name) if isinstance(blank, list) else form.get(name, blank)
            builder.rows[part].append(row)
    return builder


def _row_from(cond: dict[str, Any]) -> dict[str, Any]:
    row = _blank()
    row["type"] = cond["type"]
    for key, value in cond.items():
        if key == "took":
            row["took"] = "took" if value else "not"
        elif key in ("tag_ids", "page_ids"):
            row[key] = [str(v) for v in value]
        elif key in row and key != "type":
            row[key] = "" if value is None else str(value)
    return row


def from_definition(name: str, description: str, definition: dict[str, Any]) -> BuilderForm:
    """The builder for a saved segment, with one blank row to add to in each part."""
    builder = BuilderForm(
        name=name,
        description=description,
        match=str(definition.get("match", "all")),
        rows={"include": [], "exclude": []},
    )
    for part in PARTS:
        builder.rows[part] = [_row_from(c) for c in definition.get(part, [])]
        if len(builder.rows[part]) < MAX_CONDITIONS:
            builder.rows[part].append(_blank())
    return builder
