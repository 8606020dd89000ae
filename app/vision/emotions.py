"""EmotionModel: load the Keras model once, predict every face of a frame in one batch.

Inference goes through a compiled ``tf.function`` fed with batches padded to a
few fixed sizes, all traced at start-up, so the hot path never retraces. Each
traced graph is frozen (its weights become constants), which lets oneDNN lay
out the convolution kernels once instead of on every call.
With ``tta=True`` each face is classified in the two views of
``preprocess.tta_views`` (a slight zoom-in and its mirror) and the
probabilities are averaged; the shipped model is calibrated for that.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from app.vision.preprocess import EMOTIONS, INPUT_SIZE, tta_views

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCH_SIZES = (1, 2, 4, 8, 16, 32)


def set_op_threads(n: int) -> bool:
    """Let each TensorFlow op use ``n`` threads (0: TensorFlow's default, one per core).

    Takes effect only before TensorFlow's first op in this process; after it
    the setting is fixed: returns False (and changes nothing) when it differs.
    """
    import tensorflow as tf

    if tf.config.threading.get_intra_op_parallelism_threads() == n:
        return True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
    except RuntimeError:  # TensorFlow is already running in this process
        return False
    return True


class ModelLoadError(RuntimeError):
    """The model file is missing, unreadable or of the wrong shape."""


class EmotionModel:
    """A preloaded, warmed-up emotion classifier (thread-safe)."""

    def __init__(self, keras_model, tta: bool = True, batch_sizes=BATCH_SIZES, path: str | None = None):
        import tensorflow as tf

        in_shape = tuple(keras_model.input_shape[1:])
        out_shape = tuple(keras_model.output_shape[1:])
        if in_shape != (INPUT_SIZE, INPUT_SIZE, 1) or out_shape != (len(EMOTIONS),):
            raise ModelLoadError(
                f"model {path or ''} takes {in_shape} and gives {out_shape}; "
                f"expected ({INPUT_SIZE}, {INPUT_SIZE}, 1) -> ({len(EMOTIONS)},)"
            )
        self.keras_model = keras_model
        self.path = path
        self.tta = tta
        self.batch_sizes = tuple(sorted(batch_sizes))
        self.labels = EMOTIONS
        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        fn = tf.function(lambda x: keras_model(x, training=False))

        def compiled(size: int):
            spec = tf.TensorSpec((size, INPUT_SIZE, INPUT_SIZE, 1), tf.float32)
            frozen = convert_variables_to_constants_v2(fn.get_concrete_function(spec))
            # A frozen function takes only flat inputs: called directly, each call first fails to bind its
            # argument and formats the whole input tensor into the error text (about 2 ms, holding the GIL).
            # Wrapped in a function with a signature, the argument binds and the graph is the same.
            return tf.function(lambda x: frozen(x), input_signature=[spec]).get_concrete_function()

        # One frozen concrete function per batch size, traced now: the hot path never retraces.
        self._fns = {size: compiled(size) for size in self.batch_sizes}
        self.warm_up()

    @classmethod
    def load(cls, path: str | os.PathLike, tta: bool = True) -> "EmotionModel":
        """Load a ``.keras`` file; raises ModelLoadError with a clear message."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"emotion model not found: {path} (set MODEL_PATH to a .keras file)")
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # any reader failure means the same thing to the caller
            raise ModelLoadError(f"emotion model {path} is unreadable: {exc}") from exc
        return cls(model, tta=tta, path=str(path))

    def warm_up(self) -> None:
        """Trace the compiled function once per batch size."""
        for size in self.batch_sizes:
            self._run(np.zeros((size, INPUT_SIZE, INPUT_SIZE, 1), np.float32))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        import tensorflow as tf

        (probs,) = self._fns[len(batch)](tf.constant(batch))
        return probs.numpy()

    def _bucket(self, n: int) -> int:
        for size in self.batch_sizes:
            if n <= size:
                return size
        return self.batch_sizes[-1]

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Probabilities (N, 7) for faces (N, 48, 48, 1) float32 in [0, 1]."""
        faces = np.asarray(faces, np.float32)
        n = len(faces)
        if n == 0:
            return np.zeros((0, len(EMOTIONS)), np.float32)
        views = np.concatenate(tta_views(faces)) if self.tta else faces
        out = np.empty((len(views), len(EMOTIONS)), np.float32)
        step = self.batch_sizes[-1]
        for start in range(0, len(views), step):
            chunk = views[start:start + step]
            size = self._bucket(len(chunk))
            padded = np.zeros((size, INPUT_SIZE, INPUT_SIZE, 1), np.float32)
            padded[: len(chunk)] = chunk
            out[start:start + len(chunk)] = self._run(padded)[: len(chunk)]
        return out.reshape(-1, n, len(EMOTIONS)).mean(axis=0)

    def scores(self, probs_row: np.ndarray) -> dict[str, float]:
        """One probability row as ``{emotion: probability}``."""
        return {label: round(float(p), 4) for label, p in zip(self.labels, probs_row)}
