"""Fuse trained emotion models into one served model: the mean of their logits, calibrated.

    python -m app.training.ensemble --data ../shared/fer2013 --out models/emotion.keras A.keras B.keras

Each member's folded temperature (from its card) is undone, the fused model
averages the members' raw logits, and a 7x7 ``logits`` head -- the identity
divided by a temperature fitted on the validation split, exactly as at the
end of training -- turns the mean into calibrated probabilities. The result
is one ``.keras`` file that the server loads like any other, with a model
card (``<out>.json``) that lists its members. Members must have been trained
on the same training data as ``--data`` holds (their cards say so).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from app.training.data import DataError, check_output, load_dataset, read_record  # noqa: E402
from app.training.train import calibrate, record_command, run_card_command, save_atomically  # noqa: E402
from app.vision.preprocess import EMOTIONS, INPUT_SIZE  # noqa: E402


def load_member(path: Path, index: int, train_checksum: str) -> tuple[keras.Model, dict]:
    """A member's raw-logits sub-model (temperature undone) and its record for the card."""
    if not path.is_file():
        raise DataError(f"member {path} does not exist")
    card_path = path.with_suffix(".json")
    if not card_path.is_file():
        raise DataError(f"member {path} has no model card {card_path}: its training data cannot be checked")
    try:
        card = read_record(card_path)
    except DataError as exc:
        raise DataError(f"member card: {exc}") from None
    trained_on = (card.get("training") or {}).get("train_checksum")
    if trained_on != train_checksum:
        raise DataError(f"member {path} was trained on other data (train checksum {str(trained_on)[:12]}, "
                        f"--data has {train_checksum[:12]})")
    try:
        model = keras.models.load_model(path, compile=False)
        head = model.get_layer("logits")
    except Exception as exc:  # unreadable file or a model without a logits layer
        raise DataError(f"member {path} is not a usable emotion model: {exc}") from None
    if tuple(model.input_shape[1:]) != (INPUT_SIZE, INPUT_SIZE, 1) or head.units != len(EMOTIONS):
        raise DataError(f"member {path} takes {model.input_shape[1:]} and has {head.units} logits; "
                        f"expected ({INPUT_SIZE}, {INPUT_SIZE}, 1) and {len(EMOTIONS)}")
    temperature = float((card.get("calibration") or {}).get("temperature", 1.0))
    kernel, bias = head.get_weights()
    head.set_weights([kernel * temperature, bias * temperature])
    sub = keras.Model(model.input, head.output, name=f"member_{index}")
    record = {"model": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "architecture": card.get("architecture"), "parameters": card.get("parameters"),
              "accuracy": card.get("accuracy"), "temperature_undone": temperature,
              "training": card.get("training")}
    return sub, record


def fuse(members: list[keras.Model]) -> keras.Model:
    """One model: the mean of the members' logits through an identity ``logits`` head and a softmax."""
    face = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="face")
    mean = layers.Average(name="mean_logits")([member(face) for member in members])
    logits = layers.Dense(len(EMOTIONS), kernel_initializer="identity", bias_initializer="zeros",
                          name="logits")(mean)
    probs = layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(face, probs, name="ensemble")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.ensemble", description=__doc__.split("\n")[0])
    p.add_argument("members", nargs="+", type=Path, help="two or more trained .keras models with their cards")
    p.add_argument("--data", required=True, help="the FER-2013 data the members were trained on (as for training)")
    p.add_argument("--out", type=Path, default=Path("models/emotion.keras"), help="the fused model (default: %(default)s)")
    p.add_argument("--val-split", type=float, default=0.0,
                   help="calibrate on this fraction of train (default: PublicTest, like training)")
    p.add_argument("--seed", type=int, default=1337, help="seed of the --val-split carve")
    p.add_argument("--calibrate-for", choices=["ece", "nll"], default="ece")
    args = p.parse_args(argv)
    if not 0 <= args.val_split < 1:
        p.error(f"--val-split must be a fraction from 0 (use PublicTest) up to but not including 1, "
                f"not {args.val_split:g}")
    return args


def build(args, argv=None) -> dict:
    """Fuse, calibrate, save and write the card; returns the card."""
    if len(args.members) < 2:
        raise DataError("an ensemble needs at least two members")
    if args.out.resolve() in {m.resolve() for m in args.members}:
        raise DataError(f"--out {args.out} is one of the members; write the ensemble elsewhere")
    check_output(args.out, "--out")  # before the work, not when saving its result
    train, val = load_dataset(args.data, args.val_split, args.seed)
    members, records = zip(*(load_member(path, i, train.checksum) for i, path in enumerate(args.members)))
    model = fuse(list(members))
    calib = val if val is not None else train
    calibration = calibrate(model, calib, args.calibrate_for)
    save_atomically(model, args.out)
    print(f"fused {len(members)} members into {args.out}; temperature {calibration['temperature']:.3f}", flush=True)

    command = record_command(argv, "app.training.ensemble")
    state = {
        "epoch": None, "best": None,
        "temperature": calibration["temperature"], "calibration": calibration,
        "args": {"arch": "ensemble of " + " + ".join(str(r["architecture"]) for r in records),
                 "command": command, "data": args.data, "val_split": args.val_split, "seed": args.seed,
                 "train_checksum": train.checksum, "val_checksum": val.checksum if val is not None else None,
                 "n_train": len(train), "n_val": len(val) if val is not None else 0,
                 "members": list(records)},
    }
    from app.training.card import write_card

    return write_card(args.out, state, calib)


def main(argv=None) -> int:
    return run_card_command(build, parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
