"""Public supporter pages: sign-up, the preferences page, RFC 8058 one-click unsubscribe."""

from __future__ import annotations

from datetime import datetime

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from app.extensions import csrf, db, limiter
from app.site.age_gate import already_screened, screen_form
from app.supporters import service
from app.supporters.emails import typo_suggestion
from app.supporters.forms import ActionForm, NameForm, SignupForm, clean_text
from app.supporters.models import Supporter
from app.supporters.tasks import enqueue_welcome
from app.timeutil import utcnow

bp = Blueprint("supporters", __name__)


def signup_consent_text() -> str:
    """The words beside the sign-up button; stored verbatim in the consent ledger."""
    return (
        f"Sign me up for email from {current_app.config['ORG_NAME']} about campaigns and "
        "actions I can take. I can unsubscribe or take a break at any time."
    )


def _signup_rate_limit() -> str:
    return str(current_app.config["SIGNUP_RATE_LIMIT"])


@bp.route("/", methods=["GET"])
def home() -> Response | str:
    if (blocked := already_screened()) is not None:
        return blocked
    from app.actions.service import live_pages

    return render_template(
        "public/home.html",
        form=SignupForm(formdata=None),
        consent_text=signup_consent_text(),
        pages=live_pages(db.session, utcnow()),
    )


@bp.route("/signup", methods=["GET", "POST"])
@csrf.exempt  # the form validates its own CSRF token, after the age screen
@limiter.limit(_signup_rate_limit, methods=["POST"])
def signup() -> Response | str | tuple[str, int]:
    if request.method != "POST":  # GET, and HEAD (which Flask routes here too)
        if (blocked := already_screened()) is not None:
            return blocked
        return render_template(
            "public/signup.html", form=SignupForm(formdata=None), consent_text=signup_consent_text()
        )

    # Rule 3 first: a child's answers go no further than this line. It comes before the
    # form is even built, which would start a session (a CSRF token) for the child.
    screened = screen_form()
    if isinstance(screened, Response):
        return screened
    form = SignupForm()
    if form.is_bot():
        return render_template("public/thanks.html", first_name="")  # store nothing, say nothing
    valid = form.validate()
    age_error = screened.message if not screened.allowed else ""
    suggestion = None
    if valid and not age_error:
        address = form.email.normalised
        suggestion = typo_suggestion(address)
        if suggestion and form.email_checked.data != address:
            form.email_checked.data = address
        else:
            suggestion = None
            result = service.signup(
                db.session,
                service.SignupData(
                    address,
                    form.first_name.data or "",
                    form.last_name.data or "",
                    form.postal_code.data or "",
                    form.country.data or "",
                ),
                source=clean_text(request.args.get("source", ""))[:100] or "signup form",
                consent_text=signup_consent_text(),
                now=utcnow(),
            )
            db.session.commit()
            if result.created:
                enqueue_welcome(result.supporter.id)
            return render_template("public/thanks.html", first_name=result.supporter.first_name)
    template = "public/home.html" if request.form.get("from_home") else "public/signup.html"
    return render_template(
        template,
        form=form,
        age_error=age_error,
        suggestion=suggestion,
        consent_text=signup_consent_text(),
    ), 422


def _supporter_or_404(token: str) -> Supporter:
    supporter = service.supporter_for_token(db.session, current_app.config["SECRET_KEY"], token)
    if supporter is None:
        abort(404)
    return supporter


@bp.route("/u/<token>", methods=["GET", "POST"])
def preferences(token: str) -> Response | str | tuple[str, int]:
    supporter = _supporter_or_404(token)
    now = utcnow()
    actions, name_form = ActionForm(), NameForm(obj=supporter if request.method == "GET" else None)
    error = ""
    if request.method == "POST":
        source = "preferences page"
        try:
            if "first_name" in request.form:
                if name_form.validate_on_submit() and not name_form.is_bot():
                    service.update_name(
                        db.session,
                        supporter,
                        name_form.first_name.data or "",
                        name_form.last_name.data or "",
                        now,
                    )
                    db.session.commit()
                    return redirect(url_for(".preferences", token=token, done="name"), 303)
            elif actions.validate_on_submit():
                done = _apply_action(supporter, actions.action.data, actions.days.data, source, now)
                db.session.commit()
                return redirect(url_for(".preferences", token=token, done=done), 303)
            else:
                error = "This page had expired. Please try again."
        except service.SupporterError as exc:
            db.session.rollback()
            error = str(exc)
    from app.actions.events import upcoming_rsvps

    return render_template(
        "public/preferences.html",
        supporter=supporter,
        token=token,
        form=actions,
        name_form=name_form,
        state=service.email_state(supporter, now),
        error=error,
        done=request.args.get("done", ""),
        snooze_choices=service.SNOOZE_CHOICES,
        events=upcoming_rsvps(db.session, supporter, now),  # "Your events", with cancel buttons
    ), (422 if error or name_form.errors else 200)


def _apply_action(
    supporter: Supporter, action: str | None, days: str | None, source: str, now: datetime
) -> str:
    if action == "unsubscribe":
        service.unsubscribe(db.session, supporter, source, now)
        return "unsubscribed"
    if action == "snooze":
        try:
            n = int(days or "")
        except ValueError:
            n = 0
        service.snooze(db.session, supporter, n, source, now)
        return f"snoozed-{n}"
    if action == "resubscribe":
        service.resubscribe(
            db.session, supporter, source, "Resubscribed on the preferences page.", now
        )
        return "resubscribed"
    raise service.SupporterError("Please choose one of the buttons on this page.")


@bp.route("/u/<token>/one-click", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058: mail clients post without cookies or a token
def one_click(token: str) -> Response | str:
    supporter = _supporter_or_404(token)
    if request.method != "POST":  # GET, and HEAD (which Flask routes here too)
        # Link scanners fetch URLs: a GET never changes anything, it offers the button.
        return render_template("public/one_click.html", token=token, done=False)
    if request.form.get("List-Unsubscribe") != "One-Click":
        # A person pressing our own button sends the same value; anything else is a mistake.
        return make_response(
            render_template("public/one_click.html", token=token, done=False, error=True), 400
        )
    service.unsubscribe(db.session, supporter, "one-click unsubscribe (RFC 8058)", utcnow())
    db.session.commit()
    return render_template("public/one_click.html", token=token, done=True)
