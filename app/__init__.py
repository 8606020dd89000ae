"""MoodLens: real-time facial emotion recognition in the browser."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported inside create_app: ``python -m app`` must monkey-patch first
    from flask import Flask


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings from the environment, overridden by ``config``.

    Loads and warms up the emotion model (once per process); raises
    ``ModelLoadError`` or ``ConfigError`` with a clear message when it cannot.
    """
    from flask import Flask

    from app import classroom, errors, logging_setup, main, security, vendor
    from app.classroom.cluster import queue_options
    from app.config import Config, finalize
    from app.extensions import load_model, socketio
    from app.live import bp as live_bp
    from app.live import events as live_events
    from app.live import transport as live_transport
    from app.upload import bp as upload_bp
    from app.vision.emotions import set_op_threads
    from app.vision.images import follow_pixel_limit

    settings = Config.from_env()
    settings.update(config or {})
    settings = finalize(settings)

    app = Flask(__name__, instance_relative_config=True, instance_path=settings.get("INSTANCE_PATH"),
                template_folder="../templates", static_folder="../static")
    app.config.update(settings)
    app.json.sort_keys = False  # keep emotions in label order
    logging_setup.init_app(app)

    if not set_op_threads(app.config["TF_INTRA_OP_THREADS"]):
        app.logger.warning("TF_INTRA_OP_THREADS=%s not applied: TensorFlow was already running in this process",
                           app.config["TF_INTRA_OP_THREADS"])
    app.extensions["emotion_model"] = load_model(app.config["MODEL_PATH"], app.config["MODEL_TTA"])
    follow_pixel_limit(max(app.config["MAX_IMAGE_PIXELS"], app.config["MAX_FRAME_PIXELS"]))

    socketio.init_app(
        app,
        async_mode=app.config["ASYNC_MODE"],
        # Redis: every publish bounded (a hung Redis must not hold each emit for seconds); see cluster.py.
        **queue_options(app.config["SOCKETIO_MESSAGE_QUEUE"]),
        cors_allowed_origins=app.config["CORS_ALLOWED_ORIGINS"],
        max_http_buffer_size=app.config["MAX_FRAME_BYTES"] + 4096,
        # Handlers run on the connection's own reading thread: they are quick (the frame handler
        # hands analyses to a background task), and a flood of frames then starts no thread per frame.
        async_handlers=False,
    )
    live_events.install(app)
    live_transport.install(socketio)
    live_transport.limit_attachments(socketio)
    errors.init_app(app)
    security.init_app(app)  # headers; behind TRUSTED_PROXIES proxies, the client's address and scheme
    app.register_blueprint(main.bp)
    app.register_blueprint(vendor.bp)
    app.register_blueprint(live_bp)
    app.register_blueprint(upload_bp)
    classroom.init_app(app)
    if vendor.missing():
        app.logger.warning("front-end libraries missing (%s): run 'npm ci'", ", ".join(vendor.missing()))
    app.logger.info("MoodLens ready: model %s, async mode %s", app.config["MODEL_PATH"], app.config["ASYNC_MODE"])
    return app
