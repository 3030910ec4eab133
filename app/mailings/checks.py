"""Pre-send checks on the email as a supporter would get it: broken links, images without
alt text, an HTML part Gmail would clip, unknown merge fields, a segment of nobody.

Errors block Send; warnings need staff to say they have read them; hints are advice.
Links to our own action pages (/a/<slug>) are checked in the database; other
http(s) links with a HEAD request (GET when HEAD is refused), in parallel, unless
MAILING_CHECK_EXTERNAL_LINKS is off.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.actions.models import ActionPage, PageStatus
from app.mailings import campaigns
from app.mailings.models import Mailing
from app.mailings.service import SenderIdentity

ERROR, WARNING, HINT = "error", "warning", "hint"
GMAIL_CLIP_BYTES = 102 * 1024
LINK_TIMEOUT = 5.0
MAX_LINK_WORKERS = 8
# Answers that mean the page is gone, not that the site dislikes robots.
GONE = (404, 410)
_UNKNOWN_FIELD = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.DOTALL)
_TITLE = re.compile(r"<title>.*?</title>", re.DOTALL | re.IGNORECASE)
_OWN_ACTION_PAGE = re.compile(r"^/a/([^/?#]+)/?$")


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning | hint
    message: str


def blocking(findings: list[Finding]) -> bool:
    return any(f.level == ERROR for f in findings)


def has_warnings(findings: list[Finding]) -> bool:
    return any(f.level == WARNING for f in findings)


class _Parts(HTMLParser):
    """The links and images of an email's HTML part."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.images: list[tuple[str, str | None]] = []  # (src, alt or None when missing)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and values.get("href"):
            self.links.append((values["href"] or "").strip())
        elif tag == "img":
            self.images.append((values.get("src") or "", values.get("alt")))


def _parts(html: str) -> _Parts:
    parser = _Parts()
    parser.feed(html)
    parser.close()
    return parser


def _same_origin(url: str, base_url: str) -> bool:
    a, b = urlsplit(url), urlsplit(base_url)
    return (a.scheme, a.netloc.lower()) == (b.scheme, b.netloc.lower())


