"""nn.feature_maps: the outputs of named layers, from the very pass that gives the logits."""

import numpy as np
import pytest

import nn


def test_feature_maps_shapes_and_logits_equal_forward():
    rng = np.random.default_rng(0)
    model = nn.lenet5(channels=(4, 6), dropout=0.5, rng=rng)  # dropout: eval mode must be used
    x = rng.normal(size=(3, 1, 28, 28)).astype(np.float32)
    logits, maps = nn.feature_maps(model, x)
    assert model.training  # restored
    assert maps["conv1"].shape == (3, 4, 28, 28) and maps["conv2"].shape == (3, 6, 10, 10)
    np.testing.assert_array_equal(logits, model.eval().forward(x))
    np.testing.assert_allclose(maps["conv1"], model.conv1.forward(x))
    assert (maps["conv1"] < 0).any()  # before the activation


def test_feature_maps_of_no_layer_and_of_an_unknown_one():
    model = nn.lenet5(rng=np.random.default_rng(0))
    logits, maps = nn.feature_maps(model, np.zeros((1, 1, 28, 28), np.float32), ())
    assert maps == {} and logits.shape == (1, 10)
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        nn.feature_maps(model, np.zeros((1, 1, 28, 28), np.float32), ("conv9",))
