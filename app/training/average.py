"""Average the weights of one run's late checkpoints into one served model.

    python -m app.training.train ... --keep-epochs --run-dir runs/NAME/run
    python -m app.training.average --data ../shared/fer2013 --out models/emotion.keras \\
        runs/NAME/run/epoch-0{01..14}.keras

Checkpoints of one fine-tuning run lie in the same basin of the loss, and the
mean of their weights usually generalises better than any one of them
(stochastic weight averaging) -- at the inference cost of a single model.
Every weight is averaged, BatchNorm's moving statistics included;
``--reestimate-batchnorm`` instead recomputes those statistics for the averaged
weights on the training images (it measured worse on FER-2013 here: the
statistics the net was trained with come from augmented images). A
temperature is then fitted on the validation split and folded into the logits
layer exactly as at the end of training, and a model card (``<out>.json``)
records the checkpoints. The checkpoints must come from one run folder whose
``state.json`` says it trained on the data ``--data`` holds.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from app.training.architectures import batchnorm_layers  # noqa: E402
from app.training.data import DataError, check_output, load_dataset, read_record  # noqa: E402
from app.training.train import calibrate, record_command, run_card_command, save_atomically  # noqa: E402


def reestimate_batchnorm(model: keras.Model, x: np.ndarray, batch_size: int = 256, verbose: int = 1) -> int:
    """Set every BatchNorm layer's moving mean/variance to the average over the batches of ``x``.

    Runs the model in training mode with each layer's momentum at k/(k+1) for
    the k-th batch, which makes the moving statistics the plain mean of the
    batch statistics. Returns how many BatchNorm layers were updated.
    """
    norms = batchnorm_layers(model)
    if not norms:
        return 0
    momenta = [layer.momentum for layer in norms]
    starts = range(0, len(x), batch_size)
    bar = keras.utils.Progbar(len(starts), verbose=verbose, unit_name="batch")
    try:
        for k, start in enumerate(starts):
            for layer in norms:
                layer.momentum = k / (k + 1)
            model(x[start:start + batch_size], training=True)
            bar.update(k + 1)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return len(norms)


def _run_state(checkpoints: list[Path]) -> dict:
    """The ``state.json`` of the one run folder that holds every checkpoint."""
    folders = {path.resolve().parent for path in checkpoints}
    if len(folders) != 1:
        raise DataError("the checkpoints come from different run folders; average the checkpoints of one run")
    state_path = checkpoints[0].parent / "state.json"
    if not state_path.is_file():
        raise DataError(f"no {state_path}: the checkpoints' run (and its training data) is unknown")
    try:
        state = read_record(state_path)
        run = state["args"]
    except (ValueError, KeyError) as exc:
        raise DataError(f"{state_path} is not a training run's state: {exc}") from None
    if not isinstance(run, dict):
        raise DataError(f"{state_path} is not a training run's state: its args are not a record")
    return state


def average_weights(checkpoints: list[Path]) -> keras.Model:
    """The first checkpoint's model carrying the element-wise mean of every checkpoint's weights."""
    models = []
    for path in checkpoints:
        try:
            models.append(keras.models.load_model(path, compile=False))
        except Exception as exc:  # unreadable file or not a Keras model
            raise DataError(f"checkpoint {path} is not a usable model: {exc}") from None
    shapes = [w.shape for w in models[0].get_weights()]
    for path, model in zip(checkpoints[1:], models[1:]):
        if [w.shape for w in model.get_weights()] != shapes:
            raise DataError(f"checkpoint {path} has other layers than {checkpoints[0]}")
    mean = [np.mean(ws, axis=0) for ws in zip(*(m.get_weights() for m in models))]
    models[0].set_weights(mean)
    return models[0]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.average", description=__doc__.split("\n")[0])
    p.add_argument("checkpoints", nargs="+", type=Path,
                   help="two or more epoch-NNN.keras files of one run trained with --keep-epochs")
    p.add_argument("--data", required=True, help="the FER-2013 data the run was trained on (as for training)")
    p.add_argument("--out", type=Path, default=Path("models/emotion.keras"),
                   help="the averaged model (default: %(default)s)")
    p.add_argument("--reestimate-batchnorm", action="store_true",
                   help="recompute BatchNorm's moving statistics on the training images instead of averaging them")
    p.add_argument("--batch-size", type=int, default=256, help="batch size of the BatchNorm re-estimation")
    p.add_argument("--calibrate-for", choices=["ece", "nll"], default="ece")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1], help="progress bar")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, not {args.batch_size}")
    return args


def build(args, argv=None) -> dict:
    """Average, re-estimate BatchNorm, calibrate, save and write the card; returns the card."""
    if len(args.checkpoints) < 2:
        raise DataError("averaging needs at least two checkpoints")
    for path in args.checkpoints:
        if not path.is_file():
            raise DataError(f"checkpoint {path} does not exist")
    if args.out.resolve() in {path.resolve() for path in args.checkpoints}:
        raise DataError(f"--out {args.out} is one of the checkpoints; write the average elsewhere")
    state = _run_state(args.checkpoints)
    check_output(args.out, "--out")  # before the work, not when saving its result
    run = state["args"]
    # The run's own validation carve, so the calibration split is the one it was selected on.
    train, val = load_dataset(args.data, run.get("val_split") or 0.0, run.get("seed") or 0)
    if run.get("train_checksum") != train.checksum:
        raise DataError(f"the checkpoints' run trained on other data (train checksum "
                        f"{str(run.get('train_checksum'))[:12]}, --data has {train.checksum[:12]})")
    model = average_weights(args.checkpoints)
    print(f"averaged {len(args.checkpoints)} checkpoints", flush=True)
    if args.reestimate_batchnorm:
        print(f"re-estimating BatchNorm statistics on {len(train)} training images", flush=True)
        reestimate_batchnorm(model, train.x, args.batch_size, args.verbose)
        batchnorm = (f"moving statistics re-estimated as the mean over {len(train)} training images "
                     f"in batches of {args.batch_size}, no augmentation")
    else:
        batchnorm = "moving statistics averaged like every other weight"
    calib = val if val is not None else train
    calibration = calibrate(model, calib, args.calibrate_for)
    save_atomically(model, args.out)
    print(f"saved {args.out}; temperature {calibration['temperature']:.3f}", flush=True)

    command = record_command(argv, "app.training.average")
    record = {
        **run,
        "averaged": {
            "command": command,
            "checkpoints": [{"model": str(p), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
                            for p in args.checkpoints],
            "batchnorm": batchnorm,
        },
    }
    card_state = {"epoch": state.get("epoch"), "best": state.get("best"),
                  "temperature": calibration["temperature"], "calibration": calibration, "args": record}
    from app.training.card import write_card

    return write_card(args.out, card_state, calib)


def main(argv=None) -> int:
    return run_card_command(build, parse_args(argv), argv)


if __name__ == "__main__":
    sys.exit(main())
