"""Structured pruning: a trained net's strongest channels copied into a narrower net of the same layers.

``--init-from`` uses it when the trained model has the same layers as
``--arch`` but more channels (``vgg-light`` into ``vgg-slim``, say): every
convolution and dense layer keeps the output channels whose BatchNormalization
scale ``|gamma|`` is largest (a channel the net scales down matters less to it;
Liu et al., "Learning Efficient Convolutional Networks through Network
Slimming", 2017), in their original order, and the next layer keeps the inputs
that read those channels. A layer with no BatchNormalization after it and fewer
outputs keeps the outputs of largest kernel norm. The narrower net then starts
close to what the wide one computes, and fine-tuning (with ``--distill`` from
the wide one) recovers most of the rest.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers

from app.training.architectures import weighted_layers


class PruneError(ValueError):
    """The narrow model is not the trained model's layers with fewer channels."""


def prunable(model: keras.Model, trained: keras.Model) -> bool:
    """Whether ``model`` has ``trained``'s layers (same names, kinds and order) with no wider weights."""
    mine, theirs = weighted_layers(model), weighted_layers(trained)
    if [(layer.name, type(layer)) for layer in mine] != [(layer.name, type(layer)) for layer in theirs]:
        return False
    for a, b in zip(mine, theirs):
        shapes_a, shapes_b = [w.shape for w in a.weights], [w.shape for w in b.weights]
        if len(shapes_a) != len(shapes_b):
            return False
        if any(len(x) != len(y) or any(i > j for i, j in zip(x, y)) for x, y in zip(shapes_a, shapes_b)):
            return False
    return True


def prune_into(model: keras.Model, trained: keras.Model) -> dict:
    """Set ``model``'s weights to ``trained``'s strongest channels; returns a record of what was kept.

    Raises PruneError when ``model`` is not ``trained``'s layers with fewer channels.
    """
    if not prunable(model, trained):
        raise PruneError(f"{model.name} is not {trained.name}'s layers with fewer channels")
    order = [layer for layer in model.layers if layer.weights or isinstance(layer, layers.Flatten)]
    kept_in = None  # indices of the current layer's input channels that were kept (None: all)
    kept_out = None
    record = {}
    for position, layer in enumerate(order):
        source = trained.get_layer(layer.name)
        if isinstance(layer, layers.Flatten):
            if kept_in is not None:
                height, width, channels = source.input.shape[1:]
                kept_in = (np.arange(height * width)[:, None] * channels + kept_in[None, :]).ravel()
            continue
        weights = [np.asarray(w) for w in source.get_weights()]
        if isinstance(layer, layers.BatchNormalization):
            layer.set_weights([w[kept_out] for w in weights])
            continue
        kernel = weights[0] if kept_in is None else np.take(weights[0], kept_in, axis=-2)
        wanted = layer.weights[0].shape[-1]
        follower = order[position + 1] if position + 1 < len(order) else None
        if isinstance(follower, layers.BatchNormalization):
            strength = np.abs(np.asarray(trained.get_layer(follower.name).gamma))
        else:
            strength = np.abs(kernel.reshape(-1, kernel.shape[-1])).sum(axis=0)
        kept_out = np.sort(np.argsort(-strength, kind="stable")[:wanted])
        layer.set_weights([kernel[..., kept_out]] + [w[kept_out] for w in weights[1:]])
        record[layer.name] = [int(wanted), int(kernel.shape[-1])]
        kept_in = kept_out
    return {"kept": "the output channels of largest BatchNormalization |gamma| (kernel norm where none follows)",
            "channels": record}
