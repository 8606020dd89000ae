"""Fusing trained models into one served ensemble: the maths, the card, the refusals."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from app.training import ensemble, train
from app.training.metrics import softmax
from app.vision.emotions import EmotionModel
from tests.fersynth import write_tree


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """The synthetic data and two tiny one-epoch models trained on it with different seeds."""
    root = tmp_path_factory.mktemp("ensemble")
    data = write_tree(root / "fer", train_per_class=30, test_per_class=8)
    paths = []
    for seed in (1, 2):
        out = root / f"m{seed}" / "tiny.keras"
        assert train.main(["--data", str(data), "--out", str(out), "--run-dir", str(root / f"m{seed}" / "run"),
                           "--arch", "tiny", "--precision", "fp32", "--epochs", "1", "--batch-size", "70",
                           "--warmup-epochs", "0", "--lr", "3e-3", "--seed", str(seed), "--verbose", "0"]) == 0
        paths.append(out)
    return data, paths


def raw_logits(path, x):
    """A member's logits with its card's temperature undone."""
    model = keras.models.load_model(path, compile=False)
    temperature = json.loads(path.with_suffix(".json").read_text())["calibration"]["temperature"]
    logits = keras.Model(model.input, model.get_layer("logits").output)
    return np.asarray(logits(x), np.float64) * temperature


def test_fused_model_serves_the_calibrated_mean_of_the_members_logits(members, tmp_path, capsys):
    data, paths = members
    out = tmp_path / "ens.keras"
    assert ensemble.main(["--data", str(data), "--out", str(out), *map(str, paths)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]).keys() == {"accuracy", "macro_f1", "ece"}

    card = json.loads(out.with_suffix(".json").read_text())
    temperature = card["calibration"]["temperature"]
    x = np.random.default_rng(0).random((5, 48, 48, 1), dtype=np.float32)
    expected = softmax(np.mean([raw_logits(p, x) for p in paths], axis=0) / temperature)
    served = EmotionModel.load(out, tta=False)
    np.testing.assert_allclose(served.predict(x), expected, atol=1e-5)

    assert card["architecture"] == "ensemble of tiny + tiny"
    assert card["parameters"] == sum(json.loads(p.with_suffix(".json").read_text())["parameters"] for p in paths) + 7 * 8
    assert [m["model"] for m in card["training"]["members"]] == [str(p) for p in paths]
    assert [m["training"]["hyperparameters"]["seed"] for m in card["training"]["members"]] == [1, 2]
    assert all(len(m["sha256"]) == 64 and m["temperature_undone"] > 0 for m in card["training"]["members"])
    assert card["evaluated_on"]["split"] == "PublicTest" and card["evaluated_on"]["n"] == 57
    assert np.sum(card["confusion_matrix"]) == 57 and 0.0 <= card["accuracy"] <= 1.0
    assert card["calibration"]["ece_after"] == card["ece"] and card["inference"]["ms_per_face_median"] > 0
    assert "best_epoch: no training log" in " ".join(card["notes"])


@pytest.mark.parametrize("case, message", [
    ("one member", "at least two members"),
    ("out is a member", "is one of the members"),
    ("missing member", "does not exist"),
    ("no card", "has no model card"),
    ("other data", "trained on other data"),
    ("broken card", "is not valid JSON"),
    ("card not a record", "holds a JSON list, not a record"),
    ("out cannot be written", "error: --out "),
])
def test_refuses_bad_members_and_writes_nothing(members, tmp_path, capsys, case, message):
    data, paths = members
    out = tmp_path / "ens.keras"
    chosen = list(paths)
    if case == "out cannot be written":
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "ens.keras"  # no folder can be made inside a file
    elif case == "one member":
        chosen = paths[:1]
    elif case == "out is a member":
        out = paths[0]
    elif case == "missing member":
        chosen = [paths[0], tmp_path / "nowhere.keras"]
    else:
        copy = tmp_path / "copy.keras"
        shutil.copy(paths[1], copy)
        if case == "other data":
            card = json.loads(paths[1].with_suffix(".json").read_text())
            card["training"]["train_checksum"] = "0" * 64
            copy.with_suffix(".json").write_text(json.dumps(card))
        elif case == "broken card":
            copy.with_suffix(".json").write_text("{not json")
        elif case == "card not a record":
            copy.with_suffix(".json").write_text("[1, 2]")
        chosen = [paths[0], copy]
    before = {p: p.stat().st_mtime_ns for p in paths}
    assert ensemble.main(["--data", str(data), "--out", str(out), *map(str, chosen)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "fused" not in captured.out
    assert case == "out is a member" or not out.exists()
    assert {p: p.stat().st_mtime_ns for p in paths} == before


@pytest.mark.parametrize("fraction", ["1", "2", "-0.5"])
def test_a_validation_fraction_outside_0_to_1_is_refused(fraction, capsys):
    with pytest.raises(SystemExit) as exit_:
        ensemble.parse_args(["--data", "x", "--val-split", fraction, "a.keras", "b.keras"])
    assert exit_.value.code == 2 and "--val-split must be a fraction from 0" in capsys.readouterr().err
    assert ensemble.parse_args(["--data", "x", "--val-split", "0", "a.keras", "b.keras"]).val_split == 0.0
