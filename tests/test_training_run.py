"""A real (tiny) training run end to end: outputs, model card, resume, errors."""
from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest

from app.training import train
from app.training.card import write_card
from app.training.data import load_folder
from app.vision.emotions import EmotionModel
from app.vision.preprocess import EMOTIONS
from tests.fersynth import write_tree


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("fer"), train_per_class=40, test_per_class=10)


def argv(data, tmp_path, *extra):
    return ["--data", str(data), "--out", str(tmp_path / "models" / "tiny.keras"),
            "--run-dir", str(tmp_path / "run"), "--arch", "tiny", "--precision", "fp32",
            "--batch-size", "70", "--warmup-epochs", "0", "--lr", "3e-3", "--verbose", "0", *extra]


def log_rows(tmp_path):
    with (tmp_path / "models" / "tiny.log.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """One finished 1-epoch run, shared by the tests that only read its outputs."""
    tmp_path = tmp_path_factory.mktemp("run")
    assert train.main(argv(data, tmp_path, "--epochs", "1")) == 0
    return tmp_path


def test_one_epoch_run_writes_every_output(trained):
    models, run = trained / "models", trained / "run"
    for path in (models / "tiny.keras", models / "tiny.log.csv", models / "tiny.json",
                 run / "last.keras", run / "state.json"):
        assert path.is_file() and path.stat().st_size > 0, path
    assert [r["epoch"] for r in log_rows(trained)] == ["0"]
    assert {"accuracy", "loss", "val_accuracy", "val_loss", "lr"} <= set(log_rows(trained)[0])
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1 and state["args"]["arch"] == "tiny" and state["temperature"] > 0
    assert state["args"]["n_train"] == 280 and state["args"]["n_val"] == 71


def test_shipped_model_is_served_and_outputs_probabilities(trained):
    model = EmotionModel.load(trained / "models" / "tiny.keras")
    probs = model.predict(np.random.default_rng(0).random((3, 48, 48, 1), dtype=np.float32))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_model_card_describes_the_run(trained, data):
    card = json.loads((trained / "models" / "tiny.json").read_text())
    assert card["architecture"] == "tiny" and card["parameters"] > 0
    assert card["model"] == "tiny.keras" and card["labels"] == list(EMOTIONS)  # the order the scores come in
    assert card["model_sha256"] == hashlib.sha256((trained / "models" / "tiny.keras").read_bytes()).hexdigest()
    matrix = np.array(card["confusion_matrix"])
    assert card["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum(), abs=1e-4)
    assert 0.0 <= card["macro_f1"] <= 1.0 and set(card["per_class"]) <= set(EMOTIONS)
    assert card["training"]["epochs_trained"] == 1 and card["training"]["best_epoch"] == 1
    assert card["training"]["train_checksum"] and card["evaluated_on"]["split"] == "PublicTest"
    assert card["evaluated_on"]["n"] == 71 and "prepare_face" in card["input"]["preprocessing"]
    assert 0.0 <= card["accuracy"] <= 1.0 and np.sum(card["confusion_matrix"]) == 71
    calibration = card["calibration"]
    assert calibration["temperature"] > 0 and calibration["ece_after"] == card["ece"]
    assert 0.0 <= calibration["ece_before"] <= 1.0
    dedup = card["accuracy_without_train_duplicates"]
    assert dedup["excluded"] == 1 and dedup["n"] == 70  # the one copied image
    sample = card["regression_sample"]
    assert sample["n"] == 71 and sample["accuracy"] == card["accuracy"]  # fewer images than the sample size
    inference = card["inference"]
    assert inference["ms_per_face_median"] > 0 and inference["machine"]["cpu_count"] >= 1
    assert card["created"] and card["notes"] == []
    hyper = card["training"]["hyperparameters"]
    assert hyper["optimizer"] == "adamw" and "momentum" not in hyper and hyper["weight_decay"] == 0.02
    assert hyper["mixup"] == 0.0 and hyper["cutmix"] == 0.0


def test_resume_continues_from_the_checkpoint(data, tmp_path, monkeypatch):
    used = record_training_datasets(monkeypatch)
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--seed", "5")) == 0
    assert train.main(argv(data, tmp_path, "--epochs", "3", "--resume")) == 0
    # Resumed, the run draws anew instead of replaying its first epoch's batches.
    seeds = [u[2] for u in used]
    assert seeds == [5, train.draw_seed(5, 1)] and seeds[1] != 5
    rows = log_rows(tmp_path)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    assert float(rows[0]["lr"]) == 0.0  # the 1-epoch schedule ended ...
    assert float(rows[1]["lr"]) > 0  # ... and was stretched, so the added epochs still learn
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 3 and state["args"]["epochs"] == 3
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["training"]["epochs_trained"] == 3
    assert card["training"]["command"].endswith("--epochs 1 --seed 5")
    assert [c.endswith("--epochs 3 --resume") for c in card["training"]["resumed_with"]] == [True]


def test_each_resume_point_draws_from_a_seed_of_its_own():
    assert train.draw_seed(1337, 0) == 1337
    resumed = [train.draw_seed(1337, epoch) for epoch in range(1, 500)]
    assert len(set(resumed)) == len(resumed) and 1337 not in resumed
    assert all(0 <= s < 2**31 for s in resumed) and train.draw_seed(1337, 74) == train.draw_seed(1337, 74)


def folded_kernel(tmp_path, temperature: float) -> np.ndarray:
    """The best model's logits kernel with ``temperature`` taken out again."""
    import keras

    return keras.models.load_model(tmp_path / "models" / "tiny.keras").get_layer("logits").get_weights()[0] * temperature


def test_resuming_a_finished_run_calibrates_its_best_model_once(data, tmp_path):
    assert train.main(argv(data, tmp_path, "--epochs", "1")) == 0
    state_path = tmp_path / "run" / "state.json"
    raw = folded_kernel(tmp_path, json.loads(state_path.read_text())["temperature"])
    assert train.main(argv(data, tmp_path, "--resume")) == 0  # nothing left to train: calibrated again
    np.testing.assert_allclose(folded_kernel(tmp_path, json.loads(state_path.read_text())["temperature"]), raw,
                               rtol=1e-5, atol=1e-6)
    # Extended by an epoch that is no better: the best model keeps its temperature through the epoch, once.
    state = json.loads(state_path.read_text())
    state_path.write_text(json.dumps({**state, "best": 2.0}))  # no epoch can beat it
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume")) == 0
    after = json.loads(state_path.read_text())
    assert after["epoch"] == 2 and after["best"] == 2.0
    np.testing.assert_allclose(folded_kernel(tmp_path, after["temperature"]), raw, rtol=1e-5, atol=1e-6)


def test_resume_keeps_the_runs_network_and_length_when_not_given(data, tmp_path, capsys):
    without_arch = [a for a in argv(data, tmp_path) if a not in ("--arch", "tiny")]
    assert train.main(argv(data, tmp_path, "--epochs", "1")) == 0
    capsys.readouterr()
    assert train.main([*without_arch, "--resume"]) == 0  # neither --arch nor --epochs: the run's own
    assert "stretched" not in capsys.readouterr().out and len(log_rows(tmp_path)) == 1
    assert train.main([*without_arch, "--resume", "--epochs", "2"]) == 0
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["architecture"] == "tiny" and card["training"]["epochs_trained"] == 2
    import keras

    from app.training.architectures import make_model

    shipped = keras.models.load_model(tmp_path / "models" / "tiny.keras")
    assert shipped.count_params() == make_model("tiny").count_params()


@pytest.mark.parametrize("flags, message", [
    (["--val-split", "1"], "--val-split must be a fraction from 0"),
    (["--val-split", "-0.1"], "--val-split must be a fraction from 0"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--epochs", "-3"], "--epochs must be at least 1, not -3"),
    (["--resume", "--epochs", "0"], "--epochs must be at least 1, not 0"),
    (["--arch", "bogus"], "invalid choice: 'bogus'"),
    (["--batch-size", "0"], "--batch-size must be at least 1, not 0"),
    (["--batch-size", "-5"], "--batch-size must be at least 1, not -5"),
    (["--optimizer", "sgd", "--momentum", "-1"], "--momentum must be from 0 up to but not including 1, not -1"),
    (["--optimizer", "sgd", "--momentum", "1"], "--momentum must be from 0 up to but not including 1, not 1"),
    (["--lr", "-1"], "--lr must be above 0, not -1"),
    (["--lr", "0"], "--lr must be above 0, not 0"),
    (["--limit", "-5"], "--limit must be 0 (all) or a number of images, not -5"),
    (["--augment", "-1"], "--augment must be 0 (off) or a positive strength, not -1"),
    (["--weight-decay", "-1"], "--weight-decay must be 0 (off) or positive, not -1"),
    (["--warmup-epochs", "-2"], "--warmup-epochs must be 0 (none) or more, not -2"),
    (["--label-smoothing", "5"], "--label-smoothing must be a fraction from 0 up to but not including 1, not 5"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must be a fraction from 0 up to but not including 1, not -0.1"),
])
def test_out_of_range_run_settings_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--data", "x", *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and message in err and "Traceback" not in err


def test_edge_run_settings_are_accepted():
    args = train.parse_args(["--data", "x", "--limit", "0", "--augment", "0", "--weight-decay", "0",
                             "--warmup-epochs", "0", "--label-smoothing", "0", "--momentum", "0", "--batch-size", "1"])
    assert (args.limit, args.augment, args.weight_decay, args.warmup_epochs, args.label_smoothing, args.momentum,
            args.batch_size) == (0, 0.0, 0.0, 0, 0.0, 0.0, 1)


def test_unknown_architecture_is_refused_before_anything_is_written(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(argv(data, tmp_path, "--epochs", "1", "--arch", "bogus"))
    captured = capsys.readouterr()
    assert exit_.value.code == 2 and "invalid choice: 'bogus'" in captured.err and "data:" not in captured.out
    assert not (tmp_path / "run").exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize("flag", ["--out", "--run-dir", "--out folder"])
def test_an_output_that_cannot_be_written_is_a_clear_error_before_the_data_loads(data, tmp_path, capsys, flag):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    if flag == "--out":
        extra = ["--out", str(blocker / "models" / "tiny.keras")]  # a folder cannot be made inside a file
    elif flag == "--run-dir":
        extra = ["--run-dir", str(blocker / "run")]
    else:
        (tmp_path / "folder.keras").mkdir()
        extra, flag = ["--out", str(tmp_path / "folder.keras")], "--out"
    assert train.main(argv(data, tmp_path, "--epochs", "1", *extra)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(f"error: {flag} ") and captured.err.count("\n") == 1
    assert "data:" not in captured.out  # refused before the data was loaded
    assert not (tmp_path / "run").exists() or flag == "--run-dir"  # nor was a run folder left behind


def test_init_from_help_names_every_way_a_model_is_reshaped(capsys):
    with pytest.raises(SystemExit) as exit_:
        train.parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    for way in ("fine-tuning", "pruning", "widening", "deepening"):
        assert way in text, way


def test_a_run_passes_no_ignored_shuffle_and_says_when_it_writes_the_card(data, tmp_path, capsys):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train.main(argv(data, tmp_path, "--epochs", "1", "--limit", "64")) == 0
    assert not [w for w in caught if "shuffle" in str(w.message)]  # the training set is shuffled by tf.data
    lines = capsys.readouterr().out.strip().splitlines()
    assert "writing the model card (full evaluation) ..." in lines
    assert lines.index("writing the model card (full evaluation) ...") == len(lines) - 2  # then the headline


def test_resume_without_checkpoint_is_a_clear_error(data, tmp_path, capsys):
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--resume")) == 2
    err = capsys.readouterr().err
    assert "--resume: no checkpoint in" in err and str(tmp_path / "run") in err
    assert not (tmp_path / "models" / "tiny.keras").exists()


@pytest.mark.parametrize("flag", ["--resume", "--recalibrate"])
def test_a_damaged_run_state_is_a_clear_error(data, tmp_path, capsys, flag):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.keras").write_bytes(b"checkpoint")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.keras").write_bytes(b"model")
    (run / "state.json").write_text('{"epoch": 3, "best"')  # cut short as the run was killed mid-write
    assert train.main(argv(data, tmp_path, "--epochs", "1", flag)) == 2
    assert f"{run / 'state.json'} is not valid JSON" in capsys.readouterr().err


def test_wrong_data_path_is_a_clear_error(tmp_path, capsys):
    assert train.main(argv(tmp_path / "missing", tmp_path, "--epochs", "1")) == 2
    assert "data not found" in capsys.readouterr().err


def test_card_survives_missing_pieces(trained, data, tmp_path):
    model = tmp_path / "copy.keras"
    model.write_bytes((trained / "models" / "tiny.keras").read_bytes())
    state = {"epoch": 1, "args": {"arch": "tiny", "data": str(tmp_path / "moved"), "n_val": 71}}

    card = write_card(model, state, load_folder(data / "test"), timing_calls=5)

    assert json.loads(model.with_suffix(".json").read_text()) == card
    assert card["accuracy"] is not None and card["regression_sample"] is not None
    assert card["calibration"] is None and card["accuracy_without_train_duplicates"] is None
    assert card["training"]["best_epoch"] is None
    missing = " ".join(card["notes"])
    assert "no temperature" in missing and "moved" in missing and "no training log" in missing


def test_card_takes_the_best_epoch_and_its_accuracy_from_the_same_log_row(trained, data, tmp_path):
    model = tmp_path / "joined.keras"
    model.write_bytes((trained / "models" / "tiny.keras").read_bytes())
    # A log joined over stages: the best epoch (2) is an earlier stage's, not this run's own best (0.6).
    model.with_suffix(".log.csv").write_text("epoch,accuracy,loss,lr,val_accuracy,val_loss\n"
                                              "0,0.4,1.5,0.001,0.5,1.4\n1,0.6,1.2,0.0,0.7,1.2\n"
                                              "2,0.5,1.3,0.001,0.6,1.3\n")
    state = {"epoch": 1, "best": 0.6, "args": {"arch": "tiny", "n_val": 71}}

    card = write_card(model, state, load_folder(data / "test"), timing_calls=5)

    assert card["training"]["best_epoch"] == 2
    assert card["training"]["best_epoch_val_accuracy_no_tta"] == 0.7


def test_the_shipped_cards_best_epoch_and_its_accuracy_agree_with_the_log():
    from pathlib import Path

    from app.training.plots import read_training_log

    models = Path(__file__).resolve().parent.parent / "models"
    log = read_training_log(models / "emotion.log.csv")
    for name in ("emotion.json", "emotion.int8.json"):
        training = json.loads((models / name).read_text())["training"]
        row = list(log["epoch"]).index(training["best_epoch"] - 1)  # CSVLogger counts from 0
        assert training["best_epoch_val_accuracy_no_tta"] == log["val_accuracy"][row], name
        assert log["val_accuracy"][row] == np.nanmax(log["val_accuracy"]), name


def test_card_for_a_missing_model_is_still_written(data, tmp_path):
    card = write_card(tmp_path / "ghost.keras", {"args": {}}, load_folder(data / "test"))

    assert (tmp_path / "ghost.json").is_file()
    assert card["accuracy"] is None and card["inference"] is None
    assert any("emotion model not found" in note for note in card["notes"])


def test_card_command_refuses_what_it_cannot_describe(trained, tmp_path, capsys):
    from app.training import card as card_cli

    served = tmp_path / "tiny.int8.tflite"
    served.write_bytes(b"TFL3")
    assert card_cli.main([str(served), "--run-dir", str(trained / "run")]) == 2
    assert "is not a .keras model" in capsys.readouterr().err and not served.with_suffix(".json").exists()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "state.json").write_text("[1, 2]")
    assert card_cli.main([str(trained / "models" / "tiny.keras"), "--run-dir", str(run_dir)]) == 2
    assert "state.json holds a JSON list, not a record" in capsys.readouterr().err
    missing = tmp_path / "o" / "missing.keras"
    assert card_cli.main([str(missing), "--run-dir", str(trained / "run")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {missing} does not exist\n" and not missing.with_suffix(".json").exists()


def test_init_from_starts_from_a_trained_model_with_its_temperature_undone(trained, tmp_path):
    import keras

    from app.training.architectures import make_model

    source = trained / "models" / "tiny.keras"
    temperature = json.loads(source.with_suffix(".json").read_text())["calibration"]["temperature"]
    model = make_model("tiny")
    record = train.init_from(model, source)

    shipped = keras.models.load_model(source)
    for mine, theirs in zip(model.get_weights()[:-2], shipped.get_weights()[:-2]):
        np.testing.assert_array_equal(mine, theirs)
    kernel, bias = model.get_layer("logits").get_weights()
    np.testing.assert_allclose(kernel, shipped.get_layer("logits").get_weights()[0] * temperature, rtol=1e-6)
    np.testing.assert_allclose(bias, shipped.get_layer("logits").get_weights()[1] * temperature, rtol=1e-6)
    assert record["temperature_undone"] == temperature and len(record["sha256"]) == 64
    assert record["parent"]["architecture"] == "tiny" and record["parent"]["training"]["epochs_trained"] == 1


def test_fine_tuning_run_records_its_parent_in_the_card(trained, data, tmp_path):
    source = trained / "models" / "tiny.keras"
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--init-from", str(source))) == 0
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["training"]["init_from"]["model"] == str(source)
    assert card["training"]["command"].endswith(f"--init-from {source}")


def test_init_from_a_model_with_other_layers_is_a_clear_error(trained, data, tmp_path, capsys):
    other = tmp_path / "other.keras"
    from app.training.architectures import make_model

    make_model("vgg").save(other)
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--init-from", str(other))) == 2
    assert "does not match --arch's layers" in capsys.readouterr().err
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--init-from", str(tmp_path / "nope.keras"))) == 2
    assert "nope.keras does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--init-from", str(broken))) == 2
    assert "broken.keras is not a readable Keras model" in capsys.readouterr().err
    served = tmp_path / "emotion.int8.tflite"
    served.write_bytes(b"TFL3")
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--init-from", str(served))) == 2
    assert "emotion.int8.tflite is not a .keras model" in capsys.readouterr().err


def test_recalibrate_refits_the_temperature_without_training(data, tmp_path):
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--calibrate-for", "nll")) == 0
    state_path = tmp_path / "run" / "state.json"
    before = json.loads(state_path.read_text())
    model_path = tmp_path / "models" / "tiny.keras"
    import keras

    raw = keras.models.load_model(model_path).get_layer("logits").get_weights()[0] * before["temperature"]

    assert train.main(argv(data, tmp_path, "--epochs", "1", "--recalibrate")) == 0
    after = json.loads(state_path.read_text())
    assert after["epoch"] == 1 and after["calibration"]["objective"] == "ece"
    kernel = keras.models.load_model(model_path).get_layer("logits").get_weights()[0]
    np.testing.assert_allclose(kernel * after["temperature"], raw, rtol=1e-5, atol=1e-6)  # only T changed
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["calibration"]["objective"] == "ece" and "ECE" in card["calibration"]["method"]
    assert card["calibration"]["cross_validated"]["folds"] == 5
    assert card["training"]["recalibrated_with"][0].endswith("--recalibrate")
    assert [r["epoch"] for r in log_rows(tmp_path)] == ["0"]  # nothing trained


def test_recalibrate_fits_on_the_runs_own_validation_split(data, tmp_path, capsys):
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--val-split", "0.2", "--seed", "5")) == 0
    card_path = tmp_path / "models" / "tiny.json"
    first = json.loads(card_path.read_text())
    assert first["evaluated_on"]["checksum"] == first["training"]["val_checksum"]
    capsys.readouterr()
    assert train.main(argv(data, tmp_path, "--recalibrate", "--seed", "6")) == 0  # neither PublicTest nor seed 6
    assert "--recalibrate: the run keeps --seed 5 (this command asked for 6)" in capsys.readouterr().out
    card = json.loads(card_path.read_text())
    assert card["evaluated_on"]["checksum"] == first["training"]["val_checksum"]
    assert card["evaluated_on"]["n"] == first["evaluated_on"]["n"]


def test_recalibrate_without_a_finished_run_is_a_clear_error(data, tmp_path, capsys):
    assert train.main(argv(data, tmp_path, "--recalibrate")) == 2
    assert "--recalibrate: no finished run" in capsys.readouterr().err


def test_precision_auto_uses_bfloat16_only_where_it_runs_natively():
    avx2 = {"fpu", "sse2", "avx", "avx2", "fma"}
    assert train.resolve_precision("auto", cpu_flags=avx2, gpu=False) == "fp32"  # emulated: ~10x slower
    assert train.resolve_precision("auto", cpu_flags=avx2 | {"avx512f", "avx512_bf16"}, gpu=False) == "bf16"
    assert train.resolve_precision("auto", cpu_flags=avx2 | {"amx_bf16", "amx_tile"}, gpu=False) == "bf16"
    assert train.resolve_precision("auto", cpu_flags=set(), gpu=True) == "bf16"
    assert train.resolve_precision("bf16", cpu_flags=avx2, gpu=False) == "bf16"  # an explicit choice stands
    assert train.parse_args(["--data", "x"]).precision == "auto"


def test_the_card_records_the_precision_the_run_used(data, tmp_path):
    args = [a for a in argv(data, tmp_path, "--epochs", "1") if a not in ("--precision", "fp32")]
    assert train.main(args) == 0
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["training"]["hyperparameters"]["precision"] == train.resolve_precision("auto")


def test_optimizer_choice_builds_adamw_by_default_or_nesterov_sgd():
    adamw = train.make_optimizer(train.parse_args(["--data", "x"]), 1e-3)
    assert type(adamw).__name__ == "AdamW" and adamw.weight_decay == pytest.approx(0.02)
    args = train.parse_args(["--data", "x", "--optimizer", "sgd", "--momentum", "0.8", "--weight-decay", "1e-3"])
    sgd = train.make_optimizer(args, 1e-2)
    assert type(sgd).__name__ == "SGD" and sgd.nesterov and sgd.momentum == pytest.approx(0.8)
    assert sgd.weight_decay == pytest.approx(1e-3)


def test_unknown_optimizer_is_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_args(["--data", "x", "--optimizer", "rmsprop"])
    assert exc.value.code == 2 and "invalid choice: 'rmsprop'" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (("--mixup", "-0.2"), "--mixup must be 0 (off) or a positive ALPHA, not -0.2"),
    (("--cutmix", "1.5"), "--cutmix must be 0 (off) or an ALPHA up to 1, not 1.5"),
    (("--mixup", "0.2", "--cutmix", "1.0"), "--mixup and --cutmix are alternatives: give one of them"),
    (("--distill", "t.keras", "--distill-weight", "0"), "--distill-weight must be above 0 and at most 1, not 0"),
    (("--distill", "t.keras", "--distill-weight", "1.5"), "--distill-weight must be above 0 and at most 1, not 1.5"),
    (("--distill-weight", "0.3"), "--distill-weight goes with --distill MODEL: give the teachers"),
    (("--sam", "-0.05"), "--sam must be 0 (off) or a positive RHO, not -0.05"),
])
def test_mixing_settings_out_of_range_or_together_are_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as exc:
        train.parse_args(["--data", "x", *flags])
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert train.parse_args(["--data", "x", "--cutmix", "1.0"]).cutmix == 1.0


@pytest.mark.parametrize("extra", [(), ("--sam", "0.1")], ids=["plain", "sam"])
def test_a_run_traces_its_training_and_validation_steps_once(data, tmp_path, monkeypatch, extra):
    """The optimizer's, loss's and metrics' variables exist before fit (train.build_state): a step that
    creates them while traced is traced twice, for a new run and a resumed one alike."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    from app.training.sam import SharpnessAware

    traced = []

    def counted(cls, name):
        real = getattr(cls, name)

        def step(self, batch):
            traced.append(f"{cls.__name__}.{name}")  # called only while TensorFlow traces the step
            return real(self, batch)
        return step

    for cls, name in ((TensorFlowTrainer, "train_step"), (TensorFlowTrainer, "test_step"),
                      (SharpnessAware, "train_step")):
        monkeypatch.setattr(cls, name, counted(cls, name))

    assert train.main(argv(data, tmp_path, "--epochs", "2", "--limit", "140", *extra)) == 0
    step = "SharpnessAware.train_step" if extra else "TensorFlowTrainer.train_step"
    assert sorted(traced) == sorted([step, "TensorFlowTrainer.test_step"])  # once each for both epochs
    traced.clear()
    assert train.main(argv(data, tmp_path, "--epochs", "3", "--resume")) == 0
    assert sorted(traced) == sorted([step, "TensorFlowTrainer.test_step"])


def test_sgd_run_records_its_optimizer_and_resumes_with_it(data, tmp_path):
    import keras

    sgd = ("--optimizer", "sgd", "--lr", "2e-2", "--weight-decay", "1e-3")
    assert train.main(argv(data, tmp_path, "--epochs", "1", *sgd)) == 0
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume")) == 0
    checkpoint = keras.models.load_model(tmp_path / "run" / "last.keras")
    assert type(checkpoint.optimizer).__name__ == "SGD" and checkpoint.optimizer.nesterov
    assert int(checkpoint.optimizer.iterations) == 2 * 4  # 280 faces in batches of 70, both epochs
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    hyper = card["training"]["hyperparameters"]
    assert hyper["optimizer"] == "sgd" and hyper["momentum"] == 0.9 and card["training"]["epochs_trained"] == 2


def test_sam_run_trains_the_plain_net_records_rho_and_resumes_with_it(data, tmp_path, capsys):
    import keras

    from app.training.sam import SharpnessAware

    assert train.main(argv(data, tmp_path, "--epochs", "1", "--sam", "0.1", "--limit", "128")) == 0
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume")) == 0
    assert "--resume: the run keeps --sam 0.1 (this command asked for 0.0)" in capsys.readouterr().out
    checkpoint = keras.models.load_model(tmp_path / "run" / "last.keras")
    assert isinstance(checkpoint, SharpnessAware) and checkpoint.rho == 0.1
    assert int(checkpoint.optimizer.iterations) == 2 * 2  # 128 faces in batches of 64, both epochs
    shipped = keras.models.load_model(tmp_path / "models" / "tiny.keras")
    assert not isinstance(shipped, SharpnessAware) and shipped.name == "tiny"  # the server loads a plain net
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["training"]["hyperparameters"]["sam"] == 0.1 and card["training"]["epochs_trained"] == 2


def record_training_datasets(monkeypatch) -> list[tuple]:
    """What each training-set ``make_dataset`` call is given: (faces, batch size, seed, augment, mixup, cutmix,
    the teachers' parameter counts, distillation weight)."""
    used = []
    real = train.make_dataset

    def recording(split, batch_size, seed, augment_strength, shuffle, mixup=0.0, cutmix=0.0, teachers=(),
                  distill_weight=0.5):
        if shuffle:  # the training set, not PublicTest
            used.append((len(split), batch_size, seed, augment_strength, mixup, cutmix,
                         [teacher.count_params() for teacher in teachers], distill_weight))
        return real(split, batch_size, seed, augment_strength, shuffle, mixup, cutmix, teachers, distill_weight)

    monkeypatch.setattr(train, "make_dataset", recording)
    return used


def test_resume_keeps_the_runs_data_settings_and_says_so(data, tmp_path, monkeypatch, capsys):
    import keras

    used = record_training_datasets(monkeypatch)
    first = ("--augment", "0.5", "--mixup", "0.3", "--limit", "200", "--seed", "5")
    assert train.main(argv(data, tmp_path, "--epochs", "1", *first)) == 0
    capsys.readouterr()
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume", "--batch-size", "32", "--augment", "0")) == 0
    # --mixup etc. not repeated, --batch-size and --augment ignored; the draws go on from the resume's own seed
    assert used == [(200, 70, 5, 0.5, 0.3, 0.0, [], 0.5), (200, 70, train.draw_seed(5, 1), 0.5, 0.3, 0.0, [], 0.5)]
    out = capsys.readouterr().out
    assert "--resume: the run keeps --batch-size 70 (this command asked for 32)" in out
    assert "--resume: the run keeps --augment 0.5 (this command asked for 0.0)" in out
    assert "--resume: the run keeps --mixup 0.3 (this command asked for 0.0)" in out
    assert int(keras.models.load_model(tmp_path / "run" / "last.keras").optimizer.iterations) == 2 * 3  # 200 faces in batches of 70
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    hyper = card["training"]["hyperparameters"]
    assert (hyper["mixup"], hyper["augment"], hyper["batch_size"]) == (0.3, 0.5, 70)
    assert card["training"]["epochs_trained"] == 2 and len(log_rows(tmp_path)) == 2


def test_resume_of_a_run_recorded_before_cutmix_existed_mixes_no_faces(data, tmp_path, monkeypatch, capsys):
    used = record_training_datasets(monkeypatch)
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--limit", "140")) == 0
    state_path = tmp_path / "run" / "state.json"
    state = json.loads(state_path.read_text())
    for key in ("mixup", "cutmix"):  # as a run of an earlier version recorded it
        del state["args"][key]
    state_path.write_text(json.dumps(state))
    capsys.readouterr()
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume", "--cutmix", "1.0")) == 0
    assert [call[4:6] for call in used] == [(0.0, 0.0)] * 2  # (mixup, cutmix) of both epochs' datasets
    assert "--resume: the run keeps --cutmix 0.0 (this command asked for 1.0)" in capsys.readouterr().out


def test_resume_keeps_the_runs_precision_and_says_so(data, tmp_path, monkeypatch, capsys):
    import keras

    policies = []
    real = train.make_dataset

    def recording(*args, **kwargs):
        policies.append(keras.mixed_precision.global_policy().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "make_dataset", recording)
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--limit", "64", "--precision", "bf16")) == 0
    capsys.readouterr()
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume")) == 0  # argv asks for fp32
    assert policies == ["mixed_bfloat16"] * 4  # training and PublicTest datasets of both commands
    assert "--resume: the run keeps --precision bf16 (this command asked for fp32)" in capsys.readouterr().out
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    assert card["training"]["hyperparameters"]["precision"] == "bf16"
    assert keras.mixed_precision.global_policy().name == "float32"


def test_distilled_run_learns_from_its_teachers_records_them_and_resumes_with_them(trained, data, tmp_path,
                                                                                    monkeypatch, capsys):
    import hashlib

    from app.training.architectures import make_model

    teacher = trained / "models" / "tiny.keras"
    used = record_training_datasets(monkeypatch)
    distill = ("--distill", str(teacher), "--distill", str(teacher), "--distill-weight", "0.4", "--limit", "128")
    assert train.main(argv(data, tmp_path, "--epochs", "1", *distill)) == 0
    assert "distilling from 2 teacher(s), weight 0.4" in capsys.readouterr().out
    assert train.main(argv(data, tmp_path, "--epochs", "2", "--resume")) == 0
    params = make_model("tiny").count_params()
    assert [call[-2:] for call in used] == [([params, params], 0.4)] * 2  # the resumed epoch had the same teachers
    kept = f"--resume: the run keeps --distill {teacher} {teacher} (this command asked for none)"
    assert kept in capsys.readouterr().out
    card = json.loads((tmp_path / "models" / "tiny.json").read_text())
    sha = hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert card["training"]["teachers"] == [{"model": str(teacher), "sha256": sha}] * 2
    assert card["training"]["hyperparameters"]["distill_weight"] == 0.4
    assert card["training"]["epochs_trained"] == 2


def test_a_run_without_teachers_records_none(trained):
    card = json.loads((trained / "models" / "tiny.json").read_text())
    assert card["training"]["teachers"] is None and "distill_weight" not in card["training"]["hyperparameters"]


def test_a_missing_or_mismatched_teacher_is_a_clear_error_before_training(data, tmp_path, capsys):
    import keras

    from app.training.architectures import vgg

    assert train.main(argv(data, tmp_path, "--epochs", "1", "--distill", str(tmp_path / "none.keras"))) == 2
    assert f"--distill: {tmp_path / 'none.keras'} does not exist" in capsys.readouterr().err
    binary = tmp_path / "binary.keras"
    vgg(widths=(4,), convs=(1,), dense=4, num_classes=2).save(binary)
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--distill", str(binary))) == 2
    assert "takes (48, 48, 1) and gives (2,); expected (48, 48, 1) -> (7,)" in capsys.readouterr().err
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    assert train.main(argv(data, tmp_path, "--epochs", "1", "--distill", str(junk))) == 2
    assert f"--distill: {junk} is not a readable Keras model" in capsys.readouterr().err
    assert not (tmp_path / "models" / "tiny.keras").exists()
    assert keras.mixed_precision.global_policy().name == "float32"


def test_a_bfloat16_run_leaves_the_precision_policy_as_it_found_it(data, tmp_path):
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    assert train.main(argv(data, tmp_path / "bf16", "--epochs", "1", "--limit", "64", "--precision", "bf16")) == 0
    assert keras.mixed_precision.global_policy().name == "float32"  # models built after it stay float32
    with train.precision_policy("mixed_bfloat16"):  # an explicit float32 run is float32 even so
        assert train.main(argv(data, tmp_path / "fp32", "--epochs", "1", "--limit", "64")) == 0
        checkpoint = keras.models.load_model(tmp_path / "fp32" / "run" / "last.keras")
        assert checkpoint.get_layer("logits").dtype_policy.name == "float32"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
