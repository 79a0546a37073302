"""The fast ``nn`` layers compute exactly what the slow loop references compute, forward and
backward, in float64, over awkward shapes: strides, padding, kernels 1-5, non-square inputs
and kernels, batch 1, overlapping and gapped pool windows, ties, and every memory layout of
``tests/layouts.py`` (plain NCHW, the batch-last view consecutive layers hand each other, and
other strided views)."""

import zlib

import numpy as np
import pytest

import nn
from nn import reference as ref
from nn.im2col import output_size
from tests.layouts import LAYOUTS, in_layout



def seeded(*case) -> np.random.Generator:
    """A generator seeded from the test case itself (stable across runs, unlike ``hash``)."""
    return np.random.default_rng(zlib.crc32(repr(case).encode()))


def assert_same(actual, expected, what=""):
    """Equal up to float64 summation-order rounding."""
    expected = np.asarray(expected)
    assert np.shape(actual) == expected.shape, f"{what}: shape {np.shape(actual)} != {expected.shape}"
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12 * scale, err_msg=what)


def forward_backward(layer, x, dout):
    """Run the layer; also check that it modifies neither its input nor ``dout``."""
    x_before, dout_before = x.copy(), dout.copy()
    out = layer(x)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(x, x_before, err_msg="forward modified its input")
    np.testing.assert_array_equal(dout, dout_before, err_msg="backward modified dout")
    return out, dx


# -- convolution -----------------------------------------------------------------------------
# (N, C_in, H, W, C_out, kernel, stride, padding, bias)
CONV_CASES = [
    (1, 1, 5, 5, 1, 1, 1, 0, True),                 # 1x1 kernel, batch 1
    (2, 3, 7, 6, 4, 3, 1, 1, True),                 # non-square input, "same" padding
    (2, 2, 8, 9, 3, (3, 2), (2, 1), (1, 0), True),  # non-square kernel, stride and padding
    (3, 2, 9, 7, 2, 5, 2, 2, False),                # 5x5, stride 2, no bias
    (1, 3, 6, 11, 2, (2, 4), (1, 3), (3, 2), True),  # padding wider than half the kernel
    (2, 1, 10, 10, 3, 4, 2, 3, True),               # even kernel, padding 3
    (2, 2, 5, 5, 2, 5, 1, 0, True),                 # a single output pixel
    (1, 2, 8, 8, 2, 3, 3, 1, True),                 # stride leaves the last rows unused
    (2, 3, 7, 7, 4, 1, 2, 0, True),                 # stride larger than the kernel
]


# Training, evaluation, a layer with no input gradient, one output row per chunk (each
# chunk's windows and input gradient reaching rows its neighbours' reach too) and three
# (the last chunk shorter, as for evaluation's 1,000 images): all must agree.
CONV_MODES = ["train", "eval", "no_input_grad", "one_row_chunks", "three_row_chunks"]


@pytest.mark.parametrize("mode", CONV_MODES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", CONV_CASES + [(2, 1, 20, 18, 3, 5, 1, 2, True)], ids=str)
def test_conv2d_matches_loops(case, layout, mode):
    n, c_in, h, w, c_out, kernel, stride, padding, bias = case
    rng = seeded(case)
    layer = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias,
                      rng=rng, dtype=np.float64)
    layer.train(mode != "eval")  # the same path today; must stay the same numbers
    layer.input_grad = mode != "no_input_grad"
    if mode == "one_row_chunks":
        layer.WINDOW_CHUNK_BYTES = layer.INPUT_GRADIENT_CHUNK_BYTES = 1
    if mode == "three_row_chunks":  # the windows of three output rows, float64
        w_out = output_size(w, layer.kernel_size[1], layer.stride[1], layer.padding[1])
        layer.WINDOW_CHUNK_BYTES = 3 * layer.stride[0] * c_in * layer.kernel_size[1] * w_out * n * 8
    layer.params["weight"][...] = rng.normal(size=layer.params["weight"].shape)
    if bias:
        layer.params["bias"][...] = rng.normal(size=c_out)
    x = in_layout(rng.normal(size=(n, c_in, h, w)), layout)
    weight = layer.params["weight"].copy()
    expected = ref.conv2d_forward(x, weight, layer.params.get("bias"), stride, padding)
    dout = in_layout(rng.normal(size=expected.shape), layout)
    out, dx = forward_backward(layer, x, dout)
    assert_same(out, expected, "forward")

    dx_ref, dw_ref, db_ref = ref.conv2d_backward(x, weight, dout, stride, padding)
    if mode == "no_input_grad":
        assert dx is None
    else:
        assert_same(dx, dx_ref, "dx")
    assert_same(layer.grads["weight"], dw_ref, "dweight")
    if bias:
        assert_same(layer.grads["bias"], db_ref, "dbias")
    else:
        assert "bias" not in layer.grads and "bias" not in layer.params


