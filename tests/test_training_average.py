"""Checkpoint averaging: kept epochs, the averaged weights, BatchNorm re-estimation, the card, the refusals."""
from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

from app.training import average, train
from app.vision.emotions import EmotionModel
from tests.fersynth import write_tree


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Synthetic data and a tiny three-epoch run that keeps every epoch's weights."""
    root = tmp_path_factory.mktemp("average")
    data = write_tree(root / "fer", train_per_class=30, test_per_class=8)
    run_dir = root / "run"
    assert train.main(["--data", str(data), "--out", str(root / "tiny.keras"), "--run-dir", str(run_dir),
                       "--arch", "tiny", "--precision", "fp32", "--epochs", "3", "--batch-size", "70",
                       "--warmup-epochs", "0", "--lr", "3e-3", "--seed", "3", "--keep-epochs",
                       "--verbose", "0"]) == 0
    return data, run_dir


def conv_kernels(model):
    return [layer.get_weights()[0] for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def batchnorm_statistics(model):
    return [w for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
            for w in (layer.moving_mean.numpy(), layer.moving_variance.numpy())]


def test_keep_epochs_saves_every_epoch_as_a_float32_model(run):
    _, run_dir = run
    kept = sorted(run_dir.glob("epoch-*.keras"))
    assert [p.name for p in kept] == ["epoch-001.keras", "epoch-002.keras", "epoch-003.keras"]
    first, last = (keras.models.load_model(p, compile=False) for p in (kept[0], kept[-1]))
    assert all(w.dtype == np.float32 for w in last.get_weights())
    assert not np.allclose(conv_kernels(first)[0], conv_kernels(last)[0])  # the epochs really differ


def test_averaged_model_carries_the_mean_weights_calibrated_and_a_card(run, tmp_path, capsys):
    data, run_dir = run
    chosen = [run_dir / "epoch-002.keras", run_dir / "epoch-003.keras"]
    out = tmp_path / "avg.keras"
    assert average.main(["--data", str(data), "--out", str(out), "--verbose", "0", *map(str, chosen)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]).keys() == {"accuracy", "macro_f1", "ece"}

    served = keras.models.load_model(out, compile=False)
    sources = [keras.models.load_model(p, compile=False) for p in chosen]
    for got, *each in zip(conv_kernels(served), *map(conv_kernels, sources)):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    for got, *each in zip(batchnorm_statistics(served), *map(batchnorm_statistics, sources)):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-6, atol=1e-7)
    card = json.loads(out.with_suffix(".json").read_text())
    temperature = card["calibration"]["temperature"]
    mean_head = np.mean([m.get_layer("logits").get_weights()[0] for m in sources], axis=0)
    np.testing.assert_allclose(served.get_layer("logits").get_weights()[0], mean_head / temperature, rtol=1e-5)

    averaged = card["training"]["averaged"]
    assert [c["model"] for c in averaged["checkpoints"]] == [str(p) for p in chosen]
    assert all(len(c["sha256"]) == 64 for c in averaged["checkpoints"])
    assert averaged["batchnorm"] == "moving statistics averaged like every other weight"
    assert "--keep-epochs" in card["training"]["command"] and "app.training.average" in averaged["command"]
    assert card["architecture"] == "tiny" and card["training"]["epochs_trained"] == 3
    assert np.sum(card["confusion_matrix"]) == card["evaluated_on"]["n"] == 57
    assert card["calibration"]["ece_after"] == card["ece"] and card["inference"]["ms_per_face_median"] > 0
    EmotionModel.load(out)  # the server loads it like any other model


def test_reestimate_batchnorm_option_recomputes_the_statistics(run, tmp_path):
    data, run_dir = run
    chosen = [run_dir / "epoch-002.keras", run_dir / "epoch-003.keras"]
    out = tmp_path / "avg.keras"
    assert average.main(["--data", str(data), "--out", str(out), "--verbose", "0", "--reestimate-batchnorm",
                         *map(str, chosen)]) == 0
    served = keras.models.load_model(out, compile=False)
    averaged = np.mean([batchnorm_statistics(keras.models.load_model(p, compile=False))[0] for p in chosen], axis=0)
    assert not np.allclose(batchnorm_statistics(served)[0], averaged)
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["averaged"]["batchnorm"].startswith("moving statistics re-estimated")


def test_batchnorm_statistics_become_the_mean_of_the_batch_statistics():
    x = np.random.default_rng(0).normal(3.0, 2.0, (512, 4)).astype(np.float32)
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(momentum=0.99)])
    assert average.reestimate_batchnorm(model, x, batch_size=128, verbose=0) == 1
    norm = model.layers[0]
    batches = x.reshape(4, 128, 4)
    np.testing.assert_allclose(norm.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4)
    assert norm.momentum == 0.99  # put back afterwards


@pytest.mark.parametrize("case, message", [
    ("one checkpoint", "at least two checkpoints"),
    ("out is a checkpoint", "is one of the checkpoints"),
    ("missing checkpoint", "does not exist"),
    ("two runs", "different run folders"),
    ("no run state", "is unknown"),
    ("other data", "trained on other data"),
    ("not a model", "is not a usable model"),
    ("run state not a record", "holds a JSON list, not a record"),
    ("out cannot be written", "error: --out "),
])
def test_refuses_bad_checkpoints_and_writes_nothing(run, tmp_path, capsys, case, message):
    data, run_dir = run
    out = tmp_path / "avg.keras"
    chosen = [run_dir / "epoch-002.keras", run_dir / "epoch-003.keras"]
    if case == "out cannot be written":
        (tmp_path / "a-file").write_text("")
        out = tmp_path / "a-file" / "avg.keras"  # no folder can be made inside a file
    elif case == "one checkpoint":
        chosen = chosen[:1]
    elif case == "out is a checkpoint":
        out = chosen[0]
    elif case == "missing checkpoint":
        chosen = [chosen[0], run_dir / "epoch-099.keras"]
    elif case == "two runs":
        other = tmp_path / "other"
        other.mkdir()
        chosen = [chosen[0], shutil.copy(chosen[1], other / chosen[1].name)]
    else:
        copy = tmp_path / "copy"
        shutil.copytree(run_dir, copy)
        chosen = [copy / p.name for p in chosen]
        if case == "no run state":
            (copy / "state.json").unlink()
        elif case == "other data":
            state = json.loads((copy / "state.json").read_text())
            state["args"]["train_checksum"] = "0" * 64
            (copy / "state.json").write_text(json.dumps(state))
        elif case == "not a model":
            chosen[1].write_bytes(b"not a keras file")
        elif case == "run state not a record":
            (copy / "state.json").write_text("[1]")
    before = {p: p.stat().st_mtime_ns for p in run_dir.iterdir()}
    assert average.main(["--data", str(data), "--out", str(out), "--verbose", "0", *map(str, chosen)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "averaged" not in captured.out  # refused before the work
    assert case == "out is a checkpoint" or not out.exists()
    assert {p: p.stat().st_mtime_ns for p in run_dir.iterdir()} == before


@pytest.mark.parametrize("size", ["0", "-4"])
def test_a_batch_size_below_one_is_refused(size, capsys):
    with pytest.raises(SystemExit) as exit_:
        average.parse_args(["--data", "x", "--reestimate-batchnorm", "--batch-size", size, "a.keras", "b.keras"])
    assert exit_.value.code == 2 and f"--batch-size must be at least 1, not {size}" in capsys.readouterr().err
