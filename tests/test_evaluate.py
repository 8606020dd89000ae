"""The evaluation CLI (through the serving path) and the metrics it is built on."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from app.training import evaluate, metrics
from app.training.architectures import make_model
from tests.cli import run_main
from tests.fersynth import csv_rows, is_png, write_csv, write_tree

LOG = """epoch,accuracy,loss,lr,val_accuracy,val_loss
0,0.30,1.80,0.002,0.35,1.70
1,0.45,1.50,0.0015,0.44,1.55
2,0.55,1.30,0.0005,0.47,1.50
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("fer"), train_per_class=2, test_per_class=6)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """An untrained tiny model (evaluation must be consistent whatever it predicts) with a training log."""
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    make_model("tiny").save(path)
    path.with_suffix(".log.csv").write_text(LOG)
    return path


def run_cli(*args) -> tuple[int, str, str]:
    return run_main(evaluate.main, *args)


@pytest.fixture(scope="module")
def report(data, model_path, tmp_path_factory):
    """One --json --out run on the test/ folder, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("figures")
    code, stdout, _ = run_cli("--data", data / "test", "--model", model_path, "--json", "--out", out)
    assert code == 0
    return json.loads(stdout), out  # exactly one JSON object, nothing else on stdout


def test_json_report_is_self_consistent(report):
    result, _ = report
    cm = np.array(result["confusion_matrix"])
    assert result["n"] == 43 and cm.sum() == result["n"]
    assert result["accuracy"] == pytest.approx(np.trace(cm) / result["n"])
    assert result["macro_f1"] == pytest.approx(np.mean([c["f1"] for c in result["per_class"].values()]))
    assert [c["support"] for c in result["per_class"].values()] == cm.sum(axis=1).tolist() == [7] + [6] * 6
    assert 0.0 <= result["ece"] <= 1.0 and result["tta"] is True
    assert result["labels"] == list(result["per_class"])


def test_out_writes_real_pngs(report):
    result, out = report
    for name in ("confusion_matrix.png", "reliability.png", "curves.png"):
        assert is_png(out / name), name
    assert result["figures"]["curves"] == str(out / "curves.png")


def test_curves_are_skipped_without_a_training_log(data, model_path, tmp_path):
    lonely = tmp_path / "lonely.keras"
    lonely.write_bytes(model_path.read_bytes())
    code, stdout, _ = run_cli("--data", data / "test", "--model", lonely, "--out", tmp_path / "fig")
    assert code == 0
    assert is_png(tmp_path / "fig" / "confusion_matrix.png") and not (tmp_path / "fig" / "curves.png").exists()
    assert "wrote" in stdout


def test_table_output_and_data_forms_agree(data, model_path, tmp_path, report):
    result, _ = report
    code, stdout, _ = run_cli("--data", data, "--model", model_path)  # train/ + test/: evaluates test/
    assert code == 0
    lo, hi = result["accuracy_ci95"]
    assert f"accuracy  {result['accuracy']:.4f} (95 % {lo:.4f}–{hi:.4f})" in stdout and "macro-F1" in stdout
    for emotion in result["per_class"]:
        assert emotion in stdout
    csv_path = write_csv(tmp_path / "fer2013.csv", csv_rows({"Training": 1, "PublicTest": 3}))
    code, stdout, _ = run_cli("--data", csv_path, "--model", model_path, "--json", "--no-tta")
    assert code == 0
    parsed = json.loads(stdout)
    assert parsed["n"] == 21 and parsed["tta"] is False


@pytest.mark.parametrize("make_args, message", [
    (lambda d, m, t: ["--data", t / "missing", "--model", m], "data not found"),
    (lambda d, m, t: ["--data", d / "train" / "angry", "--model", m], "missing class folder(s)"),
    (lambda d, m, t: ["--data", d, "--model", t / "none.keras"], "emotion model not found"),
    (lambda d, m, t: ["--data", write_csv(t / "f.csv", csv_rows({"Training": 1})), "--model", m],
     "no rows with Usage=PublicTest"),
], ids=["missing-data", "not-a-split", "missing-model", "csv-without-publictest"])
def test_bad_input_exits_2_with_a_message(data, model_path, tmp_path, make_args, message):
    code, stdout, stderr = run_cli(*make_args(data, model_path, tmp_path))
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and message in stderr
    assert "MODEL_PATH" not in stderr  # the server's setting; this command takes --model


def test_missing_model_message_names_the_flag(data, tmp_path):
    missing = tmp_path / "none.keras"
    code, _, stderr = run_cli("--data", data, "--model", missing)
    assert code == 2
    assert stderr == f"error: emotion model not found: {missing} (give --model a .keras or .tflite file)\n"


def test_model_help_says_which_model_is_the_default():
    from app.config import Config

    code, stdout, _ = run_cli("--help")
    text = " ".join(stdout.split())
    assert code == 0 and "the served model" not in text
    assert f"(default: {Config.MODEL_PATH}, the model the server ships with; this command does not read the " \
           "MODEL_PATH environment variable)" in text


def test_train_only_tree_and_unusable_out_exit_2(data, model_path, tmp_path):
    (tmp_path / "only" / "train").mkdir(parents=True)
    code, _, stderr = run_cli("--data", tmp_path / "only", "--model", model_path)
    assert code == 2 and "has train/ but no test/" in stderr
    (tmp_path / "file").write_text("")
    code, _, stderr = run_cli("--data", data / "test", "--model", model_path, "--out", tmp_path / "file")
    assert code == 2 and "--out" in stderr


# Metrics, with figures worked out by hand.

def test_confusion_matrix_and_per_class_by_hand():
    y_true = np.array([0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 1, 1, 2, 2])
    cm = metrics.confusion_matrix(y_true, y_pred, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    classes = metrics.per_class(cm)
    assert list(classes) == ["angry", "disgust", "fear"]
    assert classes["angry"] == {"precision": 1.0, "recall": pytest.approx(2 / 3), "f1": pytest.approx(0.8),
                                "support": 3}
    assert classes["disgust"]["precision"] == 0.5 and classes["disgust"]["recall"] == 0.5
    assert classes["fear"]["precision"] == 0.5 and classes["fear"]["f1"] == pytest.approx(2 / 3)


def test_per_class_without_predictions_or_support_is_zero():
    classes = metrics.per_class(metrics.confusion_matrix([0, 0], [0, 0], 2))
    assert classes["disgust"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_macro_figures_leave_out_a_class_neither_present_nor_predicted():
    # A perfect classifier on faces with no label 1 and no prediction of it: its macro-F1 is 1, not 2/3.
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.1, 0.8]])
    s = metrics.summarize(probs, np.array([0, 2]))
    assert s["macro_f1"] == 1.0
    # A class predicted but never present counts (its precision is 0), and so does one present but never predicted.
    s = metrics.summarize(np.array([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]), np.array([0, 2]))
    assert s["macro_f1"] == pytest.approx(1 / 3)
    assert metrics.macro_average(s["per_class"], s["confusion_matrix"], "recall") == pytest.approx(1 / 3)


def test_summarize_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    y = np.array([0, 1, 1, 2])
    s = metrics.summarize(probs, y)
    assert s["n"] == 4 and s["accuracy"] == 0.75
    assert s["macro_f1"] == pytest.approx(np.mean([2 / 3, 2 / 3, 1.0]))
    assert s["nll"] == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.8, 0.6])))
    # The two 0.6 predictions share a bin (one right); 0.7 and 0.8 sit alone in theirs, both right.
    assert s["ece"] == pytest.approx((2 / 4) * abs(0.5 - 0.6) + (1 / 4) * 0.3 + (1 / 4) * 0.2)


def test_ece_of_perfectly_calibrated_predictions_is_zero():
    # Ten predictions at 0.8 confidence, eight right: calibrated by construction.
    probs = np.tile([0.8, 0.1, 0.1], (10, 1))
    y = np.array([0] * 8 + [1] * 2)
    assert metrics.expected_calibration_error(probs, y) == pytest.approx(0.0, abs=1e-12)


def draw_labels(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One label per row, drawn from that row's probabilities."""
    return (probs.cumsum(axis=1) > rng.random((len(probs), 1))).argmax(axis=1)


