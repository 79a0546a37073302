"""benchmarks/flops.py counts the multiply-adds the benchmark's GFLOP/s figures rest on."""

import numpy as np
import pytest

import nn
from benchmarks.flops import multiply_adds


def test_lenet5_multiply_adds_per_image_by_hand():
    model = nn.lenet5(rng=np.random.default_rng(0))  # 6/16 channels, 120/84 hidden
    conv1 = 6 * 28 * 28 * 1 * 5 * 5  # C_out * H_out * W_out * C_in * kH * kW
    conv2 = 16 * 10 * 10 * 6 * 5 * 5
    dense = 400 * 120 + 120 * 84 + 84 * 10
    forward = conv1 + conv2 + dense
    assert multiply_adds(model)["forward"] == forward == 416_520
    # Backward: dW and dX of every layer, each as large as its forward product ...
    assert multiply_adds(model) == {"forward": forward, "backward": 2 * forward, "step": 3 * forward}
    # ... except conv1's dX when its input needs no gradient.
    model.input_grad = False
    assert multiply_adds(model) == {"forward": forward, "backward": 2 * forward - conv1,
                                    "step": 3 * forward - conv1}


def test_the_count_follows_the_architecture_and_leaves_the_mode_alone():
    model = nn.lenet5(rng=np.random.default_rng(0), channels=(8, 24), hidden=(100, 50))
    model.train()
    forward = 8 * 784 * 25 + 24 * 100 * 8 * 25 + 600 * 100 + 100 * 50 + 50 * 10
    assert multiply_adds(model)["forward"] == forward
    assert model.training


@pytest.mark.parametrize("workers", [1, 2])
def test_the_matmul_peak_is_a_positive_rate_per_process(workers):
    from benchmarks.peak import matmul_peak_gflops
    peak = matmul_peak_gflops(workers, size=128, rounds=2)
    assert peak["peak_gflops"] > 0
    assert peak["per_process_gflops"] == pytest.approx(peak["peak_gflops"] / workers, abs=0.1)
    assert (peak["size"], peak["workers"], peak["rounds"]) == (128, workers, 2)
