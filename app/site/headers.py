"""Security headers on every response; nothing third-party is ever allowed to load."""

from __future__ import annotations

from flask import Flask, Response, request


def content_security_policy(frame_ancestors: str = "'none'") -> str:
    """Our CSP: only our own origin, and framing only by `frame_ancestors`."""
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            "connect-src 'self'",
            "form-action 'self'",
            f"frame-ancestors {frame_ancestors}",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


CSP = content_security_policy()
# The one page other sites may frame: /a/<slug>/embed (a card with no form; see its view).
EMBED_ENDPOINT = "actions.embed"


def register_security_headers(app: Flask) -> None:
    https = app.config["BASE_URL"].startswith("https://")
    # Who may frame embeds: "*" (any site) unless EMBED_FRAME_ANCESTORS lists origins.
    embed_csp = content_security_policy(app.config.get("EMBED_FRAME_ANCESTORS") or "*")

    @app.after_request
    def add_headers(response: Response) -> Response:
        if request.endpoint == EMBED_ENDPOINT and response.status_code == 200:
            response.headers.setdefault("Content-Security-Policy", embed_csp)
        else:
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        # Tokens in /u/ links must never leak to another site through Referer; our own
        # forms need it (Flask-WTF refuses an HTTPS POST without a same-origin Referer).
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Permissions-Policy", "camera=(), microphone=(), geolocation=(), interest-cohort=()"
        )
        response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
        if https:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        if request.path.startswith(("/u/", "/staff")) or request.method == "POST":
            response.headers["Cache-Control"] = "no-store"
        return response
