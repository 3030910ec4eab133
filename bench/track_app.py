"""Bench-only WSGI app for bench/track.py: the product, plus one bare endpoint.

    gunicorn --chdir bench track_app:app

`/bare.gif` answers the same 43-byte pixel with the same headers as `/o/<token>.gif`,
with no token check and no database work: the ceiling the tracking routes are measured
against, served by the same workers. It exists only here, never in the product.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Response

from app import create_app
from app.mailings.tracking_views import pixel_response

app = create_app()


@app.get("/bare.gif")
def bare() -> Response:
    return pixel_response()
