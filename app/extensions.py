"""Extensions, created unbound here and bound in ``create_app``."""
from __future__ import annotations

import threading

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy

from app.vision.emotions import EmotionModel

socketio = SocketIO()
db = SQLAlchemy()
migrate = Migrate()
login_manager = LoginManager()
# Storage, limits and on/off come from the app's RATELIMIT_* settings.
limiter = Limiter(key_func=get_remote_address)

_models: dict[tuple[str, bool], EmotionModel] = {}
_models_lock = threading.Lock()


def load_model(path: str, tta: bool) -> EmotionModel:
    """The process-wide EmotionModel for ``path``: loaded and warmed up once."""
    key = (str(path), bool(tta))
    with _models_lock:
        if key not in _models:
            _models[key] = EmotionModel.load(path, tta=tta)
        return _models[key]