def test_conv2d_outputs_survive_the_next_call():
    """Buffers are reused between calls: an output or input gradient already handed out must
    not change when the layer runs again, and backward must use the latest forward."""
    rng = np.random.default_rng(1)
    layer = nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=rng, dtype=np.float64)
    layer.params["bias"][...] = rng.normal(size=3)
    x1, x2 = rng.normal(size=(2, 2, 7, 7)), rng.normal(size=(2, 2, 7, 7))
    d1, d2 = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    w, b = layer.params["weight"], layer.params["bias"]
    out1 = layer(x1)
    dx1 = layer.backward(d1)
    out2 = layer(x2)
    dx2 = layer.backward(d2)
    assert_same(out1, ref.conv2d_forward(x1, w, b, 2, 1), "first output after a second call")
    assert_same(dx1, ref.conv2d_backward(x1, w, d1, 2, 1)[0], "first dx after a second call")
    assert_same(out2, ref.conv2d_forward(x2, w, b, 2, 1), "second output")
    dx2_ref, dw2_ref, _ = ref.conv2d_backward(x2, w, d2, 2, 1)
    assert_same(dx2, dx2_ref, "second dx")
    assert_same(layer.grads["weight"], dw2_ref, "dweight of the second call")


# -- pooling ---------------------------------------------------------------------------------
# (N, C, H, W, kernel, stride, padding)
POOL_CASES = [
    (2, 3, 8, 8, 2, None, 0),             # LeNet's 2x2/2 (the fast path)
    (1, 2, 6, 10, 2, 2, 0),               # 2x2/2, even non-square sizes
    (1, 2, 7, 9, 2, 2, 0),                # 2x2/2 on odd sizes: last row and column dropped
    (2, 2, 7, 7, 3, 2, 1),                # overlapping windows with padding
    (1, 3, 6, 8, (3, 2), (1, 2), (1, 0)),  # non-square kernel, stride and padding
    (2, 1, 9, 8, 3, 3, 0),
    (1, 2, 8, 7, 2, 3, 0),                # stride > kernel: gaps between windows
    (2, 2, 6, 6, 4, 1, 2),                # padding 2, stride 1: heavy overlap
    (1, 1, 5, 6, 1, 1, 0),                # 1x1: identity
    (1, 2, 10, 10, 5, 2, 2),
    (1, 1, 5, 5, (2, 3), (2, 1), (1, 1)),
]

