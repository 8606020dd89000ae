"""Sharpness-aware minimisation (``--sam``): what one step does, and that the wrapper saves and predicts."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from app.training.sam import SharpnessAware, plain


def small_net() -> keras.Model:
    """Conv, BatchNormalization, a softmax head: deterministic in training (no dropout)."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    x = rng.random((16, 8, 8, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 3, 16), 3).astype("float32")
    return x, y


def one_step(batch, rho: float | None, start: list[np.ndarray]) -> keras.Model:
    """``small_net`` from the weights ``start`` after one SGD step (lr 0.5) on ``batch``: plain when ``rho`` is
    None, else with SAM at radius ``rho``."""
    net = small_net()
    net.set_weights(start)
    model = net if rho is None else SharpnessAware(net, rho)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="categorical_crossentropy")
    model.fit(*batch, batch_size=len(batch[0]), epochs=1, verbose=0, shuffle=False)
    return plain(model)


def gradient(net, batch) -> list[np.ndarray]:
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = keras.losses.categorical_crossentropy(batch[1], net(batch[0], training=True))
        loss = tf.reduce_mean(loss)
    return [g.numpy() for g in tape.gradient(loss, net.trainable_weights)]


def test_a_sam_step_applies_the_gradient_taken_at_the_perturbed_weights(batch):
    start = small_net().get_weights()
    rho = 0.3
    # What SAM should do, by hand: move along the normalised gradient, take the gradient there, step from the start.
    net = small_net()
    net.set_weights(start)
    g = gradient(net, batch)
    norm = np.sqrt(sum(float(np.sum(v * v)) for v in g))
    for w, v in zip(net.trainable_weights, g):
        w.assign(w.numpy() + rho * v / norm)
    g_there = gradient(net, batch)

    stepped = one_step(batch, rho, start)
    reference = small_net()
    reference.set_weights(start)
    for w, v, new in zip(reference.trainable_weights, g_there, stepped.trainable_weights):
        np.testing.assert_allclose(new.numpy(), w.numpy() - 0.5 * v, rtol=1e-4, atol=1e-5)


def test_a_sam_step_differs_from_a_plain_one_and_tends_to_it_as_rho_shrinks(batch):
    start = small_net().get_weights()
    plain_step = one_step(batch, None, start).get_weights()
    far = one_step(batch, 0.5, start).get_weights()
    near = one_step(batch, 1e-6, start).get_weights()
    gap_far = max(float(np.max(np.abs(a - b))) for a, b in zip(far, plain_step))
    gap_near = max(float(np.max(np.abs(a - b))) for a, b in zip(near, plain_step))
    assert gap_far > 1e-3 and gap_near < 1e-5


def test_batchnorm_statistics_follow_the_first_pass_only(batch):
    """The moving mean and variance are those a plain step computes from the unperturbed weights."""
    start = small_net().get_weights()
    plain_bn = one_step(batch, None, start).get_layer("bn").non_trainable_weights
    sam_bn = one_step(batch, 0.5, start).get_layer("bn").non_trainable_weights
    for a, b in zip(plain_bn, sam_bn):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(plain_bn[0].numpy(), 0.0)  # the statistics did move


def test_the_wrapper_predicts_as_its_net_and_survives_saving(batch, tmp_path):
    net = small_net()
    model = SharpnessAware(net, 0.05)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(*batch, epochs=1, verbose=0)
    np.testing.assert_allclose(model.predict(batch[0], verbose=0), net.predict(batch[0], verbose=0), atol=1e-6)
    model.save(tmp_path / "sam.keras")
    loaded = keras.models.load_model(tmp_path / "sam.keras")
    assert isinstance(loaded, SharpnessAware) and loaded.rho == 0.05
    np.testing.assert_allclose(loaded.predict(batch[0], verbose=0), net.predict(batch[0], verbose=0), atol=1e-6)
    assert plain(loaded) is loaded.net and plain(net) is net


def test_rho_must_be_positive():
    with pytest.raises(ValueError, match="rho must be positive, not 0"):
        SharpnessAware(small_net(), 0)


def test_dropout_draws_new_masks_for_the_second_pass_and_the_next_step(batch):
    """Only BatchNormalization's statistics are put back after the second pass: dropout's seed moves on, so the
    next step does not reuse the second pass's masks."""
    def seed_state(rho):
        inputs = keras.Input((8, 8, 1))
        x = keras.layers.Dropout(0.5, seed=3)(keras.layers.Flatten()(inputs))
        net = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
        model = net if rho is None else SharpnessAware(net, rho)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
        model.fit(*batch, batch_size=len(batch[0]), epochs=1, verbose=0, shuffle=False)
        return [v.numpy() for v in net.non_trainable_variables]

    plain_state, sam_state = seed_state(None), seed_state(0.1)
    assert not all(np.array_equal(a, b) for a, b in zip(plain_state, sam_state))


def test_batchnorm_statistics_finds_every_moving_mean_and_variance():
    from app.training.architectures import make_model
    from app.training.sam import batchnorm_statistics

    found = batchnorm_statistics(make_model("vgg-light"))
    assert len(found) == 2 * 9 and all(v.path.split("/")[-1] in ("moving_mean", "moving_variance") for v in found)
    wrapped = keras.Sequential([keras.Input((8, 8, 1)), small_net()])
    assert len(batchnorm_statistics(wrapped)) == 2
