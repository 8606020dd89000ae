"""Classification metrics and probability calibration, in plain NumPy."""
from __future__ import annotations

import math

import numpy as np

from app.vision.preprocess import EMOTIONS


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(EMOTIONS)) -> np.ndarray:
    """Counts with true classes as rows and predicted classes as columns."""
    cm = np.zeros((n, n), np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return cm


def per_class(cm: np.ndarray) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support for each emotion from a confusion matrix."""
    out = {}
    for i, name in enumerate(EMOTIONS[: len(cm)]):
        tp = cm[i, i]
        predicted, support = cm[:, i].sum(), cm[i].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
    return out


def macro_average(classes: dict, cm: np.ndarray, key: str = "f1") -> float:
    """The mean of a per-class figure over the classes that occur, as labels or as predictions.

    A class that neither occurs nor is predicted says nothing about the
    model, so it does not count as a zero (scikit-learn's convention).
    """
    cm = np.asarray(cm)
    occurs = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    values = [c[key] for c, seen in zip(classes.values(), occurs, strict=True) if seen]
    return float(np.mean(values)) if values else 0.0


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, bins: int = 15) -> float:
    """ECE of the top-class confidence over equal-width bins."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return float(ece)


def reliability(probs: np.ndarray, y_true: np.ndarray, bins: int = 15):
    """Per-bin (mean confidence, accuracy, count) for a reliability diagram."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, bins + 1)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        rows.append((float(conf[in_bin].mean()) if n else (lo + hi) / 2, float(correct[in_bin].mean()) if n else 0.0, n))
    return edges, rows


def summarize(probs: np.ndarray, y_true: np.ndarray) -> dict:
    """Accuracy (with its 95 % Wilson interval), macro-F1, per-class figures, confusion matrix, ECE and NLL."""
    y_true = np.asarray(y_true)
    y_pred = probs.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, probs.shape[1])
    classes = per_class(cm)
    correct = int((y_pred == y_true).sum())
    return {
        "n": int(len(y_true)),
        "accuracy": correct / len(y_true) if len(y_true) else 0.0,
        "accuracy_ci95": list(wilson_interval(correct, len(y_true))) if len(y_true) else None,
        "macro_f1": macro_average(classes, cm),
        "ece": expected_calibration_error(probs, y_true),
        "nll": float(-np.log(np.clip(probs[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean()),
        "per_class": classes,
        "confusion_matrix": cm.tolist(),
    }


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _view_probs(view_logits: list[np.ndarray], t: float) -> np.ndarray:
    return np.mean([softmax(v / t) for v in view_logits], axis=0)


def fit_temperature(view_logits: list[np.ndarray], y_true: np.ndarray, objective: str = "nll") -> float:
    """Temperature for the view-averaged softmax(logits / T) that minimises ``objective``.

    ``view_logits`` holds one (N, C) logit array per test-time view (see
    ``app.vision.preprocess.tta_views``), so the temperature fits what serving outputs.
    ``objective``: ``"nll"`` (the classic choice) or ``"ece"`` (the 15-bin
    expected calibration error, the figure the product promises; ties go to
    the lower NLL). Check an ECE fit out of sample with :func:`cross_validated_ece`.
    """
    y_true = np.asarray(y_true)

    def nll(t: float) -> float:
        p = _view_probs(view_logits, t)
        return float(-np.log(np.clip(p[np.arange(len(y_true)), y_true], 1e-12, 1.0)).mean())

    if objective == "nll":
        def loss(t):
            return nll(t)
    elif objective == "ece":
        def loss(t):
            return (round(expected_calibration_error(_view_probs(view_logits, t), y_true), 5), nll(t))
    else:
        raise ValueError(f"objective must be 'nll' or 'ece', got {objective!r}")

    grid = np.exp(np.linspace(np.log(0.25), np.log(4.0), 161))
    best = min(grid, key=loss)
    fine = np.linspace(best * 0.97, best * 1.03, 61)
    return float(min(fine, key=loss))


def cross_validated_ece(view_logits: list[np.ndarray], y_true: np.ndarray, objective: str = "ece",
                        folds: int = 5, seed: int = 0) -> dict:
    """ECE of temperatures fitted on the other folds: how well the calibration holds on unseen images."""
    y_true = np.asarray(y_true)
    order = np.random.default_rng(seed).permutation(len(y_true))
    probs = np.zeros(view_logits[0].shape, np.float64)
    temperatures = []
    for held in np.array_split(order, folds):
        fit_on = np.setdiff1d(order, held)
        t = fit_temperature([v[fit_on] for v in view_logits], y_true[fit_on], objective)
        temperatures.append(round(t, 4))
        probs[held] = _view_probs([v[held] for v in view_logits], t)
    return {"folds": folds, "objective": objective, "ece": expected_calibration_error(probs, y_true),
            "temperatures": temperatures}


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for an accuracy of ``correct`` out of ``n`` (95 % by default).

    It stays inside [0, 1] and keeps its coverage near 0 and 1, where the
    normal approximation p ± z·sqrt(p(1 − p)/n) does not (Newcombe, 1998).
    """
    if n <= 0:
        raise ValueError("an interval needs at least one face")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n ({n}), got {correct}")
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value for two classifiers scored on the same faces.

    ``only_a`` and ``only_b`` count the faces only the first, or only the
    second, classifies right; faces both get right (or wrong) say nothing
    about which is better. Under "equally good" each such face is a fair
    coin, so the p-value is the two-sided binomial tail of the smaller count.
    """
    if only_a < 0 or only_b < 0:
        raise ValueError("counts cannot be negative")
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)
