"""Front-end libraries installed with npm (package.json), served from node_modules.

Only the files listed here are reachable; the app works offline.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, abort, send_from_directory

from app.config import ROOT

bp = Blueprint("vendor", __name__)

NODE_MODULES = ROOT / "node_modules"
FILES = {
    # Pages import the UMD build through static/js/socket.js: the ESM build of
    # socket.io-client 4.8.x cannot send binary events (socketio/socket.io#5215).
    "socket.io.min.js": "socket.io-client/dist/socket.io.min.js",
    "chart.umd.min.js": "chart.js/dist/chart.umd.min.js",
}


def missing() -> list[str]:
    """Vendored files that are not installed (run ``npm ci``)."""
    return [name for name, rel in FILES.items() if not (NODE_MODULES / rel).is_file()]


@bp.get("/vendor/<name>")
def vendor(name: str):
    rel = FILES.get(name)
    if rel is None:
        abort(404)
    path = Path(NODE_MODULES / rel)
    if not path.is_file():
        abort(404, description=f"{name} is not installed: run 'npm ci' in the project folder")
    return send_from_directory(path.parent, path.name, max_age=3600)
