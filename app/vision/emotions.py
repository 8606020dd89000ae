"""EmotionModel: load the model once, predict every face of a frame in one batch.

Two kinds of model file serve:

- ``.keras`` (float32): inference goes through a compiled ``tf.function`` fed
  with batches padded to a few fixed sizes, all traced at start-up, so the hot
  path never retraces. Each traced graph is frozen (its weights become
  constants), which lets oneDNN lay out the convolution kernels once instead
  of on every call.
- ``.tflite`` (the int8 copy ``app.training.quantize`` makes of a ``.keras``
  model, which the server ships): the LiteRT (TensorFlow Lite) interpreter
  with XNNPACK, from the ``ai-edge-litert`` package, so that a server of the
  shipped model never imports TensorFlow (seconds of start-up and about
  500 MiB per process); interpreters sized and allocated for each batch size
  at start-up (as many per size as there are cores for them, so concurrent
  calls run side by side; more if more calls come at once).
With ``tta=True`` each face is classified in the two views of
``preprocess.tta_views`` (a slight zoom-in and its mirror) and the
probabilities are averaged; the shipped model is calibrated for that.
"""
from __future__ import annotations

import logging
import os
import sys
from collections import deque
from pathlib import Path

import numpy as np

from app.vision.preprocess import EMOTIONS, INPUT_SIZE, TTA_VIEWS, tta_views

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger("moodlens.vision")

BATCH_SIZES = (1, 2, 4, 8, 16, 32)
# For the offline tools (evaluation, model cards, comparisons): whole data sets go through in batches of the
# largest size, and one face's test-time views (the model card's timed call) through the same function as on
# the server; compiling only these two halves the cost of loading a .keras model.
BULK_BATCH_SIZES = (len(TTA_VIEWS), BATCH_SIZES[-1])


# Threads one op may use (0: one per core), as ``set_op_threads`` last set it; None: never set.
_op_threads: int | None = None


def set_op_threads(n: int) -> bool:
    """Let each op of a model call use ``n`` threads (0: one per core).

    LiteRT interpreters made from now on take it. TensorFlow (a ``.keras``
    model) takes it only before its first op in this process: applied at once
    when TensorFlow is loaded already, else when a ``.keras`` model loads it.
    Returns False (and changes nothing) when TensorFlow already runs with
    another setting.
    """
    global _op_threads
    if "tensorflow" in sys.modules and not _tensorflow_op_threads(n):
        return False
    _op_threads = n
    return True


def _tensorflow_op_threads(n: int) -> bool:
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


def _check_shapes(in_shape, out_shape, path: str | None) -> None:
    in_shape, out_shape = (tuple(None if d is None else int(d) for d in shape) for shape in (in_shape, out_shape))
    if in_shape != (INPUT_SIZE, INPUT_SIZE, 1) or out_shape != (len(EMOTIONS),):
        raise ModelLoadError(
            f"model {path or ''} takes {in_shape} and gives {out_shape}; "
            f"expected ({INPUT_SIZE}, {INPUT_SIZE}, 1) -> ({len(EMOTIONS)},)"
        )


def frozen_forward(keras_model, batch: int | None):
    """The model's inference pass as a concrete function for ``batch`` faces (None: any), weights as constants."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((batch, INPUT_SIZE, INPUT_SIZE, 1), tf.float32)
    forward = tf.function(lambda face: keras_model(face, training=False))
    return convert_variables_to_constants_v2(forward.get_concrete_function(spec))


def tflite_interpreter(content: bytes, num_threads: int | None = None):
    """A LiteRT (TensorFlow Lite) interpreter, XNNPACK on CPU, for a model's bytes."""
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content, num_threads=num_threads)


