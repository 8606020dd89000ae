"""Sharpness-aware minimisation (SAM, Foret et al., 2021) for ``app.training.train --sam RHO``.

Each training step takes two passes over the batch: the first finds the
gradient g, the weights move by ``RHO * g / |g|`` towards higher loss, the
second pass's gradient there is what the optimizer applies to the original
weights. The net so learns weights whose whole neighbourhood has a low loss,
which is reported to help with noisy labels such as FER-2013's (for the
shipped model it did not: docs/model-notes.md); a step costs about twice as
much.
"""
from __future__ import annotations

import keras
import tensorflow as tf

from app.training.architectures import batchnorm_layers


@keras.saving.register_keras_serializable(package="moodlens")
class SharpnessAware(keras.Model):
    """``net`` trained with SAM at neighbourhood radius ``rho``; predicts exactly as ``net`` does."""

    def __init__(self, net: keras.Model, rho: float = 0.05, **kwargs):
        super().__init__(**kwargs)
        if not rho > 0:
            raise ValueError(f"rho must be positive, not {rho}")
        self.net, self.rho = net, float(rho)

    def call(self, x, training=False):
        return self.net(x, training=training)

    def _loss(self, x, y, y_pred, sample_weight):
        return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        weights = self.trainable_weights
        with tf.GradientTape() as tape:
            y_pred = self(x, training=True)
            loss = self._loss(x, y, y_pred, sample_weight)
        # The epoch's mean loss, as Keras's own train_step keeps it (the loss at the unperturbed weights).
        self._loss_tracker.update_state(loss, sample_weight=tf.shape(keras.tree.flatten(x)[0])[0])
        grads = tape.gradient(loss, weights)
        scale = self.rho / (tf.linalg.global_norm(grads) + 1e-12)
        moves = [(w, tf.cast(g * scale, w.dtype)) for g, w in zip(grads, weights) if g is not None]
        # The moving statistics of BatchNormalization follow the first pass only (dropout's seeds move on).
        moving = batchnorm_statistics(self.net)
        stats = [tf.identity(v) for v in moving]
        for w, e in moves:
            w.assign_add(e)
        with tf.GradientTape() as tape:
            loss_there = self._loss(x, y, self(x, training=True), sample_weight)
        grads = tape.gradient(loss_there, weights)
        for w, e in moves:
            w.assign_sub(e)
        for v, s in zip(moving, stats):
            v.assign(s)
        self.optimizer.apply_gradients(zip(grads, weights))
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def get_config(self):
        return {"name": self.name, "net": keras.saving.serialize_keras_object(self.net), "rho": self.rho}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        net = keras.saving.deserialize_keras_object(config.pop("net"))
        return cls(net, **config)


def batchnorm_statistics(model: keras.Model) -> list:
    """The moving means and variances of every BatchNormalization layer in ``model``, nested models included."""
    return [v for layer in batchnorm_layers(model) for v in (layer.moving_mean, layer.moving_variance)]


def plain(model: keras.Model) -> keras.Model:
    """The net itself: ``model``, or the net a ``SharpnessAware`` model trains."""
    return model.net if isinstance(model, SharpnessAware) else model
