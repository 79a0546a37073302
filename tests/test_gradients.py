"""Analytic gradients equal central finite differences (float64), for the inputs AND the
parameters of every layer, of the loss, of the whole LeNet-5, and of the loop references.

Each layer is turned into a scalar ``f = sum(layer(x) * dout)`` with a fixed random ``dout``,
whose gradient is exactly what ``layer.backward(dout)`` returns. Inputs of kinked functions
(ReLU, max pooling) are kept away from their kinks and ties, where a finite difference is
not a derivative; ties get their own exact test.

The error measure is ``max |a - b| / max(1e-8, |a| + |b|)`` over every checked coordinate
(all of them for layers, a random sample for LeNet-5), required below 1e-6. For the whole
network that is only reachable with steps larger than float64 rounding allows at 1e-6, so
its kinks are frozen first (see ``with_frozen_kinks``); a second test uses the plain network
and plain 1e-6 central differences on each tensor's largest gradients.
"""

import zlib

import numpy as np
import pytest

import nn
from nn import reference as ref
from tests.gradcheck import adaptive_numerical_gradient, numerical_gradient, relative_error, sample_indices
from tests.layouts import LAYOUTS, in_layout

TOLERANCE = 1e-6
# Single layers: fourth-order central differences with a 1e-3 step. Conv, linear and the
# pools are linear in their input and in their parameters (no truncation error at all), and
# the activations are smooth where we evaluate them, so a large step costs nothing while its
# rounding error (~1e-16 |f| / step) is a thousand times smaller than with 1e-6. The step
# stays well inside the 1e-2 margins kept around kinks and ties (4-point reach: 2e-3).
LAYER_STEP, LAYER_ORDER = 1e-3, 4


def seeded(*case) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(case).encode()))


def away_from_zero(values: np.ndarray, margin: float = 1e-2) -> np.ndarray:
    """Push values out of (-margin, margin): the ReLU kink stays beyond any step used."""
    return np.where(values >= 0, values + margin, values - margin)


def distinct_values(rng: np.random.Generator, shape) -> np.ndarray:
    """A random permutation of values spaced 0.01 apart: every max-pool window has a unique
    maximum that no finite-difference step here (at most 2e-3) can overtake."""
    size = int(np.prod(shape))
    return (rng.permutation(size) * 0.01 - size * 0.005).reshape(shape)


def check_layer(layer, x: np.ndarray, rng: np.random.Generator):
    """Compare ``backward`` with finite differences for ``x`` and every parameter."""
    out = layer(x)
    dout = rng.normal(size=out.shape)
    dx = layer.backward(dout).copy()
    grads = {name: g.copy() for name, g in layer.grads.items()}
    assert grads.keys() == layer.params.keys()

    def f():
        return float(np.sum(layer(x) * dout))

    errors = {"x": relative_error(dx, numerical_gradient(f, x, LAYER_STEP, order=LAYER_ORDER))}
    for name, value in layer.params.items():
        numeric = numerical_gradient(f, value, LAYER_STEP, order=LAYER_ORDER)
        errors[name] = relative_error(grads[name], numeric)
    assert max(errors.values()) < TOLERANCE, errors
    # A vanishing gradient would make the comparison vacuous.
    assert np.abs(dx).max() > 1e-3


# -- layers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("c_in, c_out, kernel, stride, padding, bias, hw", [
    (1, 2, 3, 1, 0, True, (5, 6)),
    (2, 3, 3, 2, 1, True, (6, 7)),
    (2, 2, (2, 3), (1, 2), (2, 1), True, (5, 5)),
    (3, 1, 5, 1, 2, False, (5, 5)),
    (1, 2, 1, 1, 0, True, (3, 4)),
])
def test_conv2d_gradients(c_in, c_out, kernel, stride, padding, bias, hw):
    rng = seeded(c_in, c_out, kernel, stride, padding, bias, hw)
    layer = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias,
                      rng=rng, dtype=np.float64)
    if bias:
        layer.params["bias"][...] = rng.normal(size=c_out)
    check_layer(layer, rng.normal(size=(2, c_in, *hw)), rng)