MAX_POOL_INPUTS = {
    "distinct": lambda rng, shape: rng.normal(size=shape),
    # All negative: with padding, a zero-padded max would wrongly return 0.
    "negative": lambda rng, shape: -np.abs(rng.normal(size=shape)) - 0.5,
    # Exact ties everywhere (like MNIST background): only "first maximum" routing agrees.
    "ties": lambda rng, shape: rng.integers(0, 3, size=shape).astype(np.float64),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("values", list(MAX_POOL_INPUTS))
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_maxpool_matches_loops(case, values, layout, mode):
    n, c, h, w, kernel, stride, padding = case
    rng = seeded(case, values)
    layer = nn.MaxPool2d(kernel, stride=stride, padding=padding)
    layer.train(mode == "train")  # eval computes values its own way; backward must still work
    x = in_layout(MAX_POOL_INPUTS[values](rng, (n, c, h, w)), layout)
    expected = ref.maxpool_forward(x, kernel, stride, padding)
    # Small integers: every sum of them is exact, so routing is compared bit for bit.
    dout = in_layout(rng.integers(1, 9, size=expected.shape).astype(np.float64), layout)
    out, dx = forward_backward(layer, x, dout)
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(dx, ref.maxpool_backward(x, dout, kernel, stride, padding))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_avgpool_matches_loops(case, layout):
    n, c, h, w, kernel, stride, padding = case
    rng = seeded(case)
    layer = nn.AvgPool2d(kernel, stride=stride, padding=padding)
    # Offset from zero so that "padding counts in the mean" changes the result.
    x = in_layout(rng.normal(loc=1.0, size=(n, c, h, w)), layout)
    expected = ref.avgpool_forward(x, kernel, stride, padding)
    dout = in_layout(rng.normal(size=expected.shape), layout)
    out, dx = forward_backward(layer, x, dout)
    assert_same(out, expected, "forward")
    assert_same(dx, ref.avgpool_backward(x, dout, kernel, stride, padding), "dx")


# -- the report's max-pooling rule on ties --------------------------------------------------
# Adding t to every input adds exactly t to every window's maximum, so the loss
# J(t) = sum(dout * maxpool(x + t)) has dJ/dt = sum(dout) even where values tie: the input
# gradient of any valid rule must add up to sum(dout). (No padding here: the report pads max
# pooling with 0, which a shift would move relative to the inputs.)
# (N, C, H, W, kernel, stride)
TIE_CASES = [
    (2, 3, 8, 8, 2, None),  # LeNet's 2x2/2 windows
    (1, 2, 9, 9, 3, 2),     # overlapping windows: an input can win several
]


def relu_output_with_ties(rng, shape):
    """What max pooling sees after ReLU: about half the values exactly 0, a block all 0."""
    x = np.maximum(rng.normal(size=shape), 0.0)
    x[:, :, :4, :4] = 0.0  # whole windows of zeros, like MNIST's background
    return x


@pytest.mark.parametrize("case", TIE_CASES, ids=str)
def test_all_maxima_rule_breaks_gradient_conservation_on_ties(case):
    n, c, h, w, kernel, stride = case
    rng = seeded(case, "ties")
    x = relu_output_with_ties(rng, (n, c, h, w))
    dout = rng.integers(1, 9, size=ref.maxpool_forward(x, kernel, stride).shape).astype(np.float64)
    eps = 1e-3  # J is linear in t: the central difference is exact up to rounding
    through_shift = (np.sum(dout * ref.maxpool_forward(x + eps, kernel, stride))
                     - np.sum(dout * ref.maxpool_forward(x - eps, kernel, stride))) / (2 * eps)
    assert through_shift == pytest.approx(dout.sum(), rel=1e-9)

    layer = nn.MaxPool2d(kernel, stride=stride)
    layer(x)
    dx_first = ref.maxpool_backward(x, dout, kernel, stride)
    np.testing.assert_array_equal(layer.backward(dout), dx_first)
    assert dx_first.sum() == dout.sum()  # small integers: exact

    dx_all = ref.maxpool_backward_all_maxima(x, dout, kernel, stride)
    assert dx_all.sum() > dout.sum() + 1  # tied maxima each received the whole gradient
    if stride is None:  # non-overlapping 2x2 windows: each sends back (its maxima) x dout
        windows = x.reshape(n, c, h // 2, 2, w // 2, 2)
        maxima = (windows == windows.max(axis=(3, 5), keepdims=True)).sum(axis=(3, 5))
        np.testing.assert_array_equal(dx_first.reshape(windows.shape).sum(axis=(3, 5)), dout)
        np.testing.assert_array_equal(dx_all.reshape(windows.shape).sum(axis=(3, 5)), maxima * dout)


@pytest.mark.parametrize("case", TIE_CASES, ids=str)
def test_all_maxima_rule_equals_first_maximum_without_ties(case):
    n, c, h, w, kernel, stride = case
    rng = seeded(case, "distinct")
    x = rng.permutation(n * c * h * w).reshape(n, c, h, w) + 1.0  # distinct and positive
    dout = rng.integers(1, 9, size=ref.maxpool_forward(x, kernel, stride).shape).astype(np.float64)
    np.testing.assert_array_equal(ref.maxpool_backward_all_maxima(x, dout, kernel, stride),
                                  ref.maxpool_backward(x, dout, kernel, stride))


# -- fully connected -------------------------------------------------------------------------
@pytest.mark.parametrize("n, n_in, n_out, bias", [(1, 1, 1, True), (3, 7, 5, True), (4, 12, 3, False),
                                                  (2, 40, 6, True)])
def test_linear_matches_loops(n, n_in, n_out, bias):
    rng = np.random.default_rng(n * 1000 + n_in * 10 + n_out)
    layer = nn.Linear(n_in, n_out, bias=bias, rng=rng, dtype=np.float64)
    if bias:
        layer.params["bias"][...] = rng.normal(size=n_out)
    x, dout = rng.normal(size=(n, n_in)), rng.normal(size=(n, n_out))
    weight = layer.params["weight"]
    out, dx = forward_backward(layer, x, dout)
    assert_same(out, ref.linear_forward(x, weight, layer.params.get("bias")), "forward")
    dx_ref, dw_ref, db_ref = ref.linear_backward(x, weight, dout)
    assert_same(dx, dx_ref, "dx")
    assert_same(layer.grads["weight"], dw_ref, "dweight")
    if bias:
        assert_same(layer.grads["bias"], db_ref, "dbias")
    else:
        assert "bias" not in layer.grads


def test_flatten_is_c_order_and_reversible():
    x = in_layout(np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5), "batch_last")
    layer = nn.Flatten()
    out = layer(x)
    np.testing.assert_array_equal(out, np.arange(120.0).reshape(2, 60))  # feature c*H*W + h*W + w
    np.testing.assert_array_equal(layer.backward(out), x)


# -- activations -----------------------------------------------------------------------------
ACTIVATIONS = {
    "relu": (nn.ReLU, ref.relu_forward, ref.relu_backward),
    "leaky_relu_0.01": (lambda: nn.LeakyReLU(), ref.leaky_relu_forward, ref.leaky_relu_backward),
    "leaky_relu_0.2": (lambda: nn.LeakyReLU(0.2), lambda x: ref.leaky_relu_forward(x, 0.2),
                       lambda x, d: ref.leaky_relu_backward(x, d, 0.2)),
    "tanh": (nn.Tanh, ref.tanh_forward, ref.tanh_backward),
    "sigmoid": (nn.Sigmoid, ref.sigmoid_forward, ref.sigmoid_backward),
}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 3, 7), (6, 9)], ids=str)
@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_loops(name, shape, layout):
    make, forward, backward = ACTIVATIONS[name]
    rng = np.random.default_rng(len(name) * 100 + len(shape))
    x = rng.normal(scale=3.0, size=shape)
    x.flat[::5] = 0.0  # exact zeros: the ReLU derivative there is 0
    x.flat[1] = 40.0  # saturation: sigmoid/tanh must stay finite
    x.flat[2] = -40.0
    x = in_layout(x, layout)
    dout = in_layout(rng.normal(size=shape), layout)
    out, dx = forward_backward(make(), x, dout)
    assert_same(out, forward(x), "forward")
    assert_same(dx, backward(x, dout), "dx")


