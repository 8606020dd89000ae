"""Compare emotion models on the same labelled faces, through the serving path.

    python -m app.training.compare --data ../shared/fer2013/test MODEL MODEL [MODEL ...] [--json] [--no-tta]

Each model's accuracy comes with its 95 % Wilson interval, and each pair of
models with the faces they disagree on and an exact McNemar test: is the
difference between two models more than one test set's luck? Both models
classify the same faces, so the test looks only at the faces exactly one of
them gets right. ``--data`` takes what ``app.training.evaluate`` takes. Exit
status 2 on bad input (missing data or model, malformed files).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys

import numpy as np

from app.training.data import DataError
from app.training.evaluate import add_data_argument, evaluate, format_interval, load_eval_split, load_model
from app.training.metrics import mcnemar_exact
from app.vision.emotions import ModelLoadError


def compare_pair(y_true: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray) -> dict:
    """How two models' top emotions fare on the same faces, with McNemar's exact p-value."""
    right_a, right_b = pred_a == y_true, pred_b == y_true
    only_a, only_b = int((right_a & ~right_b).sum()), int((right_b & ~right_a).sum())
    return {
        "agree": float((pred_a == pred_b).mean()),
        "both_right": int((right_a & right_b).sum()),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "both_wrong": int((~right_a & ~right_b).sum()),
        "accuracy_difference": float(right_a.mean() - right_b.mean()),
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }


def compare(models: list[str], split, tta: bool = True) -> dict:
    """Figures of each model and of each pair on ``split``; a model that fails to load raises ModelLoadError."""
    # Every model loads before any is measured.
    loaded = [load_model(path, tta=tta, hint="each MODEL is a .keras or .tflite file") for path in models]
    figures, predictions = [], []
    for path, model in zip(models, loaded, strict=True):
        metrics, probs = evaluate(model, split)
        figures.append({"model": path, **{k: metrics[k] for k in ("accuracy", "accuracy_ci95", "macro_f1", "ece")}})
        predictions.append(probs.argmax(axis=1))
    pairs = [{"a": models[i], "b": models[j], **compare_pair(split.y, predictions[i], predictions[j])}
             for i, j in itertools.combinations(range(len(models)), 2)]
    return {"n": len(split.y), "checksum": split.checksum, "tta": tta, "models": figures, "pairs": pairs}


def format_comparison(report: dict) -> str:
    """A table of the models' figures, then a paragraph for each pair."""
    width = max(len(m["model"]) for m in report["models"])
    lines = [f"{report['n']} faces ({'two served views' if report['tta'] else 'no TTA'})", "",
             f"{'model':<{width}}  {'accuracy':<32}  macro-F1  ECE"]
    for m in report["models"]:
        lines.append(f"{m['model']:<{width}}  {m['accuracy']:.4f}{format_interval(m['accuracy_ci95']):<26}"
                     f"  {m['macro_f1']:.4f}    {m['ece']:.4f}")
    for p in report["pairs"]:
        lines += ["", f"{p['a']}  vs  {p['b']}",
                  (f"  same top emotion on {p['agree'] * 100:.1f} % of the faces; both right {p['both_right']}, "
                   f"only the first {p['only_a_right']}, only the second {p['only_b_right']}, "
                   f"both wrong {p['both_wrong']}"),
                  (f"  accuracy difference {p['accuracy_difference'] * 100:+.2f} points, "
                   f"exact McNemar p = {p['mcnemar_p']:.3g}")]
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.compare", description=__doc__.split("\n")[0])
    add_data_argument(p)
    p.add_argument("models", nargs="+", metavar="MODEL", help="two or more .keras or .tflite models")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--no-tta", action="store_true", help="classify each face once, without the test-time views")
    args = p.parse_args(argv)
    if len(args.models) < 2:
        p.error("give at least two models to compare")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        split = load_eval_split(args.data)
        report = compare(args.models, split, tta=not args.no_tta)
    except (DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2) if args.json else format_comparison(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
