"""Officials that letters and calls go to: CSV import, postal-code matching, office opt-out.

Callers own the transaction: these functions flush but never commit.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from app.actions.models import ActionPage, LetterDelivery, Target
from app.supporters.emails import InvalidEmail, normalise_email

COLUMNS = ("name", "title", "office_email", "phone", "region", "postal_codes")
MAX_ROWS = 20_000
MAX_POSTAL_CODE = 20
_LIMITS = {"name": 200, "title": 200, "office_email": 320, "phone": 40, "region": 100}
_PHONE = re.compile(r"^[0-9+()./ -]{3,40}$")
_US_ZIP_PLUS_4 = re.compile(r"^\d{5}-?\d{4}$")
_POSTAL_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 -]*\*?$")
OPTED_OUT_REASON = "unsubscribed"  # the seal's own reason, so both paths read the same
_LINK_SALT = "groundswell.target-links.v1"


@dataclass(frozen=True)
class RowError:
    """One problem in an imported file; line 1 is the header."""

    line: int
    message: str


@dataclass
class ImportReport:
    """What an import did: targets created and updated, and the rows it refused."""

    created: int = 0
    updated: int = 0
    errors: list[RowError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def normalise_postal_code(raw: str, country: str = "") -> str:
    """A postal code for comparison: letters and digits only, upper case (US ZIP+4 → ZIP)."""
    text = (raw or "").strip()
    if country.upper() in ("US", "") and _US_ZIP_PLUS_4.match(text):
        text = text[:5]
    return "".join(c for c in text.upper() if c.isascii() and c.isalnum())


def parse_postal_codes(raw: str) -> list[str]:
    """The entries of a postal_codes cell, normalised; prefixes keep their trailing *.

    Entries are separated by semicolons when the cell has any (so "N1 9GU; N1 7AA"
    keeps its spaces), otherwise by spaces. Raises ValueError naming a bad entry.
    """
    parts = raw.split(";") if ";" in raw else raw.split()
    entries: list[str] = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        prefix = part.endswith("*")
        code = normalise_postal_code(part.rstrip("*"))
        if not code or len(code) > MAX_POSTAL_CODE or not _POSTAL_ENTRY.match(part):
            raise ValueError(f"“{part[:40]}” is not a postal code or a prefix ending in *")
        entry = code + ("*" if prefix else "")
        if entry not in entries:
            entries.append(entry)
    return entries


def _clean(value: str | None) -> str:
    """A cell as text: control characters dropped, whitespace collapsed."""
    kept = "".join(c for c in (value or "") if c.isprintable() or c.isspace())
    return " ".join(kept.split())


def validate_row(values: dict[str, str]) -> dict[str, str] | list[str]:
    """The row's cells cleaned (only the file's own columns), or why it cannot be imported."""
    errors = [
        f"{column} is longer than {limit} characters"
        for column, limit in _LIMITS.items()
        if len(values.get(column, "")) > limit
    ]
    cleaned = dict(values)
    if not values.get("name"):
        errors.append("name is empty")
    if email := values.get("office_email"):
        try:
            cleaned["office_email"] = normalise_email(email)
        except InvalidEmail:
            errors.append(f"office_email “{email[:80]}” is not an email address")
    if values.get("phone") and not _PHONE.match(values["phone"]):
        errors.append("phone may hold only digits, spaces and + ( ) - . /")
    if "postal_codes" in values:
        try:
            cleaned["postal_codes"] = " ".join(parse_postal_codes(values["postal_codes"]))
        except ValueError as exc:
            errors.append(f"postal_codes: {exc}")
    return errors or cleaned


def _header(reader: Iterator[list[str]]) -> list[str] | RowError:
    """The file's column names, lower-cased, or what is wrong with them."""
    try:
        raw = next(reader)
    except StopIteration:
        return RowError(1, "The file is empty: it needs a header row.")
    columns = [c.strip().lower().lstrip("\ufeff") for c in raw]
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        return RowError(
            1, f"Unknown column {', '.join(unknown)}; the columns are {', '.join(COLUMNS)}."
        )
    if "name" not in columns:
        return RowError(1, f"The file needs a name column; the columns are {', '.join(COLUMNS)}.")
    if len(set(columns)) != len(columns):
        return RowError(1, "A column appears twice in the header.")
    return columns


def _existing(session: Session, row: dict[str, str]) -> Target | None:
    """The target this row updates: the same office email, else the same name.

    A row whose office_email cell is empty updates only a target without one.
    """
    if email := row.get("office_email"):
        query = select(Target).where(func.lower(Target.office_email) == email)
    else:
        query = select(Target).where(func.lower(Target.name) == row["name"].lower())
        if "office_email" in row:
            query = query.where(Target.office_email == "")
    return session.scalar(query.order_by(Target.id).limit(1))


def _reachable(row: dict[str, str], target: Target | None) -> bool:
    """After this row, the target has an office email or a phone."""
    email = row.get("office_email", target.office_email if target else "")
    return bool(email or row.get("phone", target.phone if target else ""))


