"""Bench-only WSGI app for bench/track.py: the product, plus one bare endpoint.

    gunicorn --chdir bench track_app:app

`/bare.gif` answers the same 43-byte pixel with the same headers as `/o/<token>.gif`,
with no token check and no database work: the ceiling the tracking routes are measured
against, served by the same workers. It exists only here, never in the product.

TRACKING_WRITE_MODE comes from the environment variable of that name (bench/track.py
--mode); until app/config.py reads it, the product's default applies otherwise.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Response

from app import create_app
from app.mailings.tracking_views import pixel_response

app = create_app()
if mode := os.environ.get("TRACKING_WRITE_MODE"):
    app.config["TRACKING_WRITE_MODE"] = mode


@app.get("/bare.gif")
def bare() -> Response:
    return pixel_response()
