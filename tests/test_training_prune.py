"""Structured pruning (app.training.prune): a wide net's strongest channels copied into a narrower one."""
from __future__ import annotations

import numpy as np
import pytest

from app.training.architectures import make_model, vgg
from app.training.prune import PruneError, prunable, prune_into
from tests.reshaping import randomised, train_then_init_from


def wide():
    return vgg(widths=(8, 8, 16, 16), convs=(2, 1, 1, 1), dense=16, name="wide")


def narrow():
    return vgg(widths=(4, 6, 8, 12), convs=(2, 1, 1, 1), dense=8, name="narrow")


def kill_all_but(model, keep: dict[str, np.ndarray]):
    """Zero gamma and beta of every channel not in ``keep[bn name]``: those channels then output exactly 0."""
    for name, kept in keep.items():
        layer = model.get_layer(name)
        gamma, beta, mean, var = layer.get_weights()
        dead = np.setdiff1d(np.arange(len(gamma)), kept)
        gamma[dead], beta[dead] = 0.0, 0.0
        gamma[kept] += 1.0  # the live channels are also the strongest
        layer.set_weights([gamma, beta, mean, var])


def test_a_net_whose_dropped_channels_are_dead_is_computed_exactly_by_its_pruned_copy():
    big, small = randomised(wide()), narrow()
    rng = np.random.default_rng(1)
    keep = {}
    for layer in small.layers:
        if layer.name.endswith("_bn"):
            total = big.get_layer(layer.name).gamma.shape[0]
            keep[layer.name] = np.sort(rng.choice(total, layer.gamma.shape[0], replace=False))
    kill_all_but(big, keep)

    record = prune_into(small, big)

    faces = rng.random((5, 48, 48, 1), dtype=np.float32)
    np.testing.assert_allclose(small.predict(faces, verbose=0), big.predict(faces, verbose=0), atol=1e-5)
    first = small.get_layer("s1c1_conv").get_weights()[0]
    np.testing.assert_array_equal(first, big.get_layer("s1c1_conv").get_weights()[0][..., keep["s1c1_bn"]])
    assert record["channels"]["s2c1_conv"] == [6, 8] and record["channels"]["fc"] == [8, 16]


def test_pruning_into_the_same_widths_keeps_the_whole_net():
    big, same = randomised(wide()), wide()
    prune_into(same, big)
    for mine, theirs in zip(same.get_weights(), big.get_weights()):
        np.testing.assert_array_equal(mine, theirs)


def test_only_the_same_layers_with_no_more_channels_can_be_pruned_into():
    big = wide()
    assert prunable(narrow(), big)
    assert not prunable(big, narrow())  # wider than the source
    assert not prunable(vgg(widths=(4, 6, 8, 16), convs=(1, 1, 1, 1), dense=8), big)  # a layer fewer
    with pytest.raises(PruneError, match="wide is not narrow's layers with fewer channels"):
        prune_into(big, narrow())


def test_the_slim_architecture_is_the_shipped_layers_at_half_width():
    assert prunable(make_model("vgg-slim"), make_model("vgg-light"))
    assert make_model("vgg-slim").count_params() < make_model("vgg-light").count_params() / 2


def test_init_from_a_wider_trained_net_prunes_it_and_says_so_in_the_card(tmp_path, monkeypatch, capsys):
    printed, training = train_then_init_from(tmp_path, monkeypatch, capsys, wide, narrow)
    assert "its strongest channels were kept" in printed
    init = training["init_from"]
    assert init["pruned"]["channels"]["s1c1_conv"] == [4, 8] and init["parent"]["architecture"] == "source"
