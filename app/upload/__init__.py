"""Photo upload page and the JSON analysis API."""
from flask import Blueprint

bp = Blueprint("upload", __name__)

from app.upload import api, routes  # noqa: E402,F401  (register views)
