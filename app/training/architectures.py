"""Model builders: ``make_model(name, ...)`` returns a ``keras.Model``.

Models take (48, 48, 1) float32 faces in [0, 1] (see
``app.vision.preprocess.prepare_face``) and output class probabilities.
"""
from __future__ import annotations

import keras
from keras import layers

from app.vision.preprocess import EMOTIONS, INPUT_SIZE


def _conv_bn(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def vgg(widths=(32, 64, 128, 256), convs=(2, 2, 2, 2), dense=256, dropout=(0.1, 0.2, 0.3, 0.4, 0.5),
        num_classes: int = len(EMOTIONS), name: str = "vgg") -> keras.Model:
    """A VGG-style net: stages of 3x3 conv-BN-ReLU, max-pooling and dropout."""
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 1), name="face")
    x = inputs
    for stage, (width, n) in enumerate(zip(widths, convs), start=1):
        for i in range(n):
            x = _conv_bn(x, width, f"s{stage}c{i + 1}")
        x = layers.MaxPooling2D(name=f"s{stage}_pool")(x)
        x = layers.Dropout(dropout[stage - 1], name=f"s{stage}_drop")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, use_bias=False, name="fc")(x)
    x = layers.BatchNormalization(name="fc_bn")(x)
    x = layers.Activation("relu", name="fc_relu")(x)
    x = layers.Dropout(dropout[-1], name="fc_drop")(x)
    logits = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(logits)
    return keras.Model(inputs, outputs, name=name)


ARCHITECTURES = {
    # ~1.8M parameters, ~120M multiply-adds per face: the shipped default.
    "vgg": lambda: vgg(),
    # Same layers and weights as "vgg" with lighter dropout: for fine-tuning a
    # trained "vgg" (``--init-from``) once the heavily regularised run underfits.
    "vgg-light": lambda: vgg(dropout=(0.05, 0.1, 0.15, 0.2, 0.35), name="vgg_light"),
    # Half the width of "vgg" (~0.44M parameters, about a quarter of its multiply-adds), lighter dropout:
    # a student for --distill that fits the 3 ms budget per face at a camera's pace.
    "vgg-half": lambda: vgg(widths=(16, 32, 64, 128), dense=128, dropout=(0.05, 0.1, 0.15, 0.2, 0.35),
                            name="vgg_half"),
    # The shipped net's layers at half width but its full dense layer (~0.59M parameters): the pruning target
    # for --init-from a trained "vgg-light" (app.training.prune), which costs about half as much per face.
    "vgg-slim": lambda: vgg(widths=(16, 32, 64, 128), dense=256, dropout=(0.05, 0.1, 0.15, 0.2, 0.35),
                            name="vgg_slim"),
    # Deeper late stages for longer schedules.
    "vgg-deep": lambda: vgg(widths=(32, 64, 128, 256), convs=(2, 2, 3, 3), name="vgg_deep"),
    # "vgg-deep" with lighter dropout: for --init-from a trained "vgg-light", whose layers it has, its third
    # convolutions of stages 3 and 4 starting as identities (app.training.grow).
    "vgg-deep-light": lambda: vgg(widths=(32, 64, 128, 256), convs=(2, 2, 3, 3),
                                  dropout=(0.05, 0.1, 0.15, 0.2, 0.35), name="vgg_deep_light"),
    # "vgg-light" half as wide again in its last two stages (~3.4M parameters, about 1.6 times its
    # multiply-adds): for --init-from a trained "vgg-light", which it widens (app.training.grow); served int8.
    "vgg-wide-light": lambda: vgg(widths=(32, 64, 192, 384), dropout=(0.05, 0.1, 0.15, 0.2, 0.35),
                                  name="vgg_wide_light"),
    # "vgg-wide-light" with the default's heavier dropout: the same ~3.4M parameters trained from scratch
    # over a long schedule; served, like the shipped net, as an int8 copy (app.training.quantize).
    "vgg-wide": lambda: vgg(widths=(32, 64, 192, 384), name="vgg_wide"),
    # A few thousand parameters: for tests and smoke runs.
    "tiny": lambda: vgg(widths=(8, 8, 16, 16), convs=(1, 1, 1, 1), dense=16, name="tiny"),
}


def batchnorm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every BatchNormalization layer of ``model``, those of nested models included."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, layers.BatchNormalization)]


def weighted_layers(model: keras.Model) -> list[layers.Layer]:
    """The layers of ``model`` that hold weights, in the model's order."""
    return [layer for layer in model.layers if layer.weights]


def make_model(name: str = "vgg") -> keras.Model:
    """Build the named architecture (see ``ARCHITECTURES``)."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {sorted(ARCHITECTURES)}") from None
