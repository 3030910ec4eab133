"""Rule 3 on action pages: a child stopped on any kind of page leaves no trace."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.actions.models import Action
from tests.conftest import csrf_token
from tests.factories import ActionPageFactory, TargetFactory
from tests.test_child_leaves_no_trace import (  # noqa: F401  (all_logs and kid are fixtures)
    ADULT_YEAR,
    YEAR,
    all_logs,
    assert_kind_page,
    assert_no_trace,
    assert_only_the_flag_cookie,
    kid,
)

KIND_FIELDS = {
    "petition": {"comment": "Stop it", "show_publicly": "y", "town": "Kidtown"},
    "letter": {"letter_subject": "Please act", "letter_body": "Dear senator, please act."},
    "call": {"call_outcome": "reached"},
    "event": {},
    "signup": {},
}


@pytest.mark.parametrize("kind", list(KIND_FIELDS))
def test_child_on_an_action_page_leaves_no_trace(
    app, client, db_session, all_logs, instance_dir, kid, kind
):
    target = TargetFactory()
    settings = {"letter_subject": "x", "letter_body": "y"}
    page = ActionPageFactory(kind=kind, slug=f"kid-{kind}", settings=settings)
    if kind in ("letter", "call"):
        page.targets.append(target)
        db_session.commit()
    path = f"/a/{page.slug}?utm_source=kidtest"
    token = csrf_token(client, f"/a/{page.slug}")
    fields = {**kid, **KIND_FIELDS[kind], "email_opt_in": "y", "csrf_token": token}

    response = client.post(path, data={**fields, "birth_year": str(YEAR - 12)})
    assert_kind_page(response)
    assert_only_the_flag_cookie(response)
    # Back, an older year, same browser: still the kind page, on this page and others.
    retry = client.post(path, data={**fields, "birth_year": ADULT_YEAR})
    assert_kind_page(retry)
    assert_kind_page(client.get(f"/a/{page.slug}"))

    assert db_session.scalar(select(func.count()).select_from(Action)) == 0
    assert_no_trace(app, client, all_logs, instance_dir, kid, [response, retry])
