"""Augmentation keeps shape, dtype and range, and really changes the images."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.training.augment import augment_batch, make_augmenter
from app.training.data import Split
from app.training.train import make_dataset
from tests.fersynth import synthetic_face


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    rng = np.random.default_rng(0)
    batch = np.stack([synthetic_face(i % 7, rng) for i in range(16)]).astype(np.float32)[..., None] / 255.0
    batch[0] = 0.0  # extremes must stay in range too (FER-2013 has all-black images)
    batch[1] = 1.0
    return batch


def test_augment_batch_keeps_shape_dtype_and_range(faces):
    out = augment_batch(make_augmenter(seed=0), tf.constant(faces)).numpy()
    assert out.shape == faces.shape and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert np.isfinite(out).all()


def test_augment_batch_changes_images_and_differs_between_calls(faces):
    augmenter = make_augmenter(seed=0)
    first = augment_batch(augmenter, tf.constant(faces)).numpy()
    second = augment_batch(augmenter, tf.constant(faces)).numpy()
    changed = np.abs(first - faces).reshape(len(faces), -1).mean(axis=1)
    assert (changed[2:] > 0.005).mean() >= 0.9  # nearly every textured face is visibly altered
    assert not np.allclose(first, second)


def test_training_pipeline_augments_in_graph_mode(faces):
    split = Split(faces, np.arange(len(faces)) % 7)
    x, y = next(iter(make_dataset(split, batch_size=8, seed=0, augment_strength=1.0, shuffle=True)))
    assert x.shape == (8, 48, 48, 1) and x.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0
    assert y.shape == (8, 7) and np.allclose(y.numpy().sum(axis=1), 1.0)
