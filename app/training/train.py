"""Train the emotion CNN on FER-2013.

    python -m app.training.train --data ../shared/fer2013 --epochs 80 --out models/emotion.keras

Writes, for ``--out models/NAME.keras``:
  models/NAME.keras        best epoch by validation accuracy, float32, calibrated
  models/NAME.log.csv      one row per epoch (loss, accuracy, val_*, lr)
  runs/NAME/last.keras     checkpoint of the last finished epoch (with optimizer)
  runs/NAME/state.json     epoch counter, best score and the run's arguments
  runs/NAME/epoch-NNN.keras  with --keep-epochs: every epoch's weights, for
                           checkpoint averaging (``app.training.average``)
``--resume`` continues from ``runs/NAME/last.keras``. After the last epoch the
best model is temperature-calibrated on the validation split and a model card
``models/NAME.json`` is written (see ``app.training.card``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app import hardware  # noqa: E402
from app.training.architectures import ARCHITECTURES, make_model  # noqa: E402
from app.training.augment import augment_batch, make_augmenter, make_cutter, make_mixer, mix_batch  # noqa: E402
from app.training.card import HYPERPARAMETER_DEFAULTS, write_atomically  # noqa: E402
from app.training.data import DataError, Split, check_output, load_dataset, read_record  # noqa: E402
from app.training.evaluate import view_logits  # noqa: E402
from app.training.grow import deepen_into, deepenable, widen_into, widenable  # noqa: E402
from app.training.metrics import cross_validated_ece, fit_temperature  # noqa: E402
from app.training.prune import prunable, prune_into  # noqa: E402
from app.training.sam import SharpnessAware, plain  # noqa: E402
from app.vision.preprocess import EMOTIONS  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m app.training.train", description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="FER-2013 folder (train/ [test/] or <emotion>/ sub-folders) or fer2013.csv")
    p.add_argument("--out", default="models/emotion.keras", help="where the best model goes (default: %(default)s)")
    p.add_argument("--run-dir", help="checkpoint folder (default: runs/<name of --out>)")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES),
                   help="architecture from app.training.architectures (default: vgg; a resumed run keeps its own)")
    p.add_argument("--epochs", type=int,
                   help="epochs in all (default: 80; a resumed run keeps its own, and another number stretches or "
                        "shortens its learning-rate schedule)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the cosine schedule")
    p.add_argument("--warmup-epochs", type=int, default=3)
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw",
                   help="AdamW, or SGD with Nesterov momentum (default: %(default)s)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD's Nesterov momentum (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=0.02,
                   help="decoupled weight decay, scaled by the learning rate (default: %(default)s)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--augment", type=float, default=1.0, help="augmentation strength, 0 turns it off")
    p.add_argument("--mixup", type=float, default=0.0, metavar="ALPHA",
                   help="MixUp after augmentation: blend each training face and its label with another's, "
                        "weights from Beta(ALPHA, ALPHA); 0 (the default) turns it off, 0.2-0.4 is usual")
    p.add_argument("--cutmix", type=float, default=0.0, metavar="ALPHA",
                   help="CutMix after augmentation, instead of MixUp: paste a rectangle of another training face "
                        "into each and blend the labels by area, the kept fraction from Beta(ALPHA, ALPHA); "
                        "0 (the default) turns it off, 1.0 is usual, at most 1")
    p.add_argument("--distill", metavar="MODEL", action="append", default=[],
                   help="learn from a trained teacher model too (repeat for several): each training face's "
                        "target becomes a blend of its label and the teachers' mean probabilities for the same "
                        "augmented face")
    p.add_argument("--distill-weight", type=float, metavar="W",
                   help="the teachers' share of the target with --distill, 0 < W <= 1 (default: 0.5)")
    p.add_argument("--sam", type=float, default=0.0, metavar="RHO",
                   help="sharpness-aware minimisation: each step's gradient is taken at weights moved RHO "
                        "(in gradient norm) towards higher loss; 0 (the default) turns it off, 0.05 is usual; "
                        "a step costs about twice as much")
    p.add_argument("--val-split", type=float, default=0.0,
                   help="carve this fraction of train as validation (default: use PublicTest when present)")
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first N shuffled training images (smoke runs; 0, the default, uses all)")
    p.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                   help="mixed bfloat16 or plain float32 training; auto (default): bf16 where the hardware runs "
                        "it natively (a GPU, or a CPU with AVX512-BF16 or AMX), else fp32")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--init-from", metavar="MODEL",
                   help="start from the weights of a trained .keras model with the same layers (fine-tuning), "
                        "with the same layers and more channels (its strongest channels are kept: pruning), "
                        "with the same layers and fewer channels (its channels are copied into the new ones: "
                        "widening), or with fewer layers (the new convolutions start as identities: deepening); "
                        "a calibration temperature recorded in its card is undone first")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run folder's last checkpoint, with the run's network (--arch), first "
                        "data settings (--batch-size, --augment, --mixup, --cutmix, --distill, --distill-weight, "
                        "--sam, --val-split, --limit, --seed) and precision")
    p.add_argument("--keep-epochs", action="store_true",
                   help="also keep every epoch's weights as RUN_DIR/epoch-NNN.keras (for app.training.average)")
    p.add_argument("--calibrate-for", choices=["ece", "nll"], default="ece",
                   help="what the calibration temperature minimises on the validation split (default: %(default)s)")
    p.add_argument("--recalibrate", action="store_true",
                   help="no training: refit the temperature of the finished run's model, on the run's own "
                        "validation split, and rewrite its card")
    p.add_argument("--verbose", type=int, default=1, choices=[0, 1, 2], help="Keras progress output")
    args = p.parse_args(argv)
    if not (args.resume or args.recalibrate):  # a resumed run keeps its own (keep_run_settings)
        args.arch = args.arch or "vgg"
        args.epochs = 80 if args.epochs is None else args.epochs
    if args.epochs is not None and args.epochs < 1:
        p.error(f"--epochs must be at least 1, not {args.epochs}")
    if args.batch_size < 1:
        p.error(f"--batch-size must be at least 1, not {args.batch_size}")
    if not args.lr > 0:
        p.error(f"--lr must be above 0, not {args.lr:g}")
    if args.warmup_epochs < 0:
        p.error(f"--warmup-epochs must be 0 (none) or more, not {args.warmup_epochs}")
    if not 0 <= args.momentum < 1:
        p.error(f"--momentum must be from 0 up to but not including 1, not {args.momentum:g}")
    if not args.weight_decay >= 0:
        p.error(f"--weight-decay must be 0 (off) or positive, not {args.weight_decay:g}")
    if not 0 <= args.label_smoothing < 1:
        p.error(f"--label-smoothing must be a fraction from 0 up to but not including 1, not {args.label_smoothing:g}")
    if not args.augment >= 0:
        p.error(f"--augment must be 0 (off) or a positive strength, not {args.augment:g}")
    if args.limit < 0:
        p.error(f"--limit must be 0 (all) or a number of images, not {args.limit}")
    if not 0 <= args.val_split < 1:
        p.error(f"--val-split must be a fraction from 0 (use PublicTest) up to but not including 1, "
                f"not {args.val_split:g}")
    if args.mixup < 0:
        p.error(f"--mixup must be 0 (off) or a positive ALPHA, not {args.mixup:g}")
    if not 0 <= args.cutmix <= 1:
        p.error(f"--cutmix must be 0 (off) or an ALPHA up to 1, not {args.cutmix:g}")
    if args.mixup > 0 and args.cutmix > 0:
        p.error("--mixup and --cutmix are alternatives: give one of them")
    if args.distill_weight is not None and not args.distill and not args.resume:
        p.error("--distill-weight goes with --distill MODEL: give the teachers")
    if args.sam < 0:
        p.error(f"--sam must be 0 (off) or a positive RHO, not {args.sam:g}")
    args.distill_weight = 0.5 if args.distill_weight is None else args.distill_weight
    if not 0 < args.distill_weight <= 1:
        p.error(f"--distill-weight must be above 0 and at most 1, not {args.distill_weight:g}")
    return args


# The network a run trains, what the training data looks like to it, how it steps and the precision it computes in:
# fixed by its first command (``keep_run_settings``).
RUN_SETTINGS = ("arch", "batch_size", "augment", "mixup", "cutmix", "distill", "distill_weight", "sam", "val_split",
                "limit", "seed", "precision")
# What decides the split a run's temperature is fitted on (``--recalibrate``).
SPLIT_SETTINGS = ("val_split", "limit", "seed")


def run_paths(args) -> dict[str, Path]:
    out = Path(args.out)
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / out.stem
    return {
        "out": out,
        "log": out.with_suffix(".log.csv"),
        "card": out.with_suffix(".json"),
        "run": run_dir,
        "last": run_dir / "last.keras",
        "state": run_dir / "state.json",
        "epoch": run_dir / "epoch-{:03d}.keras",
    }


def make_dataset(split: Split, batch_size: int, seed: int, augment_strength: float, shuffle: bool,
                 mixup: float = 0.0, cutmix: float = 0.0, teachers=(), distill_weight: float = 0.5):
    """Batches of (faces, one-hot labels): augmented when ``augment_strength`` > 0, then mixed with
    MixUp when ``mixup`` > 0 or with CutMix when ``cutmix`` > 0 (one or the other). With ``teachers``
    (trained models) each label becomes ``(1 - distill_weight) * label + distill_weight * p``, where p is
    the teachers' mean probabilities for the face as the batch gives it (augmented and mixed)."""
    y = keras.utils.to_categorical(split.y, len(EMOTIONS)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((split.x, y))
    if shuffle:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if augment_strength > 0:
        augmenter = make_augmenter(seed, augment_strength)
        ds = ds.map(lambda x, t: (augment_batch(augmenter, x), t), num_parallel_calls=tf.data.AUTOTUNE)
    mixer = None
    if mixup > 0:
        mixer = make_mixer(seed + 7, mixup)
    elif cutmix > 0:
        mixer = make_cutter(seed + 7, cutmix)
    if mixer is not None:
        ds = ds.map(lambda x, t: mix_batch(mixer, x, t), num_parallel_calls=tf.data.AUTOTUNE)
    if teachers:
        ds = ds.map(lambda x, t: (x, taught_labels(teachers, x, t, distill_weight)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def taught_labels(teachers, x, labels, weight: float):
    """``labels`` blended with the teachers' mean probabilities for faces ``x`` (float32)."""
    x = tf.cast(x, "float32")
    probs = tf.add_n([tf.cast(teacher(x, training=False), "float32") for teacher in teachers]) / len(teachers)
    return (1.0 - weight) * tf.cast(labels, "float32") + weight * probs


def load_teachers(paths: list[str]) -> tuple[list[keras.Model], list[dict]]:
    """``--distill``: the teacher models, float32 and frozen, and a record of each for the card."""
    import hashlib

    from app.vision.preprocess import INPUT_SIZE

    teachers, records = [], []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise DataError(f"--distill: {path} does not exist")
        with precision_policy("float32"):
            try:
                teacher = keras.models.load_model(path, compile=False)
            except Exception as exc:  # any reader failure means the same thing here
                raise DataError(f"--distill: {path} is not a readable Keras model: {exc}") from None
        shapes = (tuple(teacher.input_shape[1:]), tuple(teacher.output_shape[1:]))
        if shapes != ((INPUT_SIZE, INPUT_SIZE, 1), (len(EMOTIONS),)):
            raise DataError(f"--distill: {path} takes {shapes[0]} and gives {shapes[1]}; expected "
                            f"({INPUT_SIZE}, {INPUT_SIZE}, 1) -> ({len(EMOTIONS)},)")
        teacher.trainable = False
        teachers.append(teacher)
        records.append({"model": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    return teachers, records


@contextmanager
def precision_policy(name: str):
    """Keras's global precision policy set to ``name`` inside the block, and restored after it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def inference_copy(model: keras.Model, arch: str) -> keras.Model:
    """A float32 copy of ``model`` with no optimizer, for shipping."""
    with precision_policy("float32"):
        clean = make_model(arch)
    clean.set_weights(plain(model).get_weights())
    return clean


def save_state(path: Path, state: dict) -> None:
    """Write the run state (``runs/NAME/state.json``) so that a resumed run never reads half of it."""
    write_atomically(path, json.dumps(state, indent=2).encode())


def save_atomically(model: keras.Model, path: Path) -> None:
    """Save ``model`` to ``path`` so that a reader (the server, a resumed run) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def print_headline(card: dict) -> None:
    """The card's headline figures as one JSON line, the last thing a training command prints."""
    print(json.dumps({k: card[k] for k in ("accuracy", "macro_f1", "ece") if k in card}), flush=True)


def run_card_command(build, args, argv=None) -> int:
    """A model-making command's exit: ``build(args, argv)`` returns the card; a DataError is a clear error, exit 2."""
    try:
        card = build(args, argv)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print_headline(card)
    return 0


class Checkpoint(keras.callbacks.Callback):
    """Every epoch: save the resumable checkpoint, and the best model by val accuracy.

    ``calibrated``: the temperature (and its record) folded into the best model
    file by an earlier ``finish`` of a resumed run; kept in the run state until a
    better epoch replaces that file with an uncalibrated one.
    """

    def __init__(self, paths, arch: str, args_record: dict, best: float, calibrated: dict | None = None):
        super().__init__()
        self.paths, self.arch, self.args_record, self.best = paths, arch, args_record, best
        self.calibrated = dict(calibrated or {})

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        score = logs.get("val_accuracy", logs.get("accuracy", 0.0))
        best = score > self.best
        keep = self.args_record.get("keep_epochs")
        shipped = inference_copy(self.model, self.arch) if best or keep else None  # one copy serves both
        if best:
            self.best = float(score)
            save_atomically(shipped, self.paths["out"])
            self.calibrated = {}
            print(f"\nepoch {epoch + 1}: best so far ({score:.4f}), saved {self.paths['out']}", flush=True)
        if keep:
            save_atomically(shipped, Path(str(self.paths["epoch"]).format(epoch + 1)))
        save_atomically(self.model, self.paths["last"])
        state = {"epoch": epoch + 1, "best": self.best, "best_metric": "val_accuracy", "args": self.args_record,
                 **self.calibrated}
        save_state(self.paths["state"], state)


class LearningRateLog(keras.callbacks.Callback):
    """Adds the current learning rate to the epoch logs (and so to the CSV log)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            opt = self.model.optimizer
            logs["lr"] = float(keras.ops.convert_to_numpy(opt.learning_rate))


def make_schedule(lr: float, warmup_epochs: int, epochs: int, steps_per_epoch: int):
    """Linear warm-up to ``lr``, then cosine decay to zero at the end of ``epochs``."""
    total = max(1, epochs * steps_per_epoch)
    warmup = min(warmup_epochs * steps_per_epoch, total // 2)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=lr * 0.05 if warmup else lr,
        decay_steps=total - warmup,
        alpha=0.0,
        warmup_target=lr if warmup else None,
        warmup_steps=warmup,
    )


def make_optimizer(args, schedule) -> keras.optimizers.Optimizer:
    """AdamW (the default), or SGD with Nesterov momentum; both decay weights by ``lr * weight_decay``."""
    if args.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate=schedule, momentum=args.momentum, nesterov=True,
                                    weight_decay=args.weight_decay)
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=args.weight_decay)


def build_compiled(args, steps_per_epoch: int) -> keras.Model:
    model = make_model(args.arch)
    if args.sam > 0:
        model = SharpnessAware(model, args.sam, name=f"{model.name}_sam")
    schedule = make_schedule(args.lr, args.warmup_epochs, args.epochs, steps_per_epoch)
    model.compile(
        optimizer=make_optimizer(args, schedule),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
        metrics=["accuracy"],
    )
    return model


def build_state(model: keras.Model, dataset) -> None:
    """Create the optimizer's, loss's and metrics' variables before ``fit``, from the shapes of ``dataset``'s
    batches (none is drawn). Left to ``fit``, they are created while it traces its training step, and a
    function that creates variables is traced twice: 1-2 s lost per run here, a fifth of a tiny test run's time."""
    # Keras builds this way itself only under a distribution strategy (TensorFlowTrainer._maybe_symbolic_build).
    model._symbolic_build(data_batch=dataset.element_spec)


def calibrate(model: keras.Model, val: Split, objective: str = "ece", undo: float = 1.0) -> dict:
    """Fit a temperature on ``val`` (the served test-time views) and fold it into the logits layer.

    ``undo``: a temperature already folded into ``model`` (``--recalibrate``),
    taken out first. Returns the temperature and its out-of-fold check.
    """
    layer = model.get_layer("logits")
    kernel, bias = layer.get_weights()
    kernel, bias = kernel * undo, bias * undo
    layer.set_weights([kernel, bias])
    views = view_logits(model, val.x)
    temperature = fit_temperature(views, val.y, objective)
    layer.set_weights([kernel / temperature, bias / temperature])
    return {"temperature": temperature, "objective": objective,
            "cross_validated": cross_validated_ece(views, val.y, objective)}


def init_from(model: keras.Model, source: Path, faces: np.ndarray | None = None, seed: int = 0) -> dict:
    """Copy the weights of the trained model ``source`` into ``model``; returns a record for the card.

    A ``source`` with ``model``'s layers but more channels is pruned into it (``app.training.prune``);
    one with fewer channels is widened into it, one with fewer layers deepened into it
    (``app.training.grow``: new channels copy old ones, chosen with ``seed``; new layers' BatchNormalization
    statistics are taken from a sample of the training ``faces``).
    """
    import hashlib

    if not source.is_file():
        raise DataError(f"--init-from: {source} does not exist")
    if source.suffix != ".keras":
        raise DataError(f"--init-from: {source} is not a .keras model (a TensorFlow Lite copy such as the served "
                        "emotion.int8.tflite holds no trainable weights: start from its float model)")
    try:
        trained = keras.models.load_model(source)
    except Exception as exc:  # any reader failure means the same thing here
        raise DataError(f"--init-from: {source} is not a readable Keras model: {exc}") from None
    reshaped = {}
    try:
        model.set_weights(trained.get_weights())
    except ValueError as exc:
        trained = plain(trained)
        if prunable(model, trained):
            reshaped["pruned"] = prune_into(model, trained)
            print(f"--init-from: {source} is a wider net of --arch's layers; its strongest channels were kept",
                  flush=True)
        elif widenable(model, trained):
            reshaped["widened"] = widen_into(model, trained, seed=seed)
            print(f"--init-from: {source} is a narrower net of --arch's layers; its channels were copied to widen it",
                  flush=True)
        elif deepenable(model, trained) and faces is not None:
            reshaped["deepened"] = deepen_into(model, trained, faces)
            print(f"--init-from: {source} lacks --arch's layers {', '.join(reshaped['deepened']['added'])}; "
                  "they start as identities", flush=True)
        else:
            raise DataError(f"--init-from: {source} does not match --arch's layers: {exc}") from None
    temperature = 1.0
    card_path = source.with_suffix(".json")
    if card_path.is_file():
        card = read_record(card_path)
        temperature = float(card.get("calibration", {}).get("temperature", 1.0))
    if temperature != 1.0:
        layer = model.get_layer("logits")
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel * temperature, bias * temperature])
    return {"model": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "temperature_undone": temperature, **reshaped,
            "parent": _parent_summary(card_path)}


def _parent_summary(card_path: Path) -> dict | None:
    """How the model fine-tuned from was itself trained, from its card."""
    if not card_path.is_file():
        return None
    card = read_record(card_path)
    return {"architecture": card.get("architecture"), "accuracy": card.get("accuracy"),
            "training": card.get("training")}


def resolve_precision(choice: str, cpu_flags: set[str] | None = None, gpu: bool | None = None) -> str:
    """``--precision``: "auto" becomes "bf16" only where bfloat16 runs natively.

    Without native support (a CPU with AVX2 but no AVX512-BF16/AMX) bfloat16 is
    emulated and an epoch takes about ten times longer than in float32.
    """
    if choice != "auto":
        return choice
    if gpu is None:
        gpu = bool(tf.config.list_physical_devices("GPU"))
    if cpu_flags is None:
        cpu_flags = hardware.cpu_flags()
    return "bf16" if gpu or cpu_flags & {"avx512_bf16", "amx_bf16"} else "fp32"


def record_command(argv, module: str = "app.training.train") -> str:
    """The command line that ran ``module`` (this training by default), for the run record and the model card."""
    return " ".join([f"python -m {module}"] + list(sys.argv[1:] if argv is None else argv))


def train(args, argv=None) -> dict:
    """Run (or resume) training; returns the final state record.

    The precision policy is Keras-global: it is set for the run and restored
    after it, so later models built in the same process keep their own.
    """
    state = None
    if args.recalibrate:
        state = finished_state(run_paths(args))
        keep_run_settings(args, state["args"], SPLIT_SETTINGS, "--recalibrate")
    elif args.resume:
        state = resume_state(run_paths(args))
        keep_run_settings(args, state["args"])
    if args.precision == "auto":
        args.precision = resolve_precision(args.precision)
        print(f"precision: {args.precision} (auto)", flush=True)
    with precision_policy("mixed_bfloat16" if args.precision == "bf16" else "float32"):
        return _train(args, argv, state)


def resume_state(paths: dict) -> dict:
    """``--resume``: the run record of the run folder's last checkpoint; a DataError when there is none."""
    if not paths["last"].is_file() or not paths["state"].is_file():
        raise DataError(f"--resume: no checkpoint in {paths['run']} (expected last.keras and state.json)")
    return read_record(paths["state"])


def finished_state(paths: dict) -> dict:
    """``--recalibrate``: the run record of a finished run; a DataError when there is none."""
    if not paths["state"].is_file() or not paths["out"].is_file():
        raise DataError(f"--recalibrate: no finished run for {paths['out']} (expected it and {paths['state']})")
    return read_record(paths["state"])


def keep_run_settings(args, recorded: dict, keys=RUN_SETTINGS, flag: str = "--resume") -> None:
    """``--resume``: the run keeps its first command's network, data settings and precision, so its card stays true
    (``--recalibrate``: the settings that decide its validation split, ``keys``).

    A command that asks for others is told so; one that leaves ``--arch`` out gets the run's silently. A run
    recorded before ``--mixup``, ``--cutmix`` or ``--distill`` existed mixed no faces and had no teacher, and keeps so.
    """
    def shown(value):
        return (" ".join(map(str, value)) or "none") if isinstance(value, list) else value

    for key in keys:
        kept = recorded.get(key, HYPERPARAMETER_DEFAULTS.get(key))
        asked = getattr(args, key)
        if kept is not None and asked != kept:
            if asked is not None:
                print(f"{flag}: the run keeps --{key.replace('_', '-')} {shown(kept)} "
                      f"(this command asked for {shown(asked)})", flush=True)
            setattr(args, key, kept)


def draw_seed(seed: int, initial_epoch: int) -> int:
    """The seed of a run's random draws (shuffling, augmentation, mixing, dropout) from ``initial_epoch`` on:
    the run's ``--seed`` from scratch, another for each epoch a run is resumed after. Seeded layers start their
    streams anew in every process, so a resumed run drawing from ``--seed`` again would replay about half of
    its first epochs' augmented batches, face for face, and learn those instead of new ones. A run resumed at
    the same epochs draws the same."""
    return seed if initial_epoch == 0 else (seed + 7919 * initial_epoch) % 2**31


def _train(args, argv=None, state: dict | None = None) -> dict:
    """Train from scratch, or on from the run record ``state`` (``--resume``)."""
    paths = run_paths(args)
    # Before the data loads, not at the first epoch's end; --out first, as its folder usually exists already.
    check_output(paths["out"], "--out")
    check_output(paths["run"], "--run-dir", folder=True)
    seed = draw_seed(args.seed, state["epoch"] if state is not None and not args.recalibrate else 0)
    keras.utils.set_random_seed(seed)  # before the model loads: its dropout layers draw their seeds from it
    teachers, teacher_records = load_teachers(args.distill)  # a wrong teacher fails before the data loads

    t0 = time.time()
    train_split, val = load_dataset(args.data, args.val_split, args.seed)
    if args.limit:
        order = np.random.default_rng(args.seed).permutation(len(train_split))[: args.limit]
        train_split = Split(train_split.x[order], train_split.y[order],
                            [train_split.names[i] for i in order] if train_split.names else [],
                            train_split.checksum)
    print(f"data: {len(train_split)} training images, {len(val) if val else 0} validation images "
          f"({time.time() - t0:.1f} s)", flush=True)

    if args.recalibrate:
        state["args"]["recalibrated_with"] = state["args"].get("recalibrated_with", []) + [record_command(argv)]
        save_state(paths["state"], state)
        return finish(paths, val if val is not None else train_split, args.calibrate_for)

    steps = int(np.ceil(len(train_split) / args.batch_size))
    record = {k: v for k, v in vars(args).items() if k != "resume"}
    record["command"] = record_command(argv)
    record["train_checksum"] = train_split.checksum
    record["val_checksum"] = val.checksum if val else None
    record["n_train"], record["n_val"] = len(train_split), len(val) if val else 0

    initial_epoch, best = 0, -1.0
    if state is not None:
        model = keras.models.load_model(paths["last"])
        initial_epoch, best = state["epoch"], state["best"]
        planned = state["args"]["epochs"]
        args.epochs = planned if args.epochs is None else args.epochs
        record = {**state["args"], "epochs": args.epochs}
        record["resumed_with"] = record.get("resumed_with", []) + [record_command(argv)]
        if args.epochs != planned:
            # Stretch the cosine schedule over the new length, so added epochs still learn.
            model.optimizer.learning_rate = make_schedule(record["lr"], record["warmup_epochs"], args.epochs, steps)
            print(f"learning-rate schedule stretched from {planned} to {args.epochs} epochs", flush=True)
        print(f"resuming after epoch {initial_epoch} (best val accuracy {best:.4f}); "
              f"new random draws from here on (seed {seed})", flush=True)
    else:
        model = build_compiled(args, steps)
        if args.init_from:
            record["init_from"] = init_from(plain(model), Path(args.init_from), train_split.x, seed=args.seed)
            print(f"initialised from {args.init_from}", flush=True)
        if paths["log"].exists():
            paths["log"].unlink()
    model.summary(print_fn=lambda s, **_: print(s), line_length=100) if args.verbose else None

    record["teachers"] = teacher_records
    if teachers:
        print(f"distilling from {len(teachers)} teacher(s), weight {args.distill_weight:g}", flush=True)
    train_ds = make_dataset(train_split, args.batch_size, seed, args.augment, shuffle=True,
                            mixup=args.mixup, cutmix=args.cutmix, teachers=teachers,
                            distill_weight=args.distill_weight)
    val_ds = make_dataset(val, 256, args.seed, 0, shuffle=False) if val is not None else None
    callbacks = [
        LearningRateLog(),
        keras.callbacks.CSVLogger(str(paths["log"]), append=args.resume),
        Checkpoint(paths, args.arch, record, best,
                   {k: state[k] for k in ("temperature", "calibration") if k in state} if state else None),
    ]
    if initial_epoch < args.epochs:
        build_state(model, train_ds)
        # train_ds reshuffles itself every epoch (make_dataset); fit's own shuffle does not apply to a tf.data set.
        model.fit(train_ds, validation_data=val_ds, epochs=args.epochs, initial_epoch=initial_epoch,
                  callbacks=callbacks, verbose=args.verbose, shuffle=False)

    return finish(paths, val if val is not None else train_split, args.calibrate_for)


def finish(paths: dict, calib_split: Split, objective: str) -> dict:
    """Calibrate the best model, record the temperature in the run state and write the model card.

    A temperature the run state records as folded into the best model already (an earlier finish of the
    same best epoch: ``--recalibrate``, or a resumed run that found no better epoch) is taken out first.
    """
    state = read_record(paths["state"])
    best_model = keras.models.load_model(paths["out"])
    calibration = calibrate(best_model, calib_split, objective, undo=float(state.get("temperature", 1.0)))
    temperature = calibration["temperature"]
    save_atomically(best_model, paths["out"])
    state["temperature"] = temperature
    state["calibration"] = calibration
    save_state(paths["state"], state)
    print(f"calibrated: temperature {temperature:.3f} ({objective}) folded into {paths['out']}; "
          f"out-of-fold ECE {calibration['cross_validated']['ece']:.4f}", flush=True)

    from app.training.card import write_card  # heavy plotting imports only at the end

    print("writing the model card (full evaluation) ...", flush=True)
    card = write_card(paths["out"], state, calib_split)
    print_headline(card)
    return state


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        train(args, argv)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
