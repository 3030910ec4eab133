"""Rule 3: the year-of-birth screen, at its boundary and with everything people type."""

from __future__ import annotations

import re

import pytest

from app.timeutil import utcnow
from privacy import age_screen
from privacy.age_screen import Outcome, browser_is_screened, check_birth_year

YEAR = 2026  # a fixed "now" keeps the boundary cases readable


@pytest.mark.parametrize("age_in_years", [0, 1, 5, 10, 12, 13])
def test_child_is_screened(age_in_years):
    check = check_birth_year(str(YEAR - age_in_years), YEAR)
    assert check.outcome is Outcome.CHILD
    assert check.is_child and not check.allowed


def test_child_by_one_year_is_screened():
    # Born YEAR-13: 12 or 13 this year, clearly a child.
    assert check_birth_year(str(YEAR - 13), YEAR).is_child


def test_boundary_year_is_screened_because_the_birthday_may_be_ahead():
    # Born YEAR-14: 13 until their birthday, 14 after it. With a year only we
    # cannot know which, so they could still be 13 and must be screened.
    check = check_birth_year(str(YEAR - 14), YEAR)
    assert check.outcome is Outcome.CHILD


def test_first_allowed_year():
    # Born YEAR-15: at least 14 even with a 31 December birthday.
    check = check_birth_year(str(YEAR - 15), YEAR)
    assert check.outcome is Outcome.ALLOWED
    assert check.allowed and not check.is_child
    assert check.message == ""


@pytest.mark.parametrize("years_ago", [15, 16, 30, 60, 100])
def test_adults_are_allowed(years_ago):
    assert check_birth_year(str(YEAR - years_ago), YEAR).allowed


def test_boundary_follows_the_real_clock():
    # The app passes utcnow().year; the rule must hold for whatever year it is.
    now = utcnow().year
    assert check_birth_year(str(now - 14), now).is_child
    assert check_birth_year(str(now - 15), now).allowed


def test_an_integer_is_read_like_the_text():
    assert check_birth_year(YEAR - 40, YEAR).allowed
    assert check_birth_year(YEAR - 10, YEAR).is_child


def test_surrounding_whitespace_is_ignored():
    assert check_birth_year(f"  {YEAR - 40}\n", YEAR).allowed
    assert check_birth_year(f"\t{YEAR - 10} ", YEAR).is_child


@pytest.mark.parametrize("raw", [None, "", " ", "   ", "\t\n", "\u3000"])
def test_blank_is_invalid_with_the_missing_message(raw):
    check = check_birth_year(raw, YEAR)
    assert check.outcome is Outcome.INVALID
    assert check.message == age_screen.MISSING_MESSAGE
    assert not check.allowed and not check.is_child


@pytest.mark.parametrize(
    "raw",
    ["1800", "0000", "0001", "3000", "9999", str(YEAR + 1), str(YEAR + 50)],
)
def test_absurd_years_are_invalid(raw):
    check = check_birth_year(raw, YEAR)
    assert check.outcome is Outcome.INVALID
    assert check.message == age_screen.INVALID_MESSAGE


def test_this_year_is_never_allowed():
    # A newborn cannot sign up, whichever way the year is classified.
    assert not check_birth_year(str(YEAR), YEAR).allowed


@pytest.mark.parametrize(
    "raw",
    [
        "nineteen",
        "19a5",
        "\u0661\u0669\u0668\u0660",  # Arabic-Indic 1980: str.isdigit() is True for them
        "\uff11\uff19\uff18\uff10",  # full-width 1980
        "1980.0",
        "-1980",
        "+1980",
        "1e3",
        "198",
        "19800",
        "01980",
        "1980 1981",
        "19 80",
        "1980\x00",
        "0x7bc",
        "\u00b2\u2070\u00b9\u2070",  # superscript 2010
    ],
)
def test_non_numeric_and_odd_input_is_invalid(raw):
    check = check_birth_year(raw, YEAR)
    assert check.outcome is Outcome.INVALID
    assert check.message == age_screen.INVALID_MESSAGE


def _all_messages() -> list[str]:
    inputs = [None, "", "x", "1800", str(YEAR + 1), str(YEAR - 10), str(YEAR - 14), str(YEAR - 40)]
    found = {check_birth_year(raw, YEAR).message for raw in inputs}
    found |= {age_screen.MISSING_MESSAGE, age_screen.INVALID_MESSAGE}
    return sorted(m for m in found if m)


def test_messages_never_hint_at_the_cut_off():
    messages = _all_messages()
    assert len(messages) >= 2
    for message in messages:
        lowered = message.lower()
        for word in ("age", "old", "young", "under", "over", "child", "parent", "13", "14"):
            assert not re.search(rf"\b{word}\b", lowered), (word, message)
        # Any example year must be a long way from the cut-off, not a hint at it.
        for number in re.findall(r"\d+", message):
            assert len(number) == 4 and int(number) <= YEAR - 30, (number, message)


def test_a_child_gets_no_message_to_learn_from():
    # The form is not re-shown to a child with a "try another year" message.
    assert check_birth_year(str(YEAR - 10), YEAR).message == ""
    assert check_birth_year(str(YEAR - 14), YEAR).message == ""


def test_screen_cookie_is_only_a_flag():
    assert browser_is_screened({age_screen.SCREEN_COOKIE_NAME: age_screen.SCREEN_COOKIE_VALUE})
    assert not browser_is_screened({})
    assert not browser_is_screened({age_screen.SCREEN_COOKIE_NAME: "0"})
    assert not browser_is_screened({age_screen.SCREEN_COOKIE_NAME: ""})
    assert not browser_is_screened({"other": age_screen.SCREEN_COOKIE_VALUE})
    assert age_screen.SCREEN_COOKIE_VALUE == "1"