def probe(url: str, timeout: float = LINK_TIMEOUT) -> int | None:
    """The HTTP status a link answers with (HEAD, then GET if HEAD fails); None when it
    cannot be reached at all."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return None
    status: int | None = None
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
            url, method=method, headers={"User-Agent": "Groundswell link check"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return int(response.status)
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except (urllib.error.URLError, OSError, ValueError):
            status = None
    return status


def _check_own_links(session: Session, links: list[str], base_url: str) -> list[Finding]:
    slugs: dict[str, str] = {}
    for url in links:
        match = _OWN_ACTION_PAGE.match(urlsplit(url).path)
        if _same_origin(url, base_url) and match:
            slugs[unquote(match.group(1))] = url
    if not slugs:
        return []
    pages = {
        slug: status
        for slug, status in session.execute(
            select(ActionPage.slug, ActionPage.status).where(ActionPage.slug.in_(list(slugs)))
        )
    }
    findings = []
    for slug, url in sorted(slugs.items()):
        status = pages.get(slug)
        if status is None:
            findings.append(
                Finding(ERROR, f"The link {url} goes to an action page that does not exist.")
            )
        elif status != PageStatus.LIVE:
            findings.append(
                Finding(ERROR, f"The link {url} goes to an action page that is {status}, not live.")
            )
    return findings


def _check_external_links(links: list[str], timeout: float) -> list[Finding]:
    if not links:
        return []
    with ThreadPoolExecutor(max_workers=min(MAX_LINK_WORKERS, len(links))) as pool:
        statuses = list(pool.map(lambda url: probe(url, timeout), links))
    findings = []
    for url, status in zip(links, statuses, strict=True):
        if status in GONE:
            findings.append(
                Finding(ERROR, f"The link {url} is broken: the page is not found ({status}).")
            )
        elif status is None:
            findings.append(
                Finding(WARNING, f"The link {url} could not be reached: please check it.")
            )
        elif status >= 400:
            findings.append(
                Finding(
                    WARNING, f"The link {url} answered with an error ({status}): please check it."
                )
            )
    return findings


def check_links(
    session: Session,
    links: list[str],
    base_url: str,
    *,
    external: bool = True,
    timeout: float = LINK_TIMEOUT,
) -> list[Finding]:
    """Findings for the links of an email (the unsubscribe footer's own links included)."""
    unique = list(dict.fromkeys(links))
    findings: list[Finding] = []
    outside: list[str] = []
    for url in unique:
        scheme = urlsplit(url).scheme.lower()
        if scheme in ("mailto", "tel"):
            continue
        if scheme not in ("http", "https"):
            findings.append(
                Finding(ERROR, f"The link “{url}” is not a full web address (https://…).")
            )
        elif not _same_origin(url, base_url):
            outside.append(url)
    findings += _check_own_links(session, unique, base_url)
    if external:
        findings += _check_external_links(outside, timeout)
    return findings


def check_images(html: str) -> list[Finding]:
    missing = [src for src, alt in _parts(html).images if not (alt or "").strip()]
    if not missing:
        return []
    listed = ", ".join(missing[:3]) + (" …" if len(missing) > 3 else "")
    return [
        Finding(
            WARNING,
            f"{len(missing)} image(s) have no alt text, so people who cannot see them miss "
            f"what they say: {listed}",
        )
    ]


def check_size(html: str) -> list[Finding]:
    size = len(html.encode("utf-8"))
    if size <= GMAIL_CLIP_BYTES:
        return []
    return [
        Finding(
            WARNING,
            f"The email is {size / 1024:.0f} KB; Gmail cuts off emails over 102 KB, hiding "
            "the end of it (and the unsubscribe link). Please shorten it.",
        )
    ]


def check_merge_fields(*texts: str) -> list[Finding]:
    unknown = sorted({m.group(0) for text in texts for m in _UNKNOWN_FIELD.finditer(text)})
    if not unknown:
        return []
    return [
        Finding(
            ERROR,
            "Unknown merge field(s) would show as typed: "
            + ", ".join(unknown)
            + '. The one available is {{ first_name | default("friend") }}.',
        )
    ]


def run_checks(
    session: Session,
    mailing: Mailing,
    identity: SenderIdentity,
    now: datetime,
    *,
    external_links: bool = True,
    timeout: float = LINK_TIMEOUT,
) -> list[Finding]:
    """Every check on the mailing, errors first."""
    try:
        rendered = campaigns.preview(mailing, identity, None, now)
    except campaigns.CampaignError as exc:
        return [Finding(ERROR, str(exc))]
    # The <title> repeats the subject as typed (the composer does not merge it there), and
    # the subject itself is checked as the supporter sees it.
    texts = [rendered.subject, rendered.text, _TITLE.sub("", rendered.html)]
    if mailing.subject_b.strip():
        texts.append(campaigns.preview(mailing, identity, None, now, "b").subject)
    parts = _parts(rendered.html)
    findings = check_merge_fields(*texts)
    findings += check_links(
        session, parts.links, identity.base_url, external=external_links, timeout=timeout
    )
    findings += check_images(rendered.html)
    findings += check_size(rendered.html)
    count = campaigns.mailable_count(session, mailing.segment_id, now)
    if count == 0:
        findings.append(
            Finding(ERROR, "Nobody would get this mailing: the segment has no one to mail.")
        )
    if not mailing.preheader.strip():
        findings.append(
            Finding(
                HINT,
                "There is no preheader: inboxes will show the first words of the email "
                "beside the subject instead.",
            )
        )
    order = {ERROR: 0, WARNING: 1, HINT: 2}
    return sorted(findings, key=lambda f: order[f.level])
