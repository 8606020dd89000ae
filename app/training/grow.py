"""Function-preserving growth: a trained net copied into a deeper or a wider net of its layers.

``--init-from`` uses it when ``--arch`` has every layer of the trained model
(same names and shapes, same order) and, besides them, new 3x3 convolutions
with as many outputs as inputs, each followed by BatchNormalization
(``vgg-light`` into ``vgg-deep-light``, say). Each new convolution starts as
the identity, and the BatchNormalization after it is set from the mean and
variance of its input over sample training faces, so that it passes that input
through in inference and, up to batch noise, in training too; the ReLU after
it leaves the non-negative input unchanged. The deeper net so starts out
computing what the trained one does (Chen et al., "Net2Net", 2016), and
training puts the new layers to use from there.

It widens a trained net when ``--arch`` has the same layers with more output
channels in some of them (``vgg-light`` into ``vgg-wide-light``): each new
channel copies a randomly chosen old channel of its layer (kernel, bias and
BatchNormalization), and the next layer reads every copy of a channel with
that channel's weights divided by its number of copies, plus a little noise
so that the copies grow apart in training ("Net2WiderNet", same paper).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from app.training.architectures import weighted_layers


def deepenable(model: keras.Model, trained: keras.Model) -> bool:
    """Whether ``model`` is ``trained``'s layers, unchanged and in order, plus square convolutions with a BN each."""
    theirs = {layer.name: layer for layer in weighted_layers(trained)}
    mine = weighted_layers(model)
    if [layer.name for layer in mine if layer.name in theirs] != list(theirs) or len(mine) == len(theirs):
        return False
    for position, layer in enumerate(mine):
        if layer.name in theirs:
            if type(layer) is not type(theirs[layer.name]) or \
                    [w.shape for w in layer.weights] != [w.shape for w in theirs[layer.name].weights]:
                return False
        elif isinstance(layer, layers.Conv2D):
            height, width, channels_in, channels_out = layer.kernel.shape
            if channels_in != channels_out or height % 2 == 0 or width % 2 == 0 or layer.padding != "same":
                return False
        elif isinstance(layer, layers.BatchNormalization):
            before = mine[position - 1] if position else None
            if not isinstance(before, layers.Conv2D) or before.name in theirs:
                return False
        else:
            return False
    return True


def deepen_into(model: keras.Model, trained: keras.Model, faces: np.ndarray, batch_size: int = 256,
                sample: int = 4096) -> dict:
    """Copy ``trained`` into the deeper ``model`` with its new layers as identities; returns a record.

    ``faces``: training faces (N, 48, 48, 1) in [0, 1]; every k-th of them, about ``sample`` in all, gives
    the new BatchNormalization layers' statistics. Raises ValueError when ``model`` is not ``trained``
    deepened (see ``deepenable``).
    """
    if not deepenable(model, trained):
        raise ValueError(f"{model.name} is not {trained.name}'s layers plus new square convolutions")
    faces = faces[:: max(1, len(faces) // sample)]
    theirs = {layer.name for layer in weighted_layers(trained)}
    mine = weighted_layers(model)
    added = []
    for position, layer in enumerate(mine):
        if layer.name in theirs:
            layer.set_weights(trained.get_layer(layer.name).get_weights())
        elif isinstance(layer, layers.Conv2D):
            height, width, channels, _ = layer.kernel.shape
            kernel = np.zeros(layer.kernel.shape, np.float32)
            kernel[height // 2, width // 2, np.arange(channels), np.arange(channels)] = 1.0
            layer.set_weights([kernel] + [np.zeros(channels, np.float32)] * (layer.use_bias is True))
            added.append(layer.name)
        else:  # the BatchNormalization after a new convolution
            conv = mine[position - 1]
            probe = keras.Model(model.inputs, conv.input)
            features = probe.predict(faces, batch_size=batch_size, verbose=0).astype(np.float64)
            mean, var = features.mean(axis=(0, 1, 2)), features.var(axis=(0, 1, 2))
            gamma = np.sqrt(var + layer.epsilon)
            layer.set_weights([w.astype(np.float32) for w in (gamma, mean, mean, var)])
    return {"added": added, "as": "identity convolutions, BatchNormalization from the statistics of their input",
            "faces": int(len(faces))}


def widenable(model: keras.Model, trained: keras.Model) -> bool:
    """Whether ``model`` is ``trained``'s layers (names, kinds, order) with more channels in some, fewer in none."""
    mine, theirs = weighted_layers(model), weighted_layers(trained)
    if [(layer.name, type(layer)) for layer in mine] != [(layer.name, type(layer)) for layer in theirs]:
        return False
    if not all(isinstance(layer, (layers.Conv2D, layers.Dense, layers.BatchNormalization)) for layer in mine):
        return False
    wider = False
    for a, b in zip(mine, theirs):
        shapes_a, shapes_b = [tuple(w.shape) for w in a.weights], [tuple(w.shape) for w in b.weights]
        if len(shapes_a) != len(shapes_b):
            return False
        for x, y in zip(shapes_a, shapes_b):
            if len(x) != len(y) or x[:-2] != y[:-2] or any(i < j for i, j in zip(x, y)):
                return False
        wider |= shapes_a != shapes_b
    return wider


def widen_into(model: keras.Model, trained: keras.Model, seed: int = 0, noise: float = 0.01) -> dict:
    """Copy ``trained`` into the wider ``model``, new channels as copies of old ones; returns a record.

    ``noise``: the standard deviation, relative to that of the layer's weights, of the noise added to the
    weights that read a copied channel (0 keeps the function exactly). Raises ValueError when ``model``
    is not ``trained`` widened (see ``widenable``).
    """
    if not widenable(model, trained):
        raise ValueError(f"{model.name} is not {trained.name}'s layers with more channels")
    rng = np.random.default_rng(seed)
    order = [layer for layer in model.layers if layer.weights or isinstance(layer, layers.Flatten)]
    reads = None  # for each input channel of the current layer, the trained channel it copies (None: itself)
    copies = None  # for each input channel, how many channels copy the same trained channel
    outputs = None  # for each output channel of the last convolution or dense layer, the trained channel it copies
    channels = {}
    for layer in order:
        source = trained.get_layer(layer.name)
        if isinstance(layer, layers.Flatten):
            if reads is not None:
                height, width, old = source.input.shape[1:]
                positions = np.arange(height * width)[:, None]
                reads = (positions * old + reads[None, :]).ravel()
                copies = np.tile(copies, height * width)
            continue
        weights = [np.asarray(w) for w in source.get_weights()]
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([w[outputs] for w in weights])
            continue
        kernel = weights[0]
        if reads is not None:
            kernel = np.take(kernel, reads, axis=-2) / copies[:, None]
            shared = copies > 1
            if noise and shared.any():
                jitter = rng.normal(0.0, noise * float(weights[0].std()), kernel[..., shared, :].shape)
                kernel[..., shared, :] += jitter.astype(kernel.dtype)
        old, new = kernel.shape[-1], layer.kernel.shape[-1]
        outputs = np.concatenate([np.arange(old), rng.integers(0, old, new - old)])
        layer.set_weights([kernel[..., outputs]] + [w[outputs] for w in weights[1:]])
        if new != old:
            channels[layer.name] = [int(old), int(new)]
        reads = outputs
        copies = np.bincount(outputs, minlength=old)[outputs]
    return {"channels": channels, "as": "copies of randomly chosen channels, their readers' weights shared out",
            "noise": noise, "seed": seed}