class _TfliteRunner:
    """Interpreters sized for one batch size, each lent to one call at a time.

    An interpreter runs one call at a time (and releases the GIL while it
    runs). ``copies`` are made at start-up; a call that finds none idle makes
    another, so the pool holds as many as were ever in use at once. No lock,
    as in ``app.vision.pipeline.DetectorPool``: ``deque.append`` and
    ``deque.pop`` are atomic in native and green threads alike (under eventlet,
    predictions run in native pool threads while ``threading.Lock`` and
    ``queue`` are green).
    """

    def __init__(self, content: bytes, size: int, num_threads: int | None, copies: int, path: str | None):
        self._make = lambda: self._interpreter(content, size, num_threads, path)
        self._idle: deque = deque(self._make() for _ in range(copies))

    @staticmethod
    def _interpreter(content: bytes, size: int, num_threads: int | None, path: str | None):
        try:
            interpreter = tflite_interpreter(content, num_threads)
            (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
        except ValueError as exc:  # not a TensorFlow Lite flatbuffer, or more than one input/output
            raise ModelLoadError(f"emotion model {path} is unreadable: {exc}") from exc
        _check_shapes(inp["shape_signature"][1:], out["shape_signature"][1:], path)
        if inp["dtype"] != np.float32 or out["dtype"] != np.float32:
            raise ModelLoadError(f"model {path} takes {inp['dtype'].__name__} and gives {out['dtype'].__name__}; "
                                 "expected float32 in and out (app.training.quantize keeps them float)")
        try:
            interpreter.resize_tensor_input(inp["index"], [size, INPUT_SIZE, INPUT_SIZE, 1])
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"emotion model {path} cannot take a batch of {size}: {exc}") from exc
        return interpreter, inp["index"], out["index"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        try:
            held = self._idle.pop()
        except IndexError:  # every interpreter of this size is busy
            held = self._make()
        try:
            interpreter, inp, out = held
            interpreter.set_tensor(inp, batch)
            interpreter.invoke()  # releases the GIL while it runs
            return interpreter.get_tensor(out)  # a copy
        finally:
            self._idle.append(held)


class EmotionModel:
    """A preloaded, warmed-up emotion classifier (thread-safe).

    ``backend`` says which runtime serves it: ``"tensorflow"`` (a ``.keras``
    model) or ``"tflite"``; ``keras_model`` is the Keras model, or None for
    a ``.tflite`` file.
    """

    def __init__(self, keras_model, tta: bool = True, batch_sizes=BATCH_SIZES, path: str | None = None):
        import tensorflow as tf

        _check_shapes(keras_model.input_shape[1:], keras_model.output_shape[1:], path)

        def compiled(size: int):
            frozen = frozen_forward(keras_model, size)
            # A frozen function takes only flat inputs: called directly, each call first fails to bind its
            # argument and formats the whole input tensor into the error text (about 2 ms, holding the GIL).
            # Wrapped in a function with a signature, the argument binds and the graph is the same.
            spec = tf.TensorSpec((size, INPUT_SIZE, INPUT_SIZE, 1), tf.float32)
            return tf.function(lambda x: frozen(x), input_signature=[spec]).get_concrete_function()

        # One frozen concrete function per batch size, traced now: the hot path never retraces.
        self._fns = {size: compiled(size) for size in sorted(batch_sizes)}
        self._serve("tensorflow", keras_model, {size: self._graph_runner(fn) for size, fn in self._fns.items()},
                    tta, path)

    def _serve(self, backend: str, keras_model, runners: dict, tta: bool, path: str | None) -> None:
        """Set what both runtimes share, then warm every batch size up."""
        self.backend = backend
        self.keras_model = keras_model
        self.path = path
        self.tta = tta
        self.batch_sizes = tuple(sorted(runners))
        self.labels = EMOTIONS
        self._runners = runners
        self.warm_up()

    @staticmethod
    def _graph_runner(fn):
        import tensorflow as tf

        def run(batch: np.ndarray) -> np.ndarray:
            (probs,) = fn(tf.constant(batch))
            return probs.numpy()

        return run

    @classmethod
    def from_tflite(cls, content: bytes, tta: bool = True, batch_sizes=BATCH_SIZES,
                    path: str | None = None) -> "EmotionModel":
        """Serve a TensorFlow Lite model (float32 faces in, probabilities out), e.g. the int8 copy.

        Each op runs on the threads-per-op setting (``set_op_threads``; 0 or never set: one per core), and
        each batch size starts with as many interpreters as that leaves cores, so concurrent calls run side by
        side (more are made if more calls come at once).
        """
        cores = os.cpu_count() or 1
        threads = _op_threads or cores
        copies = max(1, cores // threads)  # enough interpreters to keep every core busy
        self = cls.__new__(cls)
        self._serve("tflite", None, {size: _TfliteRunner(content, size, threads, copies, path)
                                     for size in sorted(batch_sizes)}, tta, path)
        return self

    @classmethod
    def load(cls, path: str | os.PathLike, tta: bool = True, batch_sizes=BATCH_SIZES) -> "EmotionModel":
        """Load a ``.keras`` or ``.tflite`` file, ready for ``batch_sizes``; raises ModelLoadError with a clear
        message."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"emotion model not found: {path} (set MODEL_PATH to a .keras or .tflite file)")
        if path.stat().st_size == 0:
            raise ModelLoadError(f"emotion model {path} is empty (0 bytes): a copy or download cut short? "
                                 "MoodLens ships models/emotion.int8.tflite")
        if path.suffix == ".tflite":
            try:
                content = path.read_bytes()
            except OSError as exc:
                raise ModelLoadError(f"emotion model {path} is unreadable: {exc}") from exc
            return cls.from_tflite(content, tta=tta, batch_sizes=batch_sizes, path=str(path))
        # A threads-per-op setting made before TensorFlow was loaded applies now, before a TensorFlow op runs.
        if _op_threads is not None and not _tensorflow_op_threads(_op_threads):
            log.warning("%s threads per op not applied: TensorFlow was already running in this process", _op_threads)
        import keras

        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # any reader failure means the same thing to the caller
            raise ModelLoadError(f"emotion model {path} is unreadable: {exc}") from exc
        return cls(model, tta=tta, batch_sizes=batch_sizes, path=str(path))

    def warm_up(self) -> None:
        """Run each batch size once (a first call pays for tracing, allocation, kernel packing)."""
        for size in self.batch_sizes:
            self._run(np.zeros((size, INPUT_SIZE, INPUT_SIZE, 1), np.float32))

    def _run(self, batch: np.ndarray) -> np.ndarray:
        return self._runners[len(batch)](batch)

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