def import_targets_csv(session: Session, text: str, now: datetime) -> ImportReport:
    """Create or update targets from CSV text; rows with errors are reported and skipped.

    Columns: name, title, office_email, phone, region, postal_codes (only name is
    required in the header). A row updates the target with the same office email,
    or, without an email, the one with the same name; on an update, columns the
    file does not have keep their values, and an office's opt-out always stays.
    """
    report = ImportReport()
    reader = csv.reader(io.StringIO(text.replace("\x00", "")))
    try:
        columns = _header(reader)
        if isinstance(columns, RowError):
            report.errors.append(columns)
            return report
        seen: dict[int, int] = {}
        for cells in reader:
            _import_row(session, report, columns, cells, reader.line_num, seen, now)
            if reader.line_num > MAX_ROWS:
                report.errors.append(RowError(reader.line_num, f"Stopped after {MAX_ROWS} lines."))
                break
    except csv.Error as exc:
        report.errors.append(RowError(reader.line_num, f"The file is not valid CSV: {exc}"))
    return report


def _import_row(
    session: Session,
    report: ImportReport,
    columns: list[str],
    cells: list[str],
    line: int,
    seen: dict[int, int],
    now: datetime,
) -> None:
    """Validate and upsert one data row, recording what happened in the report."""
    if not any(c.strip() for c in cells):
        return
    if len(cells) > len(columns):
        report.errors.append(RowError(line, f"has {len(cells)} cells for {len(columns)} columns"))
        return
    checked = validate_row({c: _clean(v) for c, v in zip(columns, cells, strict=False)})
    if isinstance(checked, list):
        report.errors.append(RowError(line, "; ".join(checked)))
        return
    target = _existing(session, checked)
    if not _reachable(checked, target):
        report.errors.append(
            RowError(line, "give an office_email (for letters) or a phone (for calls)")
        )
        return
    # An earlier row of this file created or updated this target: flushed, so found.
    if target is not None and target.id in seen:
        report.errors.append(RowError(line, f"the same target as line {seen[target.id]}"))
        return
    if target is None:
        target = Target(created_at=now)
        session.add(target)
        report.created += 1
    else:
        report.updated += 1
    for column, value in checked.items():
        setattr(target, column, value)  # columns the file leaves out stay as they were
    session.flush()
    seen[target.id] = line


def _postal_candidates(code: str) -> list[str]:
    """Entries that match this code: itself, and each of its prefixes with a *."""
    return [code] + [code[:i] + "*" for i in range(len(code), 0, -1)]


def match_targets(
    session: Session, page: ActionPage, postal_code: str, country: str = ""
) -> list[Target]:
    """The officials a signer's action goes to, without offices that opted out.

    "fixed" pages (the default) go to the targets staff chose; "match" pages go
    to every target whose postal codes hold the signer's code exactly or by a
    prefix ending in *.
    """
    if page.settings.get("target_mode", "fixed") != "match":
        return [t for t in page.targets if t.opted_out_at is None]
    code = normalise_postal_code(postal_code, country)
    if not code:
        return []
    padded = " " + Target.postal_codes + " "
    # Codes are letters and digits only, so they carry no LIKE wildcards.
    query = (
        select(Target)
        .where(
            Target.opted_out_at.is_(None),
            or_(*(padded.like(f"% {entry} %") for entry in _postal_candidates(code))),
        )
        .order_by(Target.name, Target.id)
    )
    return list(session.scalars(query))


def list_targets(session: Session, limit: int) -> tuple[list[Target], int]:
    """The first targets by name, for staff, and how many there are in all."""
    total = session.scalar(select(func.count()).select_from(Target)) or 0
    rows = session.scalars(select(Target).order_by(Target.name, Target.id).limit(limit))
    return list(rows), total


def make_target_token(secret_key: str, public_id: str) -> str:
    """A signed, non-expiring token for an office's own links (like a supporter's)."""
    return str(URLSafeSerializer(secret_key, salt=_LINK_SALT).dumps(public_id))


def target_for_token(session: Session, secret_key: str, token: str) -> Target | None:
    """The target a signed link was made for; None for anything we did not sign."""
    if not token or len(token) > 200:
        return None
    try:
        public_id = URLSafeSerializer(secret_key, salt=_LINK_SALT).loads(token)
    except BadSignature:
        return None
    if not isinstance(public_id, str):
        return None
    return session.scalar(select(Target).where(Target.public_id == public_id))


def opt_out(session: Session, target: Target, now: datetime) -> bool:
    """The office stops receiving letters at once; its queued letters are skipped.

    Returns False when it had already opted out.
    """
    if target.opted_out_at is not None:
        return False
    target.opted_out_at = now
    session.execute(
        update(LetterDelivery)
        .where(LetterDelivery.target_id == target.id, LetterDelivery.status == "queued")
        .values(status="skipped", skip_reason=OPTED_OUT_REASON)
    )
    session.flush()
    return True


def opt_back_in(session: Session, target: Target) -> bool:
    """The office takes letters again (letters skipped meanwhile stay skipped)."""
    if target.opted_out_at is None:
        return False
    target.opted_out_at = None
    session.flush()
    return True