def test_ece_of_sampled_calibrated_predictions_is_near_zero():
    rng = np.random.default_rng(0)
    probs = metrics.softmax(rng.normal(0, 2, (20_000, 7)))
    y = draw_labels(probs, rng)  # calibrated by construction, up to sampling noise
    assert metrics.expected_calibration_error(probs, y) < 0.02
    overconfident = metrics.softmax(np.log(probs) * 3)
    assert metrics.expected_calibration_error(overconfident, y) > 0.1


def test_fit_temperature_recovers_a_known_temperature():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (8000, 7))
    true_t = 1.8
    y = draw_labels(metrics.softmax(logits / true_t), rng)
    assert metrics.fit_temperature([logits], y) == pytest.approx(true_t, rel=0.08)
    mirrored = [logits, logits + rng.normal(0, 0.01, logits.shape)]  # two near-identical views
    assert metrics.fit_temperature(mirrored, y) == pytest.approx(true_t, rel=0.08)
    assert metrics.fit_temperature([logits], y, "ece") == pytest.approx(true_t, rel=0.15)


def test_ece_temperature_lowers_ece_and_holds_out_of_fold():
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 3, (6000, 7))
    y = draw_labels(metrics.softmax(logits / 2.0), rng)  # the raw logits are overconfident
    raw = metrics.expected_calibration_error(metrics.softmax(logits), y)
    t = metrics.fit_temperature([logits], y, "ece")
    fitted = metrics.expected_calibration_error(metrics.softmax(logits / t), y)
    by_nll = metrics.expected_calibration_error(metrics.softmax(logits / metrics.fit_temperature([logits], y)), y)
    truth = metrics.expected_calibration_error(metrics.softmax(logits / 2.0), y)  # sampling noise only
    assert raw > 0.1 and fitted <= min(by_nll, truth) + 1e-9
    check = metrics.cross_validated_ece([logits], y, "ece", folds=5)
    assert check["folds"] == 5 and len(check["temperatures"]) == 5
    assert fitted <= check["ece"] < truth + 0.01  # out of fold a little worse, as good as the truth
    assert all(t == pytest.approx(2.0, rel=0.2) for t in check["temperatures"])
    with pytest.raises(ValueError, match="objective"):
        metrics.fit_temperature([logits], y, "accuracy")


