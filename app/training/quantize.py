"""Make the served int8 copy of a trained model and its model card.

    python -m app.training.quantize --data ../shared/fer2013 [--model models/emotion.keras]
                                    [--out models/emotion.int8.tflite] [--samples 1000] [--seed 0]

Full-integer post-training quantization for TensorFlow Lite: weights (per
output channel) and activations become int8, so XNNPACK runs the
convolutions with 8-bit integer arithmetic, several times faster than float32
on these CPUs. The input stays float32 (the faces of
``app.vision.preprocess``), and the final softmax runs in float32 on the
dequantized logits, so the probabilities stay smooth and keep the temperature
the source model has folded into its logits layer.

The activation ranges are calibrated on ``--samples`` training faces (a
stratified sample, both served views of each), never on test faces. The copy
is then measured exactly as served (``EmotionModel``, two views) on the
validation split -- PublicTest, the ``test/`` folder or ``PublicTest`` rows of
``--data`` -- next to its float source, and ``<out>.json`` records how it was
made, its accuracy, calibration, agreement with the source and cost per face.
Exit status 2 on bad input (missing data or model, data without PublicTest, an
``--out`` that cannot be written), before any quantizing.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from app.training.card import (  # noqa: E402
    TIMING_CALLS,
    _file_sha256,
    _inference_cost,
    _regression_sample,
    _without_train_duplicates,
    save_card,
    write_atomically,
)
from app.training.data import (  # noqa: E402
    DataError,
    Split,
    check_output,
    load_dataset,
    read_record,
    stratified_sample,
)
from app.training.evaluate import evaluate, load_model  # noqa: E402
from app.vision.emotions import EmotionModel, ModelLoadError, frozen_forward  # noqa: E402
from app.vision.preprocess import EMOTIONS, tta_views  # noqa: E402

# What ``tf.lite.Interpreter`` (the quantization debugger's) warns on construction.
INTERPRETER_DEPRECATION = r".*tf\.lite\.Interpreter is deprecated"

DEFAULT_SAMPLES = 1000
METHOD = ("TensorFlow Lite full-integer post-training quantization: int8 weights (per output channel) and "
          "activations, float32 input, float32 softmax on the dequantized logits")


def calibration_faces(train: Split, n: int, seed: int) -> tuple[Split, np.ndarray]:
    """A stratified sample of ``n`` training faces and every served view of each, (2n, 48, 48, 1)."""
    sample = stratified_sample(train, n, seed)
    return sample, np.concatenate(tta_views(sample.x))


def quantize(keras_model, views: np.ndarray) -> bytes:
    """The int8 TensorFlow Lite flatbuffer of ``keras_model``, activation ranges calibrated on ``views``."""
    import tensorflow as tf

    frozen = frozen_forward(keras_model, None)  # any batch size: the server sizes it
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen], keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]

    def representative():
        for i in range(len(views)):
            yield [views[i:i + 1]]

    converter.representative_dataset = representative
    # Selective quantization (TensorFlow's quantization debugger): everything but the softmax.
    with warnings.catch_warnings():
        # The debugger's own interpreter (tf.lite's) warns that it moves to LiteRT, which serves the copy; the input
        # staying float32 (no statistics given for it) is what is wanted.
        warnings.filterwarnings("ignore", message=INTERPRETER_DEPRECATION, category=UserWarning)
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected", category=UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative,
            debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=["SOFTMAX"]))
        return debugger.get_nondebug_quantized_model()


def agreement(reference: np.ndarray, probs: np.ndarray) -> dict:
    """How closely ``probs`` follows ``reference`` (both (N, 7) probabilities of the same faces)."""
    diff = np.abs(reference - probs)
    return {"top1": float((reference.argmax(1) == probs.argmax(1)).mean()),
            "max_abs_probability_difference": float(diff.max()),
            "mean_abs_probability_difference": float(diff.mean())}


def _calibration(source_card: dict, figures: dict) -> dict | None:
    """The source's temperature scaling, which the copy keeps (folded into the logits it dequantizes)."""
    fitted = source_card.get("calibration")
    if not fitted:
        return None
    return {**fitted, "ece_after": figures["ece"], "nll_after": figures["nll"],
            "source_ece_after": fitted.get("ece_after"),
            "note": "temperature fitted for the float source and folded into its logits layer; ece_before is the "
                    "source's before scaling, ece_after this copy's"}


def _figures(report: dict) -> dict:
    return {k: report[k] for k in ("accuracy", "macro_f1", "ece", "nll", "per_class", "confusion_matrix")}


