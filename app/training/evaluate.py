"""Evaluate an emotion model on labelled FER-2013 images, through the serving path.

    python -m app.training.evaluate --data ../shared/fer2013/test [--model models/emotion.int8.tflite]
                                    [--json] [--out DIR] [--no-tta]

``--data`` is a folder of ``<emotion>/`` sub-folders, a folder holding
``train/`` and ``test/`` (``test/`` is evaluated), or ``fer2013.csv``
(its PublicTest rows). Predictions come from ``EmotionModel``, exactly as the
server makes them, so the figures describe what is served. Exit status 2 on
bad input (missing data or model, malformed files, unusable ``--out``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from app.config import Config
from app.training.data import DataError, Split, load_csv, load_folder
from app.training.metrics import macro_average, summarize
from app.vision.emotions import BULK_BATCH_SIZES, EmotionModel, ModelLoadError
from app.vision.preprocess import EMOTIONS, TTA_VIEWS, tta_views


def load_eval_split(data: str | Path) -> Split:
    """The labelled split to evaluate: class folders, the ``test/`` of a train/test tree, or CSV PublicTest rows."""
    data = Path(data)
    if not data.exists():
        raise DataError(f"data not found: {data}")
    if data.is_file():
        splits = load_csv(data)
        if "PublicTest" not in splits:
            raise DataError(f"{data}: no rows with Usage=PublicTest to evaluate on (found {sorted(splits)})")
        return splits["PublicTest"]
    if (data / "test").is_dir():
        return load_folder(data / "test")
    if (data / "train").is_dir():
        raise DataError(f"{data}: has train/ but no test/; pass the folder of the split to evaluate")
    return load_folder(data)


def load_model(path: str | Path, tta: bool = True, hint: str = "give --model a .keras or .tflite file") -> EmotionModel:
    """``EmotionModel.load`` for a command: a missing file's ModelLoadError ends with ``hint`` on the command's
    arguments, where the server's names its MODEL_PATH setting."""
    if not Path(path).is_file():
        raise ModelLoadError(f"emotion model not found: {path} ({hint})")
    return EmotionModel.load(path, tta=tta, batch_sizes=BULK_BATCH_SIZES)


def evaluate(model: EmotionModel, split: Split) -> tuple[dict, np.ndarray]:
    """Metrics of ``metrics.summarize`` and the (N, 7) served probabilities for ``split``."""
    probs = model.predict(split.x)
    return summarize(probs, split.y), probs


def view_logits(keras_model, x: np.ndarray) -> list[np.ndarray]:
    """Raw outputs of the model's ``logits`` layer for each test-time view of ``x`` (float64).

    With a temperature T folded into that layer these are z / T; the served
    probabilities are the mean of their softmaxes over the views.
    """
    import keras

    logits = keras.Model(keras_model.input, keras_model.get_layer("logits").output)
    return [np.asarray(logits.predict(view, batch_size=256, verbose=0), np.float64) for view in tta_views(x)]


def training_log_path(model_path: str | Path) -> Path:
    """Where ``app.training.train`` writes the epoch log of ``model_path``.

    The int8 copy ``NAME.int8.tflite`` (``app.training.quantize``) shares its source ``NAME.keras``'s log.
    """
    path = Path(model_path)
    if path.suffix == ".tflite" and path.stem.endswith(".int8"):
        path = path.with_suffix("")
    return path.with_suffix(".log.csv")


def write_figures(report: dict, probs: np.ndarray, y_true: np.ndarray, model_path: str | Path,
                  out: Path) -> dict[str, str | None]:
    """Write confusion_matrix.png, reliability.png and (with a training log) curves.png into ``out``."""
    from app.training import plots  # matplotlib only when figures are asked for

    figures = {
        "confusion_matrix": str(plots.confusion_matrix_png(report["confusion_matrix"], out / "confusion_matrix.png")),
        "reliability": str(plots.reliability_png(probs, y_true, out / "reliability.png")),
        "curves": None,
    }
    log = training_log_path(model_path)
    if log.is_file():
        try:
            figures["curves"] = str(plots.curves_png(plots.read_training_log(log), out / "curves.png"))
        except (OSError, ValueError) as exc:
            print(f"warning: no curves.png: {log}: {exc}", file=sys.stderr)
    return figures


def format_interval(interval) -> str:
    """`` (95 % 0.6904–0.7202)`` for an interval, nothing for ``None``."""
    return f" (95 % {interval[0]:.4f}–{interval[1]:.4f})" if interval else ""


def format_report(report: dict) -> str:
    """A human-readable summary: headline figures, per-class table, confusion matrix."""
    checksum = report.get("checksum") or ""
    lines = [
        f"model     {report['model']} ({'TTA: ' + ', '.join(TTA_VIEWS) if report['tta'] else 'no TTA'})",
        f"data      {report['data']} ({report['n']} images{', sha256 ' + checksum[:12] if checksum else ''})",
        (f"accuracy  {report['accuracy']:.4f}{format_interval(report.get('accuracy_ci95'))}    "
         f"macro-F1 {report['macro_f1']:.4f}    ECE {report['ece']:.4f}    NLL {report['nll']:.4f}"),
        "",
        f"{'emotion':<10}{'precision':>10}{'recall':>10}{'F1':>10}{'support':>10}",
    ]
    classes = report["per_class"]
    for name, c in classes.items():
        lines.append(f"{name:<10}{c['precision']:>10.4f}{c['recall']:>10.4f}{c['f1']:>10.4f}{c['support']:>10d}")
    macro = [macro_average(classes, report["confusion_matrix"], k) for k in ("precision", "recall", "f1")]
    lines.append(f"{'macro avg':<10}{macro[0]:>10.4f}{macro[1]:>10.4f}{macro[2]:>10.4f}{report['n']:>10d}")
    names = list(classes)
    lines += ["", "confusion matrix (rows: true, columns: predicted)",
              " " * 10 + "".join(f"{n[:8]:>9}" for n in names)]
    for name, row in zip(names, report["confusion_matrix"], strict=True):
        lines.append(f"{name:<10}" + "".join(f"{v:>9d}" for v in row))
    for path in (report.get("figures") or {}).values():
        if path:
            lines.append(f"wrote {path}")
    return "\n".join(lines)


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """The labelled faces to measure on: ``--data``, as evaluate and compare both take it."""
    parser.add_argument("--data", required=True,
                        help="folder of <emotion>/ sub-folders, a train/+test/ folder, or fer2013.csv")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.evaluate", description=__doc__.split("\n")[0])
    add_data_argument(p)
    p.add_argument("--model", default=Config.MODEL_PATH,
                   help="model to evaluate (default: %(default)s, the model the server ships with; this "
                        "command does not read the MODEL_PATH environment variable)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--out", type=Path, help="folder for confusion_matrix.png, reliability.png and curves.png")
    p.add_argument("--no-tta", action="store_true", help="classify each face once, without the test-time views")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        split = load_eval_split(args.data)
        model = load_model(args.model, tta=not args.no_tta)
    except (DataError, ModelLoadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            print(f"error: --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    metrics, probs = evaluate(model, split)
    report = {"model": str(args.model), "data": str(args.data), "checksum": split.checksum,
              "tta": model.tta, "labels": list(EMOTIONS), **metrics}
    if args.out:
        report["figures"] = write_figures(metrics, probs, split.y, args.model, args.out)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
