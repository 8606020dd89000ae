"""Extensions, created unbound here and bound in ``create_app``."""
from __future__ import annotations

import threading

from flask_socketio import SocketIO

from app.vision.emotions import EmotionModel

socketio = SocketIO()

_models: dict[tuple[str, bool], EmotionModel] = {}
_models_lock = threading.Lock()


def load_model(path: str, tta: bool) -> EmotionModel:
    """The process-wide EmotionModel for ``path``: loaded and warmed up once."""
    key = (str(path), bool(tta))
    with _models_lock:
        if key not in _models:
            _models[key] = EmotionModel.load(path, tta=tta)
        return _models[key]
