"""Augmentation keeps shape, dtype and range and changes the images; MixUp and CutMix mix faces and labels alike."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from app.training.augment import augment_batch, make_augmenter, make_cutter, make_mixer, mix_batch
from app.training.data import Split
from app.training.train import make_dataset, precision_policy
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


LEVELS = np.linspace(0.1, 0.9, 7, dtype=np.float32)


def mix_flat_faces(mixer) -> tuple[np.ndarray, np.ndarray]:
    """Seven flat faces, one per emotion, each of its own gray level (``LEVELS``), and their labels, mixed."""
    faces = np.broadcast_to(LEVELS[:, None, None, None], (7, 48, 48, 1)).copy()
    x, y = mix_batch(mixer, tf.constant(faces), tf.constant(np.eye(7, dtype=np.float32)))
    return x.numpy(), y.numpy()


def test_mixup_blends_each_face_and_its_label_with_the_same_partner_and_weight():
    # A mixed flat face's gray level must be its mixed label's weights applied to the levels.
    x, y = mix_flat_faces(make_mixer(seed=3, alpha=0.4))
    assert x.shape == (7, 48, 48, 1) and x.dtype == np.float32 and y.shape == (7, 7) and y.dtype == np.float32
    assert np.allclose(y.sum(axis=1), 1.0, atol=1e-6) and 0.0 <= x.min() and x.max() <= 1.0
    assert ((y > 1e-3).sum(axis=1) == 2).sum() >= 5  # most faces really are blends of two
    assert np.allclose(x[:, 0, 0, 0], y @ LEVELS, atol=1e-5)
    assert np.allclose(x, x[:, :1, :1, :], atol=1e-6)  # the same blend over the whole face


def test_cutmix_pastes_a_rectangle_of_one_partner_and_weighs_labels_by_its_area():
    # Each mixed flat face holds its own level outside one rectangle and its partner's
    # inside it, and its label gives each the share of pixels it kept.
    x, y = mix_flat_faces(make_cutter(seed=5, alpha=1.0))
    assert x.dtype == np.float32 and y.dtype == np.float32 and np.allclose(y.sum(axis=1), 1.0, atol=1e-6)
    pasted = 0
    for i in range(7):
        kinds = [j for j in range(7) if np.isclose(x[i], LEVELS[j], atol=1e-6).any()]
        assert i in kinds and len(kinds) <= 2  # its own face and at most one partner
        if len(kinds) == 1:  # drawn as its own partner, or a patch too thin for a pixel
            assert y[i, i] > 0.95
            continue
        partner = kinds[1 - kinds.index(i)]
        inside = np.argwhere(np.isclose(x[i, ..., 0], LEVELS[partner], atol=1e-6))
        (top, left), (bottom, right) = inside.min(axis=0), inside.max(axis=0)
        assert len(inside) == (bottom - top + 1) * (right - left + 1)  # one filled rectangle
        share = len(inside) / 48 ** 2
        assert abs(y[i, partner] - share) < 0.05 and abs(y[i, i] - (1 - share)) < 0.05
        pasted += 1
    assert pasted >= 4  # most faces really got a patch


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("mixing", [{"mixup": 0.4}, {"cutmix": 1.0}])
def test_training_pipeline_mixes_labels_only_when_asked(faces, policy, mixing):
    split = Split(faces, np.arange(len(faces)) % 7)
    with precision_policy(policy):  # a bfloat16 run feeds bfloat16 faces to MixUp and CutMix
        _, plain = next(iter(make_dataset(split, batch_size=16, seed=0, augment_strength=1.0, shuffle=True)))
        x, mixed = next(iter(make_dataset(split, batch_size=16, seed=0, augment_strength=1.0, shuffle=True,
                                          **mixing)))
    assert ((plain.numpy() > 0).sum(axis=1) == 1).all()  # one-hot without --mixup
    assert ((mixed.numpy() > 1e-3).sum(axis=1) == 2).mean() >= 0.5
    assert np.allclose(mixed.numpy().sum(axis=1), 1.0, atol=1e-6) and mixed.dtype == tf.float32
    assert x.shape == (16, 48, 48, 1)
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 1.0


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_training_pipeline_blends_labels_with_the_teachers_view_of_each_face(faces, policy):
    from app.training.architectures import make_model

    with precision_policy("float32"):
        teachers = [make_model("tiny"), make_model("tiny")]  # two different random teachers
    split = Split(faces, np.arange(len(faces)) % 7)
    with precision_policy(policy):
        x, taught = next(iter(make_dataset(split, batch_size=16, seed=0, augment_strength=1.0, shuffle=True,
                                           mixup=0.4, teachers=teachers, distill_weight=0.3)))
        _, mixed = next(iter(make_dataset(split, batch_size=16, seed=0, augment_strength=1.0, shuffle=True,
                                          mixup=0.4)))
    # The teachers see the face the student is given (augmented and mixed), not the stored one.
    expected = np.mean([teacher(x, training=False).numpy() for teacher in teachers], axis=0)
    assert not np.allclose(expected, np.mean([t(faces).numpy() for t in teachers], axis=0), atol=1e-3)
    assert taught.dtype == tf.float32 and taught.shape == (16, 7)
    assert np.allclose(taught.numpy(), 0.7 * mixed.numpy() + 0.3 * expected, atol=1e-5)
    assert np.allclose(taught.numpy().sum(axis=1), 1.0, atol=1e-5)
