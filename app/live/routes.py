"""Live page."""
from __future__ import annotations

from flask import render_template

from app.live import bp


@bp.get("/live")
def live():
    return render_template("live.html")