POOL_CASES = [(2, None, 0, (6, 6)), (2, 2, 0, (5, 7)), (3, 2, 1, (7, 6)), ((3, 2), (1, 2), (1, 1), (5, 6)),
              (2, 3, 0, (7, 8)), (4, 1, 2, (4, 5))]


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES, ids=str)
def test_maxpool_gradients(kernel, stride, padding, hw):
    rng = seeded("max", kernel, stride, padding, hw)
    check_layer(nn.MaxPool2d(kernel, stride, padding), distinct_values(rng, (2, 2, *hw)), rng)


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES, ids=str)
def test_avgpool_gradients(kernel, stride, padding, hw):
    rng = seeded("avg", kernel, stride, padding, hw)
    check_layer(nn.AvgPool2d(kernel, stride, padding), rng.normal(size=(2, 2, *hw)), rng)


@pytest.mark.parametrize("kernel, stride, padding, hw", [(2, None, 0, (6, 8)), (2, 2, 0, (5, 5)),
                                                         (3, 2, 1, (7, 7)), ((2, 3), (1, 2), (1, 1), (4, 7))],
                         ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_maxpool_ties_route_each_window_to_exactly_one_element(kernel, stride, padding, hw, layout):
    """With exact ties a finite difference is meaningless; what must hold is that each
    window sends its whole gradient to ONE element, the first maximum in row-major order.
    Every memory layout: the layer may take a different path for each."""
    rng = seeded(kernel, stride, padding, hw)
    layer = nn.MaxPool2d(kernel, stride, padding)
    (kh, kw) = (kernel, kernel) if np.ndim(kernel) == 0 else kernel
    (sh, sw) = (kh, kw) if stride is None else ((stride, stride) if np.ndim(stride) == 0 else stride)
    (ph, pw) = (padding, padding) if np.ndim(padding) == 0 else padding
    for x in (rng.integers(0, 2, size=(2, 2, *hw)).astype(np.float64),  # many ties
              np.full((2, 2, *hw), -0.42)):                                # all tied
        x = in_layout(x, layout)
        out = layer(x)
        for index in np.ndindex(out.shape):
            n, c, i, j = index
            dout = np.zeros(out.shape)
            dout[index] = 2.5
            dx = layer.backward(dout)
            assert np.count_nonzero(dx) == 1 and dx.sum() == 2.5, f"window {index}: {dx[n, c]}"
            # The first position, scanning the window row by row, that holds the maximum.
            window = [(i * sh - ph + a, j * sw - pw + d) for a in range(kh) for d in range(kw)]
            inside = [(r, s) for r, s in window if 0 <= r < hw[0] and 0 <= s < hw[1]]
            first = next((r, s) for r, s in inside if x[n, c, r, s] == out[index])
            assert dx[n, c, first[0], first[1]] == 2.5, f"window {index} routed elsewhere"
        # All windows at once: the gradient is conserved.
        dout = rng.normal(size=out.shape)
        np.testing.assert_allclose(layer.backward(dout).sum(), dout.sum(), rtol=1e-12)


@pytest.mark.parametrize("n, n_in, n_out, bias", [(1, 3, 2, True), (4, 6, 5, True), (3, 4, 3, False)])
def test_linear_gradients(n, n_in, n_out, bias):
    rng = seeded(n, n_in, n_out, bias)
    layer = nn.Linear(n_in, n_out, bias=bias, rng=rng, dtype=np.float64)
    if bias:
        layer.params["bias"][...] = rng.normal(size=n_out)
    check_layer(layer, rng.normal(size=(n, n_in)), rng)


@pytest.mark.parametrize("make", [nn.ReLU, nn.LeakyReLU, lambda: nn.LeakyReLU(0.3), nn.Tanh, nn.Sigmoid],
                         ids=["relu", "leaky_relu", "leaky_relu_0.3", "tanh", "sigmoid"])
def test_activation_gradients(make):
    rng = seeded(repr(make()))
    x = away_from_zero(rng.normal(scale=2.0, size=(2, 3, 4, 3)))
    check_layer(make(), x, rng)


def test_dropout_gradient_with_a_fixed_mask():
    """Rebuilding the layer from the same seed on every call fixes the mask, so the layer is
    a fixed linear map whose gradient finite differences can measure."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 3, 5))
    dout = rng.normal(size=x.shape)

    def dropout():
        return nn.Dropout(0.4, rng=np.random.default_rng(11)).train()

    layer = dropout()
    out = layer(x)
    dx = layer.backward(dout)
    kept = out != 0
    assert 0.3 < 1 - kept.mean() < 0.5  # some dropped, most kept: a real mask
    np.testing.assert_allclose(out[kept], x[kept] / 0.6, rtol=1e-15)  # inverted scaling
    numeric = numerical_gradient(lambda: float(np.sum(dropout()(x) * dout)), x)
    assert relative_error(dx, numeric) < TOLERANCE
    np.testing.assert_array_equal(dx == 0, ~kept)


@pytest.mark.parametrize("n, k, scale", [(1, 2, 1.0), (5, 10, 3.0), (3, 7, 4.0)])
def test_softmax_cross_entropy_gradient(n, k, scale):
    rng = seeded(n, k, scale)
    logits = rng.normal(scale=scale, size=(n, k))
    labels = rng.integers(0, k, size=n)
    loss_fn = nn.SoftmaxCrossEntropy()
    _, dlogits = loss_fn(logits, labels)
    numeric = adaptive_numerical_gradient(lambda: loss_fn(logits, labels)[0], logits)
    assert relative_error(dlogits, numeric) < TOLERANCE


# -- the whole network -----------------------------------------------------------------------
class FixedScale(nn.Module):
    """Multiply by a fixed array: a ReLU / LeakyReLU whose on/off pattern is frozen."""

    def __init__(self, scale: np.ndarray) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return x * self.scale


class FixedWinnerMaxPool(nn.Module):
    """A non-overlapping max pool (kernel = stride, no padding) that always picks the
    window elements that won for one recorded input (the first maximum, like np.argmax)."""

    def __init__(self, kernel: int, recorded: np.ndarray) -> None:
        super().__init__()
        self.kernel = kernel
        self.winners = np.argmax(self._windows(recorded), axis=-1)[..., None]

    def _windows(self, x):
        n, c, h, w = x.shape
        k = self.kernel
        return (x[:, :, :h // k * k, :w // k * k].reshape(n, c, h // k, k, w // k, k)
                .transpose(0, 1, 2, 4, 3, 5).reshape(n, c, h // k, w // k, k * k))

    def forward(self, x):
        return np.take_along_axis(self._windows(x), self.winners, axis=-1)[..., 0]


def with_frozen_kinks(model: nn.Sequential, x: np.ndarray) -> nn.Sequential:
    """The same network (sharing its parameter arrays) with every kink frozen at input ``x``.

    Around ``x`` and the current parameters the two networks are the same function (no
    ReLU and no max-pool winner changes within a small enough neighbourhood), so they have
    the same gradient; but the frozen one is smooth everywhere, so finite differences may
    use steps large enough to beat float64 rounding without stepping over a kink.
    """
    layers, h = {}, x
    for name, layer in model.children().items():
        if isinstance(layer, nn.ReLU):
            layers[name] = FixedScale(np.where(h > 0, 1.0, 0.0))
        elif isinstance(layer, nn.LeakyReLU):
            layers[name] = FixedScale(np.where(h > 0, 1.0, layer.negative_slope))
        elif isinstance(layer, nn.MaxPool2d):
            assert layer.stride == layer.kernel_size == (2, 2) and layer.padding == (0, 0)
            layers[name] = FixedWinnerMaxPool(2, h)
        else:
            layers[name] = layer  # conv, linear, flatten, smooth activations, avg pool
        h = layer(h)
    frozen = nn.Sequential(**layers)
    np.testing.assert_array_equal(frozen(x), model(x))  # the same function at this point
    return frozen


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_lenet5_gradients(activation, pool):
    """Every parameter tensor and the input, on a random sample of coordinates each."""
    rng = seeded(activation, pool)
    model = nn.lenet5(activation=activation, pool=pool, leaky_slope=0.1, init="he_normal",
                      rng=rng, dtype=np.float64)
    for name, value in model.named_parameters():
        if name.endswith("bias"):
            value[...] = rng.normal(scale=0.1, size=value.shape)
    # One image keeps the ~800 forward passes per case cheap (every matrix product stays
    # small enough for single-threaded BLAS, which matters on a busy machine); sums over the
    # batch are checked layer by layer above and, for the network, against the loops and
    # PyTorch with larger batches.
    x = rng.normal(size=(1, 1, 28, 28))
    y = np.array([7])
    loss_fn = nn.SoftmaxCrossEntropy()
    _, dlogits = loss_fn(model(x), y)
    dx = model.backward(dlogits).copy()
    grads = {name: g.copy() for name, g in model.named_gradients()}
    frozen = with_frozen_kinks(model, x)

    def f():
        return loss_fn(frozen(x), y)[0]

    sample = {"x": x, **dict(model.named_parameters())}
    analytic = {"x": dx, **grads}
    errors = {name: relative_error(analytic[name], adaptive_numerical_gradient(
        f, value, indices=sample_indices(value.shape, 6, rng))) for name, value in sample.items()}
    assert len(errors) == 11  # input + 5 weights + 5 biases
    assert max(errors.values()) < TOLERANCE, errors


def test_lenet5_gradient_without_freezing_at_a_small_step():
    """The plain network, plain central differences (eps = 1e-6): no freezing involved, at
    the precision rounding allows for coordinates whose gradient is not tiny."""
    rng = np.random.default_rng(8)
    model = nn.lenet5(activation="leaky_relu", pool="max", leaky_slope=0.1, rng=rng, dtype=np.float64)
    for name, value in model.named_parameters():
        if name.endswith("bias"):
            value[...] = rng.normal(scale=0.1, size=value.shape)
    x, y = rng.normal(size=(1, 1, 28, 28)), np.array([4])
    loss_fn = nn.SoftmaxCrossEntropy()
    model.backward(loss_fn(model(x), y)[1])
    for name, value in model.named_parameters():
        gradient = dict(model.named_gradients())[name]
        # The largest gradients of each tensor: resolvable to 1e-6 with eps = 1e-6.
        largest = np.argsort(np.abs(gradient).ravel())[-4:]
        indices = [np.unravel_index(k, value.shape) for k in largest]
        numeric = numerical_gradient(lambda: loss_fn(model(x), y)[0], value, 1e-6, indices)
        assert relative_error(gradient, numeric) < 1e-6, name


# -- the loop references themselves ----------------------------------------------------------
def check_reference(forward, backward, arrays: dict, rng):
    """``forward(**arrays) -> out``; ``backward(dout) -> {name: gradient}`` for some arrays."""
    dout = rng.normal(size=forward(**arrays).shape)
    analytic = backward(dout)

    def f():
        return float(np.sum(forward(**arrays) * dout))

    for name, gradient in analytic.items():
        error = relative_error(gradient, numerical_gradient(f, arrays[name], LAYER_STEP, order=LAYER_ORDER))
        assert error < TOLERANCE, (name, error)


@pytest.mark.parametrize("stride, padding", [(1, 0), ((2, 1), (1, 2))])
def test_reference_conv2d_gradients(stride, padding):
    rng = seeded("ref conv", stride, padding)
    arrays = dict(x=rng.normal(size=(2, 2, 5, 4)), w=rng.normal(size=(2, 2, 3, 2)), b=rng.normal(size=2))

    def backward(dout):
        dx, dw, db = ref.conv2d_backward(arrays["x"], arrays["w"], dout, stride, padding)
        return {"x": dx, "w": dw, "b": db}

    check_reference(lambda x, w, b: ref.conv2d_forward(x, w, b, stride, padding), backward, arrays, rng)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_reference_pool_gradients(kind):
    rng = seeded("ref pool", kind)
    forward, backward = {"max": (ref.maxpool_forward, ref.maxpool_backward),
                         "avg": (ref.avgpool_forward, ref.avgpool_backward)}[kind]
    x = distinct_values(rng, (2, 2, 5, 6))
    check_reference(lambda x: forward(x, 3, 2, 1), lambda dout: {"x": backward(x, dout, 3, 2, 1)},
                    {"x": x}, rng)


def test_reference_linear_gradients():
    rng = seeded("ref linear")
    arrays = dict(x=rng.normal(size=(3, 4)), w=rng.normal(size=(5, 4)), b=rng.normal(size=5))

    def backward(dout):
        dx, dw, db = ref.linear_backward(arrays["x"], arrays["w"], dout)
        return {"x": dx, "w": dw, "b": db}

    check_reference(ref.linear_forward, backward, arrays, rng)


@pytest.mark.parametrize("name", list(ref.ACTIVATIONS))
def test_reference_activation_gradients(name):
    rng = seeded("ref", name)
    forward, backward = ref.ACTIVATIONS[name]
    x = away_from_zero(rng.normal(scale=2.0, size=(3, 4)))
    check_reference(forward, lambda dout: {"x": backward(x, dout)}, {"x": x}, rng)


def test_reference_softmax_cross_entropy_gradient():
    rng = seeded("ref loss")
    logits, labels = rng.normal(scale=3.0, size=(4, 6)), np.array([0, 5, 2, 2])
    _, dlogits = ref.softmax_cross_entropy(logits, labels)
    numeric = adaptive_numerical_gradient(lambda: ref.softmax_cross_entropy(logits, labels)[0], logits)
    assert relative_error(dlogits, numeric) < TOLERANCE
