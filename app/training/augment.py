"""Data augmentation for 48x48 gray faces, applied to whole batches in tf.data."""
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