# -- loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, k, offset", [(1, 2, 0.0), (5, 10, 0.0), (3, 4, 1000.0), (4, 10, -1000.0)])
def test_softmax_cross_entropy_matches_loops(n, k, offset):
    rng = np.random.default_rng(n * k)
    logits = rng.normal(scale=4.0, size=(n, k)) + offset  # +-1000: exp would overflow unshifted
    labels = rng.integers(0, k, size=n)
    loss, dlogits = nn.SoftmaxCrossEntropy()(logits, labels)
    loss_ref, dlogits_ref = ref.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and abs(loss - loss_ref) <= 1e-12 * max(1.0, abs(loss_ref))
    assert_same(dlogits, dlogits_ref, "dlogits")
    np.testing.assert_allclose(dlogits.sum(axis=1), 0.0, atol=1e-15)  # softmax minus one-hot


def test_softmax_cross_entropy_of_shards_adds_up_to_the_batch():
    rng = np.random.default_rng(4)
    logits, labels = rng.normal(size=(10, 7)).astype(np.float32), rng.integers(0, 7, size=10)
    loss_fn = nn.SoftmaxCrossEntropy()
    loss, dlogits = loss_fn(logits, labels)
    parts = [loss_fn(logits[rows], labels[rows], batch_size=10) for rows in (slice(0, 4), slice(4, 10))]
    assert sum(part_loss for part_loss, _ in parts) == pytest.approx(loss, rel=1e-12)
    assert np.array_equal(np.concatenate([d for _, d in parts]), dlogits)  # row by row, exactly
    with pytest.raises(ValueError, match="batch_size must be at least the 4 rows"):
        loss_fn(logits[:4], labels[:4], batch_size=3)


# -- the whole network -----------------------------------------------------------------------
@pytest.mark.parametrize("activation, pool, channels, hidden", [
    ("relu", "max", (6, 16), (120, 84)),   # LeNet-5 itself
    ("leaky_relu", "avg", (2, 3), (10, 7)),
    ("tanh", "max", (2, 3), (10, 7)),
    ("sigmoid", "avg", (3, 2), (8, 9)),
])
def test_lenet5_matches_naive_lenet_step(activation, pool, channels, hidden):
    rng = np.random.default_rng(5)
    model = nn.lenet5(activation=activation, pool=pool, channels=channels, hidden=hidden,
                      leaky_slope=0.1, rng=rng, dtype=np.float64)
    for name, value in model.named_parameters():
        if name.endswith("bias"):  # biases start at zero; make them matter
            value[...] = rng.normal(scale=0.1, size=value.shape)
    x = rng.normal(size=(2, 1, 28, 28))
    x[0, 0, :10] = -0.42  # a flat background, as in MNIST: pooling ties
    y = np.array([3, 8])
    loss_ref, grads_ref = ref.naive_lenet_step(model.state_dict(), x, y, activation=activation,
                                               pool=pool, leaky_slope=0.1)
    loss, dlogits = nn.SoftmaxCrossEntropy()(model(x), y)
    model.backward(dlogits)
    assert abs(loss - loss_ref) <= 1e-12 * abs(loss_ref)
    grads = dict(model.named_gradients())
    assert grads.keys() == grads_ref.keys()
    for name in grads:
        assert_same(grads[name], grads_ref[name], name)
