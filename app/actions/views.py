"""Public action pages: /a/<slug>, its thank-you page with share links."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from itsdangerous import BadSignature, URLSafeSerializer

from app.actions import service
from app.actions.forms import ActionForm, ConfirmActionForm, check_kind_fields, letter_limits
from app.actions.models import ActionPage, PageKind, PageStatus
from app.actions.tasks import after_action_committed
from app.extensions import csrf, db, limiter
from app.site.age_gate import already_screened, screen_form
from app.supporters import service as supporters
from app.supporters.emails import typo_suggestion
from app.supporters.models import Supporter
from app.timeutil import utcnow

bp = Blueprint("actions", __name__)


def _rate_limit() -> str:
    return str(current_app.config["SIGNUP_RATE_LIMIT"])


def _thanks_serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="groundswell.action-thanks")


def _live_page_or_404(slug: str) -> ActionPage:
    page = service.page_by_slug(db.session, slug)
    if page is None or page.status == PageStatus.DRAFT:
        abort(404)
    return page


def _recognised(token: str | None) -> Supporter | None:
    if not token:
        return None
    return supporters.supporter_for_token(db.session, current_app.config["SECRET_KEY"], token)


def _attribution() -> service.Attribution:
    """From the page URL (kept on the form's action) and the hidden `via` field."""
    mid = request.args.get("mid", "")
    utm = {k: request.args[k][:100] for k in service.UTM_KEYS if request.args.get(k)}
    return service.Attribution(
        mailing_id=int(mid) if mid.isdigit() and len(mid) < 10 else None,
        referral_code=request.args.get("ref", "")[:16],
        utm=utm,
        referrer_host=request.form.get("via", "")[:200],
    )


def _external_referrer_host() -> str:
    """The host of the page that linked here, if it is another site (never the full URL)."""
    host = urlsplit(request.headers.get("Referer", "")).hostname or ""
    return "" if host in ("", request.host.split(":")[0]) else host


def page_context(page: ActionPage) -> dict[str, object]:
    """What the public page template needs about the page, for visitors and staff preview."""
    editable, max_length = letter_limits(page.settings)
    kind_context: dict[str, object] = {}
    if page.kind == PageKind.EVENT:
        from app.actions import events

        kind_context = events.public_context(db.session, page)
    return {
        "page": page,
        "body_html": service.render_markdown(page.body_md),
        "count": service.action_count(db.session, page),
        "signers": service.recent_public_signers(db.session, page)
        if page.kind == PageKind.PETITION
        else [],
        "targets": page.targets,
        "letter_editable": editable,
        "letter_max_length": max_length,
        "call_script_html": service.render_markdown(str(page.settings.get("call_script", ""))),
        "kind_context": kind_context,
    }


def blank_form(page: ActionPage) -> ActionForm:
    """The empty action form, with the page's opt-in default and letter text."""
    form = ActionForm(formdata=None)
    form.email_opt_in.data = page.opt_in_default
    if page.kind == PageKind.LETTER:
        form.letter_subject.data = page.settings.get("letter_subject", "")
        form.letter_body.data = page.settings.get("letter_body", "")
    return form


def _render(page: ActionPage, form: object, status: int = 200, **extra: object) -> tuple[str, int]:
    return render_template(
        "public/action_page.html",
        form=form,
        via=_external_referrer_host(),
        **page_context(page),
        **extra,
    ), status


@bp.route("/a/<slug>", methods=["GET", "POST"])
@csrf.exempt  # the forms check their own CSRF token, after the age screen
@limiter.limit(_rate_limit, methods=["POST"])
def action_page(slug: str) -> Response | str | tuple[str, int]:
    page = _live_page_or_404(slug)
    now = utcnow()
    if not service.is_open(page, now):
        return render_template("public/action_closed.html", page=page), 200
    supporter = _recognised(request.values.get("t"))

    if request.method != "POST":
        if supporter is not None:
            form = ConfirmActionForm(formdata=None, data={"t": request.args.get("t")})
            form.email_opt_in.data = page.opt_in_default
            return _render(page, form, recognised=True)
        if (blocked := already_screened()) is not None:
            return blocked
        return _render(page, blank_form(page))

    if supporter is not None:
        return _confirm_as_supporter(page, supporter, now)
    # Rule 3 before anything else: a child's answers go no further than this line.
    screened = screen_form()
    if isinstance(screened, Response):
        return screened
    form = ActionForm()
    if form.is_bot():
        return render_template("public/thanks.html", first_name="")
    valid = form.validate()
    kind_ok = check_kind_fields(form, page.kind, page.settings)
    age_error = "" if screened.allowed else screened.message
    suggestion = None
    if valid and kind_ok and not age_error:
        address = form.email.normalised
        suggestion = typo_suggestion(address)
        if suggestion and form.email_checked.data != address:
            form.email_checked.data = address
        else:
            person = supporters.SignupData(
                address,
                form.first_name.data or "",
                form.last_name.data or "",
                form.postal_code.data or "",
                form.country.data or "",
            )
            return _act(page, form, person, now)
    return _render(page, form, 422, age_error=age_error, suggestion=suggestion)


def _confirm_as_supporter(
    page: ActionPage, supporter: Supporter, now: object
) -> Response | str | tuple[str, int]:
    form = ConfirmActionForm()
    if form.is_bot():
        return render_template("public/thanks.html", first_name="")
    valid = form.validate()
    if check_kind_fields(form, page.kind, page.settings) and valid:
        return _act(page, form, supporter, now)
    return _render(page, form, 422, recognised=True)


def _act(
    page: ActionPage,
    form: ActionForm | ConfirmActionForm,
    person: supporters.SignupData | Supporter,
    now: object,
) -> Response | tuple[str, int]:
    target_id = form.call_target_id.data or ""
    details = service.ActionDetails(
        comment=(form.comment.data or "").strip(),
        show_publicly=bool(form.show_publicly.data),
        town=form.town.data or "",
        letter_subject=(form.letter_subject.data or "").strip(),
        letter_body=(form.letter_body.data or "").strip(),
        call_outcome=form.call_outcome.data or "",
        call_target_id=int(target_id) if target_id.isdigit() else None,
    )
    try:
        result = service.take_action(
            db.session,
            page,
            person,
            bool(form.email_opt_in.data),
            details,
            _attribution(),
            utcnow(),
        )
    except service.ActionError as exc:
        db.session.rollback()
        return _render(page, form, 422, action_error=str(exc))
    token = _thanks_serializer().dumps(result.action.id)
    db.session.commit()
    after_action_committed(result)
    return redirect(url_for(".thanks", slug=page.slug, token=token), 303)


@bp.get("/a/<slug>/thanks/<token>")
def thanks(slug: str, token: str) -> str:
    page = _live_page_or_404(slug)
    try:
        action_id = _thanks_serializer().loads(token)
    except BadSignature:
        abort(404)
    action = db.session.get(service.Action, action_id) if isinstance(action_id, int) else None
    if action is None or action.page_id != page.id:
        abort(404)
    code = service.referral_code_for(db.session, action.supporter)
    db.session.commit()
    share_url = current_app.config["BASE_URL"] + url_for(".action_page", slug=page.slug, ref=code)
    return render_template(
        "public/action_thanks.html",
        page=page,
        thank_you_html=service.render_markdown(page.thank_you_md),
        share=share_links(page, share_url),
        share_url=share_url,
        next_page=page.next_page
        if page.next_page and page.next_page.status == PageStatus.LIVE
        else None,
        extra=_thanks_extra(page, action),
    )


def _thanks_extra(page: ActionPage, action: service.Action) -> dict[str, object]:
    if page.kind == PageKind.LETTER:
        from app.actions import letters

        return letters.thanks_context(db.session, page, action)
    if page.kind == PageKind.EVENT:
        from app.actions import events

        return events.thanks_context(db.session, page, action)
    return {}


def share_links(page: ActionPage, url: str) -> list[tuple[str, str]]:
    """(label, href) for each way of sharing; all but email and copy leave the site."""
    text = page.share_text or page.title
    tag = page.hashtag.lstrip("#")
    return [
        ("Email", "mailto:?" + urlencode({"subject": page.title, "body": f"{text}\n\n{url}"})),
        (
            "X",
            "https://twitter.com/intent/tweet?"
            + urlencode({"text": text, "url": url, **({"hashtags": tag} if tag else {})}),
        ),
        ("Facebook", "https://www.facebook.com/sharer/sharer.php?" + urlencode({"u": url})),
        ("WhatsApp", "https://wa.me/?" + urlencode({"text": f"{text} {url}"})),
    ]


@bp.get("/a/<slug>/embed")
def embed(slug: str) -> str:
    """A small card for other sites to frame: title, progress and a link to the full page.

    Deliberately no form. Our session cookie is SameSite=Lax, so a browser does not
    send it with a POST from inside a third-party iframe (nor with a cross-site
    top-level POST), and the CSRF check and the age screen, which both live in the
    session, could not work there. Prefilling the full page through the URL would
    put personal data in links and logs. So the card links to /a/<slug> in the top
    window, where the normal form, age screen, CSRF token and honeypot all apply.
    Campaign parameters on the iframe's own address are passed on, marked as embed.
    """
    page = _live_page_or_404(slug)
    utm = {k: request.args[k][:100] for k in service.UTM_KEYS if request.args.get(k)}
    utm["utm_medium"] = "embed"
    next_page = page.next_page
    return render_template(
        "public/action_embed.html",
        page=page,
        open_now=service.is_open(page, utcnow()),
        count=service.action_count(db.session, page),
        action_url=url_for(".action_page", slug=page.slug, **utm),
        next_page=next_page if next_page and service.is_open(next_page, utcnow()) else None,
    )


@bp.get("/media/<name>")
def media(name: str) -> Response:
    """Share images staff uploaded (instance/uploads); names are ours, never a path."""
    if not name.replace("-", "").replace(".", "").isalnum():
        abort(404)
    response = send_from_directory(
        service.uploads_dir(current_app.instance_path), name, max_age=86400
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
