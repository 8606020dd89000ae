"""Data augmentation for 48x48 gray faces, applied to whole batches in tf.data; MixUp and CutMix of faces and labels."""
from __future__ import annotations

import keras
import tensorflow as tf


def make_augmenter(seed: int = 0, strength: float = 1.0) -> keras.Sequential:
    """Flip, rotate, zoom, shift, brightness/contrast and random erasing.

    Input and output: float32 batches (N, 48, 48, 1) in [0, 1]; shapes and
    range are preserved. ``strength`` scales every geometric/photometric range.
    """
    s = strength
    return keras.Sequential(
        [
            keras.layers.RandomFlip("horizontal", seed=seed),
            keras.layers.RandomRotation(0.04 * s, fill_mode="reflect", seed=seed + 1),
            keras.layers.RandomZoom((-0.15 * s, 0.15 * s), fill_mode="reflect", seed=seed + 2),
            keras.layers.RandomTranslation(0.1 * s, 0.1 * s, fill_mode="reflect", seed=seed + 3),
            keras.layers.RandomBrightness(0.2 * s, value_range=(0.0, 1.0), seed=seed + 4),
            keras.layers.RandomContrast(0.3 * s, value_range=(0.0, 1.0), seed=seed + 5),
            keras.layers.RandomErasing(factor=0.5, scale=(0.02, 0.15), value_range=(0.0, 1.0), seed=seed + 6),
        ],
        name="augment",
    )


def augment_batch(augmenter: keras.Sequential, x: tf.Tensor) -> tf.Tensor:
    """Augment one batch and clip back to [0, 1]."""
    return tf.clip_by_value(augmenter(x, training=True), 0.0, 1.0)


def make_mixer(seed: int = 0, alpha: float = 0.2) -> keras.layers.MixUp:
    """MixUp: each face blended with another face of its batch, and its one-hot label likewise.

    The weight of each pair is drawn from Beta(alpha, alpha): a small alpha
    keeps most faces nearly whole, 1.0 blends them uniformly. It computes in
    float32 whatever Keras's global precision policy (a bfloat16 training run
    would otherwise mix bfloat16 faces with float32 weights, which fails).
    """
    return keras.layers.MixUp(alpha=alpha, seed=seed, dtype="float32")


def make_cutter(seed: int = 0, alpha: float = 1.0) -> keras.layers.CutMix:
    """CutMix: a rectangle of each face replaced by the same rectangle of another face of its batch.

    The kept fraction of each face is drawn from Beta(alpha, alpha), with
    0 < alpha <= 1 (1.0, uniform, is the usual choice), and its one-hot label
    is blended by the areas really kept and pasted. Computes in float32, as
    ``make_mixer``.
    """
    return keras.layers.CutMix(factor=(alpha, alpha), seed=seed, dtype="float32")


def mix_batch(mixer: keras.layers.MixUp | keras.layers.CutMix, x: tf.Tensor,
              labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Mix one batch of faces in [0, 1] and their one-hot labels (MixUp or CutMix); the labels' rows still sum to 1."""
    mixed = mixer({"images": x, "labels": labels}, training=True)
    return tf.cast(mixed["images"], x.dtype), tf.cast(mixed["labels"], labels.dtype)
