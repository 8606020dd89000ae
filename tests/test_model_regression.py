"""The shipped models still score what their model cards say, on the cards' fixed PublicTest sample.

Each card (``models/emotion.json`` for the float model, written by
``app.training.card``; ``models/emotion.int8.json`` for the served int8 copy,
written by ``app.training.quantize``) records the accuracy on the full
PublicTest split and on a fixed stratified sample of it; re-measuring the
sample through the serving path keeps this test to seconds.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from app.training.data import load_folder, stratified_sample
from app.training.evaluate import evaluate
from app.vision.emotions import EmotionModel
from tests.conftest import FER, FLOAT_MODEL, MODEL, require

TOLERANCE = 0.01  # one accuracy point: float noise across machines, not a real regression


def require_shipped(path: Path) -> Path:
    """Like conftest.require (fail in CI, skip elsewhere), with the way to make the file."""
    if not path.is_file():
        reason = (f"{path} is missing: `python -m app.training.train` writes the float model and its card, "
                  "`python -m app.training.quantize` the served int8 copy and its card")
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module", params=["served", "float"])
def shipped(request) -> tuple[Path, dict]:
    path = Path(os.environ.get("MODEL_PATH") or MODEL) if request.param == "served" else FLOAT_MODEL
    model = require_shipped(path)
    card = json.loads(require_shipped(model.with_suffix(".json")).read_text())
    return model, card


def test_card_describes_the_shipped_model(shipped):
    model, card = shipped
    assert card["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest(), \
        f"{model.with_suffix('.json')} was written for another {model.name}; " \
        "regenerate it (app.training.card or app.training.quantize)"
    assert card["regression_sample"], f"the card has no regression_sample: {card['notes']}"
    assert card["evaluated_on"]["split"] == "PublicTest" and card["accuracy"] is not None


def test_shipped_model_keeps_its_card_accuracy(shipped):
    model, card = shipped
    recorded = card["regression_sample"]
    test = load_folder(require(FER / "test"))
    assert test.checksum == recorded["split_checksum"], "the card's sample was drawn from other data"
    sample = stratified_sample(test, recorded["n"], recorded["seed"])
    assert sample.checksum == recorded["sample_checksum"]

    figures, _ = evaluate(EmotionModel.load(model, tta=True), sample)

    assert figures["accuracy"] >= recorded["accuracy"] - TOLERANCE, (
        f"{model.name}: {figures['accuracy']:.4f} on the {len(sample)}-image PublicTest sample, "
        f"card says {recorded['accuracy']:.4f}")
