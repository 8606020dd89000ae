"""Helpers for the tests of --init-from across architectures (pruning, deepening)."""
from __future__ import annotations

import json

import numpy as np

from app.training import train
from app.training.architectures import ARCHITECTURES
from tests.fersynth import write_tree


def randomised(model, seed=0):
    """``model`` with random weights and BatchNormalization statistics, so every channel differs."""
    rng = np.random.default_rng(seed)

    def draw(shape):  # kernels around 0; BatchNormalization vectors (and biases) positive, so variances are valid
        return rng.normal(0.0, 0.3, shape) if len(shape) > 1 else rng.uniform(0.1, 1.0, shape)

    model.set_weights([draw(w.shape).astype("float32") for w in model.get_weights()])
    return model


def train_then_init_from(tmp_path, monkeypatch, capsys, source_build, target_build) -> tuple[str, dict]:
    """Train the net ``source_build`` for 1 epoch, then ``target_build`` from it with ``--init-from``.

    Returns what the second run printed and the ``training`` record of its card.
    """
    data = write_tree(tmp_path / "fer", train_per_class=20, test_per_class=5)
    monkeypatch.setitem(ARCHITECTURES, "source", source_build)
    monkeypatch.setitem(ARCHITECTURES, "target", target_build)
    common = ["--data", str(data), "--precision", "fp32", "--batch-size", "70", "--warmup-epochs", "0",
              "--verbose", "0", "--epochs", "1"]
    source = tmp_path / "source.keras"
    assert train.main(common + ["--arch", "source", "--out", str(source), "--run-dir", str(tmp_path / "s")]) == 0
    capsys.readouterr()
    out = tmp_path / "target.keras"
    assert train.main(common + ["--arch", "target", "--init-from", str(source), "--out", str(out),
                                "--run-dir", str(tmp_path / "t")]) == 0
    return capsys.readouterr().out, json.loads(out.with_suffix(".json").read_text())["training"]
