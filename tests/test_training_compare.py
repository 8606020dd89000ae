"""Comparing models on the same faces: accuracies with intervals, and McNemar's test for each pair."""
from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from app.training import compare, evaluate, metrics
from app.training.architectures import make_model
from app.vision.emotions import EmotionModel
from tests.cli import run_main
from tests.fersynth import write_tree


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("fer"), train_per_class=1, test_per_class=6)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two untrained tiny models that answer differently (what they answer does not matter, only consistency)."""
    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        paths.append(folder / f"tiny-{seed}.keras")
        make_model("tiny").save(paths[-1])
    return paths


def run_cli(*args) -> tuple[int, str, str]:
    return run_main(compare.main, *args)


def test_compare_pair_by_hand():
    y = np.array([0, 1, 2, 3, 4, 5])
    a = np.array([0, 1, 2, 0, 0, 0])  # right on faces 0-2
    b = np.array([0, 0, 0, 3, 4, 0])  # right on faces 0, 3, 4
    pair = compare.compare_pair(y, a, b)
    assert pair == {"agree": pytest.approx(2 / 6), "both_right": 1, "only_a_right": 2, "only_b_right": 2,
                    "both_wrong": 1, "accuracy_difference": pytest.approx(0.0), "mcnemar_p": 1.0}


def test_json_report_matches_evaluate_and_adds_up(data, models):
    code, stdout, _ = run_cli("--data", data / "test", *models, models[0], "--json")
    assert code == 0
    report = json.loads(stdout)
    assert report["n"] == 43 and report["tta"] is True and len(report["pairs"]) == 3
    split = evaluate.load_eval_split(data / "test")
    assert report["checksum"] == split.checksum
    for entry, path in zip(report["models"], [*models, models[0]], strict=True):
        figures, _ = evaluate.evaluate(EmotionModel.load(path), split)
        assert entry["accuracy"] == pytest.approx(figures["accuracy"])
        assert entry["accuracy_ci95"] == pytest.approx(figures["accuracy_ci95"])
    first, second = report["models"][:2]
    for pair in report["pairs"]:
        assert pair["both_right"] + pair["only_a_right"] + pair["only_b_right"] + pair["both_wrong"] == 43
    a_vs_b, a_vs_itself = report["pairs"][0], report["pairs"][1]
    assert a_vs_b["accuracy_difference"] == pytest.approx(first["accuracy"] - second["accuracy"])
    assert (a_vs_b["both_right"] + a_vs_b["only_a_right"]) / 43 == pytest.approx(first["accuracy"])
    assert a_vs_b["mcnemar_p"] == pytest.approx(metrics.mcnemar_exact(a_vs_b["only_a_right"],
                                                                      a_vs_b["only_b_right"]))
    assert a_vs_b["agree"] < 1.0  # two differently initialised nets
    assert a_vs_itself["agree"] == 1.0 and a_vs_itself["mcnemar_p"] == 1.0
    assert a_vs_itself["only_a_right"] == a_vs_itself["only_b_right"] == 0


def test_table_names_every_model_and_pair(data, models):
    code, stdout, _ = run_cli("--data", data / "test", *models, "--no-tta")
    assert code == 0
    assert stdout.startswith("43 faces (no TTA)")
    assert all(str(path) in stdout for path in models)
    assert stdout.count("(95 % ") == 2 and stdout.count("exact McNemar p = ") == 1
    assert f"{models[0]}  vs  {models[1]}" in stdout


@pytest.mark.parametrize("make_args, message", [
    (lambda d, m, t: ["--data", d / "test", m[0]], "at least two models"),
    (lambda d, m, t: ["--data", d / "test", m[0], t / "none.keras"],
     "emotion model not found: {t}/none.keras (each MODEL is a .keras or .tflite file)"),
    (lambda d, m, t: ["--data", t / "missing", *m], "data not found"),
], ids=["one-model", "missing-model", "missing-data"])
def test_bad_input_exits_2_with_a_message(data, models, tmp_path, make_args, message):
    code, stdout, stderr = run_cli(*make_args(data, models, tmp_path))
    assert code == 2 and stdout == ""
    assert message.format(t=tmp_path) in stderr and "MODEL_PATH" not in stderr  # the server's, not this command's
