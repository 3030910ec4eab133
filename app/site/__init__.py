"""Site-wide pieces: privacy and health pages, error pages, security headers, template helpers."""

from __future__ import annotations

from flask import Flask

from app.site.errors import register_error_handlers
from app.site.headers import register_security_headers
from app.site.views import bp


def register_site(app: Flask) -> None:
    app.register_blueprint(bp)
    register_error_handlers(app)
    register_security_headers(app)

    @app.context_processor
    def org_context() -> dict[str, str]:
        return {
            "org_name": app.config["ORG_NAME"],
            "org_postal_address": app.config["ORG_POSTAL_ADDRESS"],
        }