@pytest.mark.parametrize("correct, n, low, high", [
    (81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718),
    (29, 29, 0.8830, 1.0),
])  # Newcombe (1998), Table II, the Wilson score method without continuity correction
def test_wilson_interval_matches_newcombes_examples(correct, n, low, high):
    lo, hi = metrics.wilson_interval(correct, n)
    assert lo == pytest.approx(low, abs=5e-5) and hi == pytest.approx(high, abs=5e-5)


def test_wilson_interval_rejects_impossible_counts():
    for correct, n in ((1, 0), (-1, 10), (11, 10)):
        with pytest.raises(ValueError):
            metrics.wilson_interval(correct, n)


@pytest.mark.parametrize("only_a, only_b, p", [
    (0, 0, 1.0), (3, 3, 1.0), (0, 5, 2 / 2 ** 5), (9, 1, 2 * (1 + 10) / 2 ** 10), (5, 0, 0.0625),
])
def test_mcnemar_exact_by_hand(only_a, only_b, p):
    assert metrics.mcnemar_exact(only_a, only_b) == pytest.approx(p)


def test_mcnemar_exact_is_symmetric_and_shrinks_with_a_growing_gap():
    assert metrics.mcnemar_exact(86, 59) == pytest.approx(metrics.mcnemar_exact(59, 86))
    ps = [metrics.mcnemar_exact(70 + d, 70 - d) for d in range(0, 40, 5)]
    assert ps == sorted(ps, reverse=True) and ps[0] == 1.0 and ps[-1] < 1e-3
    with pytest.raises(ValueError):
        metrics.mcnemar_exact(-1, 3)


def test_summarize_reports_the_accuracy_interval(report):
    result, _ = report
    lo, hi = result["accuracy_ci95"]
    assert lo < result["accuracy"] < hi  # an untrained model: neither all right nor all wrong on 43 faces
    correct = round(result["accuracy"] * result["n"])
    assert (lo, hi) == pytest.approx(metrics.wilson_interval(correct, result["n"]))
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert metrics.summarize(probs, np.array([0, 1]))["accuracy_ci95"] == pytest.approx(
        list(metrics.wilson_interval(2, 2)))
