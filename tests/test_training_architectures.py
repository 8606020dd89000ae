"""The architectures: every one maps a 48x48 face to seven probabilities; the half-width student is cheap."""
from __future__ import annotations

import numpy as np
import pytest

from app.training.architectures import ARCHITECTURES, make_model
from app.vision.preprocess import EMOTIONS, INPUT_SIZE


def multiply_adds(model) -> int:
    """Multiply-adds of the model's convolutions and dense layers for one face."""
    total = 0
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            total += h * w * k_h * k_w * c_in * c_out
        elif kind == "Dense":
            total += int(np.prod(layer.kernel.shape))
    return total


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_every_architecture_gives_seven_probabilities_per_face(name):
    model = make_model(name)
    faces = np.random.default_rng(0).random((3, INPUT_SIZE, INPUT_SIZE, 1), dtype=np.float32)
    probs = np.asarray(model(faces, training=False))
    assert probs.shape == (3, len(EMOTIONS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_the_half_width_net_costs_about_a_quarter_of_the_default():
    default, half = make_model("vgg"), make_model("vgg-half")
    assert multiply_adds(default) > 100_000_000  # ~120M per face, as ARCHITECTURES notes
    ratio = multiply_adds(half) / multiply_adds(default)
    assert 0.2 < ratio < 0.3
    assert half.count_params() < 0.3 * default.count_params()


def test_an_unknown_architecture_names_the_known_ones():
    with pytest.raises(ValueError, match="vgg-half"):
        make_model("resnet")
