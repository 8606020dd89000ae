"""PNG figures for evaluation (confusion matrix, reliability, training curves) and the training log reader.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot),
so plotting needs no display and keeps no global figure state.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from app.training.metrics import expected_calibration_error, reliability
from app.vision.preprocess import EMOTIONS


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def _matrix_panel(ax, values: np.ndarray, labels, title: str, fmt: str) -> None:
    ax.imshow(values, cmap="Blues", vmin=0, vmax=max(float(values.max()), 1e-12))
    ticks = range(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    threshold = values.max() / 2
    for i in ticks:
        for j in ticks:
            ax.text(j, i, format(values[i, j], fmt), ha="center", va="center", fontsize=8,
                    color="white" if values[i, j] > threshold else "black")


def confusion_matrix_png(cm, path: str | Path, labels=EMOTIONS) -> Path:
    """Write counts and row-normalised (recall) confusion matrices side by side."""
    cm = np.asarray(cm)
    rows = cm.sum(axis=1, keepdims=True)
    normalised = np.divide(cm, rows, out=np.zeros(cm.shape, float), where=rows > 0)
    fig = Figure(figsize=(13, 5.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    _matrix_panel(left, cm, labels, f"counts (n = {int(cm.sum())})", "d")
    _matrix_panel(right, normalised, labels, "row-normalised (recall)", ".2f")
    return _save(fig, path)


def reliability_png(probs: np.ndarray, y_true: np.ndarray, path: str | Path, bins: int = 15) -> Path:
    """Write a reliability diagram (accuracy vs confidence per bin) with ECE in the title."""
    edges, rows = reliability(probs, y_true, bins)
    ece = expected_calibration_error(probs, y_true, bins)
    centers = (edges[:-1] + edges[1:]) / 2
    width = edges[1] - edges[0]
    conf = np.array([r[0] for r in rows])
    acc = np.array([r[1] for r in rows])
    count = np.array([r[2] for r in rows])
    used = count > 0
    fig = Figure(figsize=(6, 7), layout="constrained")
    top, bottom = fig.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    top.bar(centers[used], acc[used], width=width * 0.95, color="tab:blue", edgecolor="black", label="accuracy")
    # The gap is drawn as an unfilled hatched box, readable both above and inside the accuracy bar.
    top.bar(centers[used], np.abs(conf[used] - acc[used]), bottom=np.minimum(conf[used], acc[used]),
            width=width * 0.95, fill=False, edgecolor="tab:red", hatch="//", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE = {ece:.4f}, n = {len(y_true)})")
    top.legend(loc="upper left")
    bottom.bar(centers, count, width=width * 0.95, color="gray")
    bottom.set_xlabel("top-class confidence")
    bottom.set_ylabel("images")
    return _save(fig, path)


def read_training_log(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a Keras CSVLogger file as float arrays; rows that do not parse are skipped."""
    columns: dict[str, list[float]] = {}
    with Path(path).open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                values = {k: float(v) for k, v in row.items() if k}
            except (TypeError, ValueError):
                continue  # a repeated header or a row cut short by an interrupted run
            for key, value in values.items():
                columns.setdefault(key, []).append(value)
    return {k: np.asarray(v) for k, v in columns.items()}


def curves_png(log: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write accuracy, loss and learning rate per epoch from a training log."""
    if "epoch" not in log or not len(log["epoch"]):
        raise ValueError("training log has no epochs")
    epochs = log["epoch"] + 1  # CSVLogger counts from 0
    panels = [("accuracy", "accuracy"), ("loss", "loss"), ("lr", "learning rate")]
    fig = Figure(figsize=(15, 4.5), layout="constrained")
    for ax, (key, title) in zip(fig.subplots(1, 3), panels, strict=True):
        for name, style in ((key, "-"), (f"val_{key}", "--")):
            if name in log and not np.all(np.isnan(log[name])):
                ax.plot(epochs, log[name], style, marker="." if len(epochs) < 30 else None,
                        label="validation" if name.startswith("val_") else "train")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines and key != "lr":
            ax.legend()
        if key == "lr" and "lr" in log and np.all(log["lr"] > 0):
            ax.set_yscale("log")
    if "val_accuracy" in log and len(log["val_accuracy"]):
        best = int(np.argmax(log["val_accuracy"]))
        fig.suptitle(f"best validation accuracy {log['val_accuracy'][best]:.4f} at epoch {best + 1}")
    return _save(fig, path)


def best_epoch(log: dict[str, np.ndarray]) -> int | None:
    """1-based epoch of the best validation accuracy (training accuracy without validation)."""
    best = best_epoch_score(log)
    return best[0] if best else None


def best_epoch_score(log: dict[str, np.ndarray]) -> tuple[int, float] | None:
    """``best_epoch`` and the accuracy it scored, both from the same row of the log."""
    key = "val_accuracy" if "val_accuracy" in log else "accuracy"
    scores = log.get(key)
    if scores is None or not len(scores) or all(math.isnan(s) for s in scores):
        return None
    epochs = log.get("epoch", np.arange(len(scores)))
    # First maximum: the checkpoint only replaces the best model on strict improvement.
    row = int(np.nanargmax(scores))
    return int(epochs[row]) + 1, float(scores[row])
