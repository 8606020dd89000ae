"""The model card: what a trained model is, how it was made and how well it does.

``write_card`` runs at the end of ``app.training.train`` and writes
``models/NAME.json`` next to ``models/NAME.keras``; to write it again for a
finished run (same data, same run folder)::

    python -m app.training.card models/emotion.keras [--run-dir runs/emotion]
 Every figure is measured
through ``EmotionModel`` (with its test-time views), i.e. on what the server serves. An
optional piece that cannot be measured becomes ``null`` and says why in
``notes``; writing the card never fails a finished training run.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from app import hardware
from app.training.data import Split, load_dataset, read_record, stratified_sample
from app.training.evaluate import evaluate, training_log_path, view_logits
from app.training.metrics import expected_calibration_error, softmax, summarize
from app.vision.emotions import BULK_BATCH_SIZES, EmotionModel
from app.vision.preprocess import EMOTIONS, INPUT_SIZE, TTA_VIEWS, ZOOM_CROP

REGRESSION_SAMPLE = {"seed": 2013, "n": 700}
RUNTIMES = {"tensorflow": "compiled tf.function", "tflite": "LiteRT (TensorFlow Lite) interpreter, XNNPACK"}
TIMING_CALLS = 300
PREPROCESSING = (
    "app.vision.preprocess.prepare_face: crop the face box from the frame, convert to 8-bit "
    "grayscale, resize to 48x48 (cv2.INTER_AREA when shrinking, INTER_LINEAR when enlarging), "
    "scale to float32 in [0, 1]; FER-2013 images are already 48x48 face crops"
)
HYPERPARAMETERS = ("epochs", "batch_size", "optimizer", "momentum", "lr", "warmup_epochs", "weight_decay",
                   "label_smoothing", "augment", "mixup", "cutmix", "distill_weight", "sam", "val_split", "limit",
                   "precision", "seed")
# Runs recorded before ``--optimizer``, ``--mixup``, ``--cutmix``, ``--distill`` and ``--sam`` existed all trained
# with AdamW, mixed no faces, had no teacher and took plain gradient steps.
HYPERPARAMETER_DEFAULTS = {"optimizer": "adamw", "mixup": 0.0, "cutmix": 0.0, "distill": [], "sam": 0.0}


def hyperparameters(args: dict) -> dict:
    """The run's hyper-parameters; momentum only where the optimizer used it (SGD), the distillation
    weight only where there were teachers."""
    record = {k: args.get(k, HYPERPARAMETER_DEFAULTS.get(k)) for k in HYPERPARAMETERS}
    if record["optimizer"] != "sgd":
        record.pop("momentum")
    if not args.get("distill"):
        record.pop("distill_weight")
    return record


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pixel_hashes(x: np.ndarray) -> list[bytes]:
    """One digest per image of its 8-bit pixels (exact duplicates share it)."""
    pixels = np.rint(np.asarray(x) * 255.0).astype(np.uint8)
    return [hashlib.blake2b(img.tobytes(), digest_size=16).digest() for img in pixels]


def _evaluated_on(args: dict) -> str:
    if not args.get("n_val"):
        return "training data (the run had no validation split)"
    if args.get("val_split"):
        return f"stratified {args['val_split']:g} hold-out of the training data"
    return "PublicTest"


def _uncalibrated(keras_model, split: Split, temperature: float) -> np.ndarray:
    """Served (view-averaged) probabilities with the folded temperature undone."""
    # The shipped logits layer computes z / T; multiplying by T gives back z.
    return np.mean([softmax(v * temperature) for v in view_logits(keras_model, split.x)], axis=0)


def _calibration(model: EmotionModel, split: Split, state: dict, after: dict) -> dict:
    temperature = state.get("temperature")
    if temperature is None:
        raise ValueError("state has no temperature (the model was not calibrated)")
    before = _uncalibrated(model.keras_model, split, float(temperature))
    nll = -np.log(np.clip(before[np.arange(len(split)), split.y], 1e-12, 1.0)).mean()
    fitted = state.get("calibration") or {}
    objective = fitted.get("objective", "nll")
    goal = "the 15-bin ECE (ties: the lower NLL)" if objective == "ece" else "the NLL"
    return {
        "temperature": float(temperature),
        "method": f"temperature scaling minimising {goal} on the validation split (the served views), "
                  "folded into the logits layer",
        "objective": objective,
        "cross_validated": fitted.get("cross_validated"),
        "ece_before": expected_calibration_error(before, split.y),
        "ece_after": after["ece"],
        "nll_before": float(nll),
        "nll_after": after["nll"],
        "ece_bins": 15,
    }


def _without_train_duplicates(split: Split, probs: np.ndarray, args: dict) -> dict:
    data = args.get("data")
    if not data or not Path(data).exists():
        raise FileNotFoundError(f"training data {data!r} not found from {Path.cwd()}")
    train, _ = load_dataset(data, args.get("val_split") or 0.0, args.get("seed") or 0)
    if args.get("train_checksum") and train.checksum != args["train_checksum"]:
        raise ValueError(f"training data at {data} changed since training (checksum {train.checksum[:12]}, "
                         f"run recorded {args['train_checksum'][:12]})")
    seen = set(_pixel_hashes(train.x))
    keep = np.array([h not in seen for h in _pixel_hashes(split.x)], bool)
    figures = summarize(probs[keep], split.y[keep])
    return {
        "n": figures["n"],
        "excluded": int((~keep).sum()),
        "accuracy": figures["accuracy"],
        "macro_f1": figures["macro_f1"],
        "note": "validation images pixel-identical to any training image removed"
                + (" (whole training split, though --limit trained on a subset)" if args.get("limit") else ""),
    }


def _regression_sample(model: EmotionModel, split: Split) -> dict:
    sample = stratified_sample(split, **REGRESSION_SAMPLE)
    figures, _ = evaluate(model, sample)
    return {**REGRESSION_SAMPLE, "n": figures["n"], "accuracy": figures["accuracy"],
            "split_checksum": split.checksum, "sample_checksum": sample.checksum,
            "note": "tests/test_model_regression.py re-measures this sample (app.training.data.stratified_sample)"}


def _inference_cost(model: EmotionModel, face: np.ndarray, calls: int) -> dict:
    import tensorflow as tf

    face = face[None]
    for _ in range(10):  # settle caches and thread pools before timing
        model.predict(face)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.predict(face)
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {
        "ms_per_face_median": round(statistics.median(times), 3),
        "ms_per_face_p90": round(times[int(0.9 * (len(times) - 1))], 3),
        "calls": calls,
        "batch": 1,
        "tta": model.tta,
        "path": f"EmotionModel.predict ({RUNTIMES[model.backend]}, one batch of the face's "
                f"{len(TTA_VIEWS) if model.tta else 1} view(s))",
        "machine": {
            "platform": platform.platform(),
            **hardware.describe(),  # cpu, vector_extensions
            "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": sys.version.split()[0],
            "tensorflow": tf.__version__,
        },
    }


def write_card(model_path, state: dict, val_split: Split, timing_calls: int | None = None) -> dict:
    """Measure the model at ``model_path`` on ``val_split`` and write ``<model>.json``; returns the card.

    ``timing_calls``: how many calls the inference cost is the median of (``TIMING_CALLS``).
    """
    timing_calls = TIMING_CALLS if timing_calls is None else timing_calls
    model_path = Path(model_path)
    log = training_log_path(model_path)
    args = state.get("args", {})
    notes: list[str] = []

    def attempt(what: str, fn):
        try:
            return fn()
        except Exception as exc:  # an optional figure must not fail a finished training run
            notes.append(f"{what}: not measured ({type(exc).__name__}: {exc})")
            return None

    card: dict = {
        "model": model_path.name,
        "model_sha256": attempt("model_sha256", lambda: _file_sha256(model_path)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": args.get("arch"),
        "parameters": None,
        "labels": list(EMOTIONS),
        "input": {"shape": [INPUT_SIZE, INPUT_SIZE, 1], "dtype": "float32", "range": [0.0, 1.0],
                  "preprocessing": PREPROCESSING,
                  "test_time_augmentation": {
                      "views": list(TTA_VIEWS),
                      "how": f"mean of the probabilities of the face's central {ZOOM_CROP}x{ZOOM_CROP} pixels "
                             f"enlarged to {INPUT_SIZE}x{INPUT_SIZE} (bilinear) and of that zoom's horizontal mirror "
                             "(app.vision.preprocess.tta_views)"}},
        "output": "calibrated softmax probabilities over labels (temperature folded into the logits layer)",
        "training": {
            "command": args.get("command"),
            "resumed_with": args.get("resumed_with", []),
            "init_from": args.get("init_from"),
            "teachers": args.get("teachers") or None,
            "members": args.get("members"),
            "averaged": args.get("averaged"),
            "recalibrated_with": args.get("recalibrated_with", []),
            "data": args.get("data"),
            "train_checksum": args.get("train_checksum"),
            "val_checksum": args.get("val_checksum"),
            "n_train": args.get("n_train"),
            "n_val": args.get("n_val"),
            "hyperparameters": hyperparameters(args),
            "epochs_trained": state.get("epoch"),
            "best_epoch": None,
            # Without a training log, the run state's best score; with one, the best epoch's row (below).
            "best_epoch_val_accuracy_no_tta": state.get("best"),
            "log": str(log),
        },
        "evaluated_on": {"split": _evaluated_on(args), "n": len(val_split), "checksum": val_split.checksum,
                         "tta": True},
    }
    if log.is_file():
        from app.training.plots import best_epoch_score, read_training_log

        # Both from one row of the log: a log that holds earlier runs' epochs too (the shipped model's holds five
        # stages') can have a better epoch than the last run's own best, which is what the run state records.
        best = attempt("best_epoch", lambda: best_epoch_score(read_training_log(log)))
        if best is not None:
            card["training"]["best_epoch"], card["training"]["best_epoch_val_accuracy_no_tta"] = best
    else:
        notes.append(f"best_epoch: no training log at {log}")

    model = attempt("model", lambda: EmotionModel.load(model_path, tta=True, batch_sizes=BULK_BATCH_SIZES))
    figures = probs = None
    if model is not None:
        card["parameters"] = attempt("parameters", lambda: int(model.keras_model.count_params()))
        measured = attempt("validation figures", lambda: evaluate(model, val_split))
        if measured:
            figures, probs = measured
    card.update({k: figures[k] if figures else None
                 for k in ("accuracy", "macro_f1", "ece", "nll", "per_class", "confusion_matrix")})
    ready = model is not None and figures is not None
    measurements = {
        "calibration": lambda: _calibration(model, val_split, state, figures),
        "accuracy_without_train_duplicates": lambda: _without_train_duplicates(val_split, probs, args),
        "regression_sample": lambda: _regression_sample(model, val_split),
        "inference": lambda: _inference_cost(model, val_split.x[0], timing_calls),
    }
    for key, measure in measurements.items():
        card[key] = attempt(key, measure) if ready else None
    card["notes"] = notes

    save_card(card, model_path.with_suffix(".json"))
    return card


def write_atomically(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` through a temporary file beside it: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)


def save_card(card: dict, path: Path) -> None:
    """Write ``card`` as JSON to ``path``, atomically."""
    write_atomically(path, (json.dumps(card, indent=2) + "\n").encode())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m app.training.card", description="Write a finished run's model card.")
    p.add_argument("model", type=Path, help="the trained model, e.g. models/emotion.keras")
    p.add_argument("--run-dir", type=Path, help="the run's folder with state.json (default: runs/<model name>)")
    args = p.parse_args(argv)
    if args.model.suffix != ".keras":
        print(f"error: {args.model} is not a .keras model (an int8 copy's card is written by "
              "python -m app.training.quantize)", file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(f"error: {args.model} does not exist", file=sys.stderr)
        return 2
    state_path = (args.run_dir or Path("runs") / args.model.stem) / "state.json"
    try:
        state = read_record(state_path)
        run = state["args"]
        train, val = load_dataset(run["data"], run.get("val_split") or 0.0, run.get("seed") or 0)
    except (OSError, ValueError, KeyError) as exc:  # DataError is a ValueError
        print(f"error: {state_path}: {exc}", file=sys.stderr)
        return 2
    card = write_card(args.model, state, val if val is not None else train)  # what train.py calibrated on
    print(json.dumps({k: card[k] for k in ("accuracy", "macro_f1", "ece")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