def build_card(args: argparse.Namespace, argv: list[str], source: EmotionModel, served: EmotionModel,
               train: Split, val: Split, sample: Split, n_views: int, timing_calls: int) -> dict:
    """Measure ``served`` (the int8 copy) next to ``source`` on ``val`` and return its model card."""
    import tensorflow as tf

    source_card_path = Path(args.model).with_suffix(".json")
    notes = ["the int8 copy has no training log of its own: its training curves are its source's"]
    try:
        source_card = read_record(source_card_path)
    except (OSError, ValueError) as exc:  # the copy's own figures do not depend on it
        source_card = {}
        notes.append(f"source card {source_card_path} not read ({type(exc).__name__}: {exc}): "
                     "no training record, input description or calibration repeated")
    print(f"measuring both models on {len(val):,} validation faces ...", flush=True)
    figures, probs = evaluate(served, val)
    source_figures, source_probs = evaluate(source, val)
    print("timing one face through each ...", flush=True)
    face = val.x[0]
    card = {
        "model": Path(args.out).name,
        "model_sha256": _file_sha256(Path(args.out)),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": source_card.get("architecture"),
        "parameters": int(source.keras_model.count_params()),
        "labels": list(EMOTIONS),
        "input": source_card.get("input"),
        "output": "calibrated softmax probabilities over labels (float32; the source model's temperature-scaled "
                  "logits, dequantized)",
        "quantization": {
            "command": "python -m app.training.quantize " + shlex.join(argv),
            "method": METHOD,
            "source": {"model": str(args.model), "sha256": _file_sha256(Path(args.model)),
                       "card": str(source_card_path) if source_card else None,
                       "accuracy": source_figures["accuracy"], "macro_f1": source_figures["macro_f1"],
                       "ece": source_figures["ece"]},
            "calibration_data": {"data": str(args.data), "train_checksum": train.checksum,
                                 "faces": len(sample), "views": n_views, "seed": args.seed,
                                 "sample_checksum": sample.checksum,
                                 "note": "stratified training sample (app.training.data.stratified_sample), "
                                         "both served views of each face"},
            "tensorflow": tf.__version__,
            "size_bytes": Path(args.out).stat().st_size,
        },
        # How the weights were trained is the source's story: its card's record, repeated here.
        "training": {**(source_card.get("training") or {}), "card": str(source_card_path) if source_card else None},
        "evaluated_on": {"split": "PublicTest", "n": len(val), "checksum": val.checksum, "tta": served.tta},
        **_figures(figures),
        "calibration": _calibration(source_card, figures),
        "agreement_with_source": agreement(source_probs, probs),
        "accuracy_without_train_duplicates": _without_train_duplicates(val, probs, {"data": str(args.data)}),
        "regression_sample": _regression_sample(served, val),
        "inference": _inference_cost(served, face, timing_calls),
        "source_inference": _inference_cost(source, face, timing_calls),
        "notes": notes,
    }
    return card


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.quantize",
                                description="Make the served int8 TensorFlow Lite copy of a trained model.")
    p.add_argument("--data", required=True,
                   help="FER-2013 with its PublicTest: a folder holding train/ and test/, or fer2013.csv")
    p.add_argument("--model", default="models/emotion.keras", help="the float model to copy (default %(default)s)")
    p.add_argument("--out", default="models/emotion.int8.tflite",
                   help="where the .tflite goes; its card goes next to it as .json (default %(default)s)")
    p.add_argument("--samples", type=int, default=DEFAULT_SAMPLES,
                   help="training faces to calibrate activation ranges on (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the calibration sample (default %(default)s)")
    p.add_argument("--timing-calls", type=int, default=TIMING_CALLS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.out.endswith(".tflite"):
        p.error(f"--out must end in .tflite (got {args.out})")
    if args.samples < 1:
        p.error("--samples must be at least 1")
    return args


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        check_output(args.out, "--out")  # before quantizing, not when saving its result
        train, val = load_dataset(args.data)
        if val is None:
            raise DataError(f"{args.data}: no PublicTest (test/ folder or PublicTest rows) to measure the copy on")
        if Path(args.model).suffix == ".tflite":
            raise ModelLoadError(f"{args.model}: quantize a .keras model, not a .tflite file")
        source = load_model(args.model, tta=True)
    except (DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sample, views = calibration_faces(train, args.samples, args.seed)
    print(f"calibrating int8 ranges on {len(views):,} views of {len(sample):,} training faces ...", flush=True)
    t0 = time.perf_counter()
    content = quantize(source.keras_model, views)
    print(f"quantized in {time.perf_counter() - t0:.0f} s: {len(content) / 1e6:.1f} MB", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, content)
    served = EmotionModel.load(out, tta=True)
    card = build_card(args, argv, source, served, train, val, sample, len(views), args.timing_calls)
    card_path = out.with_suffix(".json")
    save_card(card, card_path)
    keys = ("accuracy", "macro_f1", "ece")
    print(json.dumps({"int8": {k: round(card[k], 4) for k in keys},
                      "float": {k: round(card["quantization"]["source"][k], 4) for k in keys},
                      "top1_agreement": round(card["agreement_with_source"]["top1"], 4),
                      "ms_per_face": {"int8": card["inference"]["ms_per_face_median"],
                                      "float": card["source_inference"]["ms_per_face_median"]},
                      "card": str(card_path)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
