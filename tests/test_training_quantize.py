"""The served int8 copy: ``python -m app.training.quantize`` makes it, measures it and writes its card."""
from __future__ import annotations

import json

import numpy as np
import pytest

from app.training import quantize, train
from app.training.data import load_dataset, stratified_sample
from app.vision.emotions import EmotionModel
from tests.fersynth import write_class_folders, write_tree


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Synthetic FER data and a tiny model trained one epoch on it (with its card)."""
    root = tmp_path_factory.mktemp("quantize")
    data = write_tree(root / "fer", train_per_class=30, test_per_class=8)
    out = root / "m" / "tiny.keras"
    assert train.main(["--data", str(data), "--out", str(out), "--run-dir", str(root / "m" / "run"),
                       "--arch", "tiny", "--precision", "fp32", "--epochs", "1", "--batch-size", "70",
                       "--warmup-epochs", "0", "--lr", "3e-3", "--seed", "3", "--verbose", "0"]) == 0
    return data, out


def test_quantize_writes_a_served_int8_copy_measured_next_to_its_source(trained, tmp_path, capsys):
    data, source_path = trained
    out = tmp_path / "tiny.int8.tflite"
    assert quantize.main(["--data", str(data), "--model", str(source_path), "--out", str(out),
                          "--samples", "40", "--seed", "5", "--timing-calls", "3"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed.strip().splitlines()[-1])
    card = json.loads(out.with_suffix(".json").read_text())
    assert summary["card"] == str(out.with_suffix(".json"))
    assert summary["int8"]["accuracy"] == round(card["accuracy"], 4)

    served = EmotionModel.load(out)
    source = EmotionModel.load(source_path)
    train_split, test_split = load_dataset(data)
    probs, reference = served.predict(test_split.x), source.predict(test_split.x)
    assert served.backend == "tflite" and served.keras_model is None
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probs - reference).max() < 0.1  # int8 rounding, not another model
    assert len(np.unique(probs)) > 100  # the float softmax keeps probabilities smooth (not 1/256 steps)

    # The card describes this file, made from that source, calibrated on training faces only.
    q = card["quantization"]
    assert card["model"] == out.name and q["source"]["model"] == str(source_path)
    assert q["calibration_data"]["train_checksum"] == train_split.checksum
    assert q["calibration_data"]["sample_checksum"] == stratified_sample(train_split, 40, 5).checksum
    assert (q["calibration_data"]["faces"], q["calibration_data"]["views"]) == (40, 80)
    assert q["size_bytes"] == out.stat().st_size and q["command"].startswith("python -m app.training.quantize ")
    # The weights' training and temperature are the source's, repeated from its card.
    source_card = json.loads(source_path.with_suffix(".json").read_text())
    assert card["training"] == {**source_card["training"], "card": str(source_path.with_suffix(".json"))}
    assert card["calibration"]["temperature"] == source_card["calibration"]["temperature"]
    assert card["calibration"]["ece_after"] == card["ece"]
    # Its figures are its own, on the validation split, and agree with each other.
    assert card["evaluated_on"] == {"split": "PublicTest", "n": len(test_split), "checksum": test_split.checksum,
                                    "tta": True}
    cm = np.array(card["confusion_matrix"])
    assert cm.sum() == len(test_split) and np.trace(cm) / cm.sum() == pytest.approx(card["accuracy"])
    assert card["accuracy"] == pytest.approx((probs.argmax(1) == test_split.y).mean())
    assert card["agreement_with_source"]["top1"] == pytest.approx((probs.argmax(1) == reference.argmax(1)).mean())
    assert card["accuracy_without_train_duplicates"]["excluded"] >= 1  # fersynth plants a train/test duplicate
    assert "TensorFlow Lite" in card["inference"]["path"] and "tf.function" in card["source_inference"]["path"]
    assert card["regression_sample"]["n"] == len(test_split)


@pytest.mark.parametrize(("case", "message"), [
    ("no model", "emotion model not found: "),
    ("tflite source", "quantize a .keras model"),
    ("no test split", "no PublicTest"),
    ("out cannot be written", "error: --out "),
])
def test_quantize_refuses_bad_input_and_writes_nothing(trained, tmp_path, capsys, case, message):
    data, source_path = trained
    model = {"no model": tmp_path / "missing.keras", "tflite source": tmp_path / "x.tflite"}.get(case, source_path)
    if case == "tflite source":
        model.write_bytes(b"whatever")
    if case == "no test split":
        data = write_class_folders(tmp_path / "train-only", per_class=3, seed=0)
    if case == "out cannot be written":
        (tmp_path / "out").write_text("")  # a file where the output's folder should be
    out = tmp_path / "out" / "copy.int8.tflite"
    rc = quantize.main(["--data", str(data), "--model", str(model), "--out", str(out), "--samples", "10"])
    captured = capsys.readouterr()
    err = captured.err
    assert rc == 2 and message in err and "Traceback" not in err
    assert "MODEL_PATH" not in err and (case != "no model" or "(give --model a .keras or .tflite file)" in err)
    assert "calibrating" not in captured.out  # refused before the long work
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_quantize_refuses_an_output_that_is_not_tflite(trained, capsys):
    data, source_path = trained
    with pytest.raises(SystemExit) as stopped:
        quantize.main(["--data", str(data), "--model", str(source_path), "--out", "models/x.keras"])
    assert stopped.value.code == 2 and "--out must end in .tflite" in capsys.readouterr().err


def test_quantize_without_the_source_card_still_measures_the_copy_and_says_what_is_missing(trained, tmp_path, capsys):
    data, source_path = trained
    bare = tmp_path / "bare.keras"
    bare.write_bytes(source_path.read_bytes())  # no bare.json beside it
    out = tmp_path / "bare.int8.tflite"
    assert quantize.main(["--data", str(data), "--model", str(bare), "--out", str(out), "--samples", "20",
                          "--timing-calls", "2"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["accuracy"] is not None and card["calibration"] is None and card["training"] == {"card": None}
    assert any("source card" in note and "not read" in note for note in card["notes"])


@pytest.mark.parametrize("samples", ["0", "-5"])
def test_calibrating_on_no_faces_is_refused(samples, capsys):
    with pytest.raises(SystemExit) as exit_:
        quantize.main(["--data", "x", "--samples", samples])
    assert exit_.value.code == 2 and "--samples must be at least 1" in capsys.readouterr().err
