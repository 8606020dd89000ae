"""Function-preserving growth (app.training.grow): a trained net copied into a deeper or a wider one."""
from __future__ import annotations

import numpy as np
import pytest

from app.training.architectures import make_model, vgg
from app.training.average import reestimate_batchnorm
from app.training.grow import deepen_into, deepenable, widen_into, widenable
from tests.reshaping import randomised, train_then_init_from

NO_DROPOUT = (0.0,) * 5


def shallow(dropout=NO_DROPOUT):
    return vgg(widths=(8, 8, 16, 16), convs=(1, 1, 1, 1), dense=16, dropout=dropout, name="shallow")


def deep(dropout=NO_DROPOUT):
    return vgg(widths=(8, 8, 16, 16), convs=(1, 2, 1, 3), dense=16, dropout=dropout, name="deep")


def test_the_deepened_net_computes_what_the_trained_one_does_in_inference_and_training():
    small, big = randomised(shallow()), deep()
    faces = np.random.default_rng(1).random((64, 48, 48, 1), dtype=np.float32)
    # As in a trained net, the moving statistics are those of the data (here exactly those of this one batch).
    reestimate_batchnorm(small, faces, batch_size=64, verbose=0)

    record = deepen_into(big, small, faces)

    assert record["added"] == ["s2c2_conv", "s4c2_conv", "s4c3_conv"] and record["faces"] == 64
    np.testing.assert_allclose(big.predict(faces, verbose=0), small.predict(faces, verbose=0), atol=1e-5)
    # In training mode the new BatchNormalization layers see the batch their statistics came from: identity again.
    np.testing.assert_allclose(big(faces, training=True).numpy(), small(faces, training=True).numpy(), atol=1e-4)
    other = np.random.default_rng(2).random((8, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(big.predict(other, verbose=0), small.predict(other, verbose=0), atol=1e-5)


def test_only_the_same_layers_plus_square_convolutions_can_be_deepened_into():
    small = shallow()
    assert deepenable(deep(), small)
    assert not deepenable(shallow(), small)  # nothing new: a plain copy
    assert not deepenable(small, deep())  # fewer layers
    assert not deepenable(vgg(widths=(8, 8, 16, 32), convs=(1, 2, 1, 3), dense=16), small)  # a layer reshaped
    with pytest.raises(ValueError, match="shallow is not deep's layers plus new square convolutions"):
        deepen_into(small, deep(), np.zeros((2, 48, 48, 1), np.float32))


def test_the_deep_architecture_deepens_the_shipped_layers():
    assert deepenable(make_model("vgg-deep-light"), make_model("vgg-light"))


def test_init_from_a_shallower_trained_net_deepens_it_and_says_so_in_the_card(tmp_path, monkeypatch, capsys):
    printed, training = train_then_init_from(tmp_path, monkeypatch, capsys,
                                             lambda: shallow((0.1,) * 5), lambda: deep((0.1,) * 5))
    assert "they start as identities" in printed
    assert training["init_from"]["deepened"]["added"] == ["s2c2_conv", "s4c2_conv", "s4c3_conv"]
    assert training["init_from"]["deepened"]["faces"] == training["n_train"]  # a small set: every training face


def wide(dropout=NO_DROPOUT):
    return vgg(widths=(8, 12, 16, 24), convs=(1, 1, 1, 1), dense=16, dropout=dropout, name="wide")


def test_the_widened_net_computes_what_the_trained_one_does_in_inference_and_training():
    small, big = randomised(shallow()), wide()
    faces = np.random.default_rng(1).random((32, 48, 48, 1), dtype=np.float32)

    record = widen_into(big, small, seed=3, noise=0.0)

    assert record["channels"] == {"s2c1_conv": [8, 12], "s4c1_conv": [16, 24]}
    np.testing.assert_allclose(big.predict(faces, verbose=0), small.predict(faces, verbose=0), atol=1e-5)
    np.testing.assert_allclose(big(faces, training=True).numpy(), small(faces, training=True).numpy(), atol=1e-4)
    # Every new channel is a copy of an old one: same kernel, same BatchNormalization.
    kernel, old = big.get_layer("s4c1_conv").kernel.numpy(), small.get_layer("s4c1_conv").kernel.numpy()
    np.testing.assert_array_equal(kernel[..., :16], old)
    copied = [int(np.flatnonzero((old == kernel[..., [j]]).all(axis=(0, 1, 2)))[0]) for j in range(16, 24)]
    gamma = big.get_layer("s4c1_bn").gamma.numpy()
    np.testing.assert_array_equal(gamma[16:], small.get_layer("s4c1_bn").gamma.numpy()[copied])


def test_widening_noise_parts_the_copies_but_keeps_the_answers_close():
    small = randomised(shallow())
    faces = np.random.default_rng(1).random((32, 48, 48, 1), dtype=np.float32)
    exact, noisy = wide(), wide()
    widen_into(exact, small, seed=3, noise=0.0)
    widen_into(noisy, small, seed=3, noise=0.01)

    assert not np.array_equal(noisy.get_layer("s3c1_conv").kernel.numpy(), exact.get_layer("s3c1_conv").kernel.numpy())
    np.testing.assert_array_equal(noisy.get_layer("s2c1_conv").kernel.numpy(), exact.get_layer("s2c1_conv").kernel.numpy())
    np.testing.assert_allclose(noisy.predict(faces, verbose=0), small.predict(faces, verbose=0), atol=0.02)


def test_only_the_same_layers_with_more_channels_can_be_widened_into():
    small = shallow()
    assert widenable(wide(), small)
    assert not widenable(shallow(), small)  # nothing wider: a plain copy
    assert not widenable(small, wide())  # narrower
    assert not widenable(deep(), small)  # other layers
    assert not widenable(vgg(widths=(8, 12, 4, 24), convs=(1, 1, 1, 1), dense=16), small)  # one layer narrower
    with pytest.raises(ValueError, match="shallow is not wide's layers with more channels"):
        widen_into(small, wide())


def test_the_wide_architecture_widens_the_shipped_layers():
    assert widenable(make_model("vgg-wide-light"), make_model("vgg-light"))


def test_init_from_a_narrower_trained_net_widens_it_and_says_so_in_the_card(tmp_path, monkeypatch, capsys):
    printed, training = train_then_init_from(tmp_path, monkeypatch, capsys,
                                             lambda: shallow((0.1,) * 5), lambda: wide((0.1,) * 5))
    assert "its channels were copied to widen it" in printed
    assert training["init_from"]["widened"]["channels"] == {"s2c1_conv": [8, 12], "s4c1_conv": [16, 24]}
    assert training["init_from"]["widened"]["seed"] == 1337  # the run's --seed
