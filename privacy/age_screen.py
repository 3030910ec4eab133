"""Rule 3: nothing is collected from children 13 and under.

A neutral year-of-birth question. With only a year we cannot tell whether a
birthday has passed, so anyone who *could* still be 13 is screened: a person
must be born in a year that makes them at least 14 even if their birthday is
on 31 December. Messages never mention an age or a cut-off.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# The youngest age we may collect data from is 14 ("13 and under" are excluded).
MINIMUM_AGE = 14
OLDEST_PLAUSIBLE_AGE = 120

# The cookie that remembers a screened browser holds this flag and nothing else.
SCREEN_COOKIE_NAME = "gs_age_screen"
SCREEN_COOKIE_VALUE = "1"
SCREEN_COOKIE_MAX_AGE = 24 * 3600


class Outcome(enum.Enum):
    ALLOWED = "allowed"
    CHILD = "child"
    INVALID = "invalid"


@dataclass(frozen=True)
class AgeCheck:
    outcome: Outcome
    message: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOWED

    @property
    def is_child(self) -> bool:
        return self.outcome is Outcome.CHILD


MISSING_MESSAGE = "Please enter the year you were born."
INVALID_MESSAGE = "Please enter the year you were born as four digits, for example 1987."


def check_birth_year(raw: object, current_year: int) -> AgeCheck:
    """Classify a year of birth as typed into a form.

    Blank, non-numeric and impossible years are INVALID with a neutral message;
    a year that makes the person possibly 13 or younger is CHILD; anything
    else is ALLOWED.
    """
    text = "" if raw is None else str(raw).strip()
    if not text:
        return AgeCheck(Outcome.INVALID, MISSING_MESSAGE)
    if not (text.isascii() and text.isdigit() and len(text) == 4):
        return AgeCheck(Outcome.INVALID, INVALID_MESSAGE)
    year = int(text)
    if year > current_year or year < current_year - OLDEST_PLAUSIBLE_AGE:
        return AgeCheck(Outcome.INVALID, INVALID_MESSAGE)
    # Youngest possible age: the birthday may still be ahead this year.
    youngest_age = current_year - year - 1
    if youngest_age < MINIMUM_AGE:
        return AgeCheck(Outcome.CHILD)
    return AgeCheck(Outcome.ALLOWED)


def browser_is_screened(cookies: dict[str, str]) -> bool:
    """True when this browser was screened as a child within the last day."""
    return cookies.get(SCREEN_COOKIE_NAME) == SCREEN_COOKIE_VALUE
