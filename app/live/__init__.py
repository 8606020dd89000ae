"""The live page and its Socket.IO stream."""
from flask import Blueprint

bp = Blueprint("live", __name__)

from app.live import events, routes  # noqa: E402,F401  (register views and handlers)
