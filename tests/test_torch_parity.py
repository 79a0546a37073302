"""Forward and backward of every layer, of the loss and of the whole LeNet-5 match PyTorch
(float32, CPU), on random shapes with strides, padding, overlapping pools and exact ties.

PyTorch is never a dependency of the project: without it this whole file is skipped (and
pytest's summary says so). Weights go from one framework to the other by name through
``state_dict``, which also proves that names and shapes are PyTorch's.
"""

import zlib
from collections import OrderedDict

import numpy as np
import pytest

import nn
from nn import reference as ref
from tests.layouts import LAYOUTS, in_layout
from tests.synthetic import mnist_like

torch = pytest.importorskip("torch")
F = torch.nn.functional


def seeded(*case) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(case).encode()))


def leaf(array: np.ndarray) -> "torch.Tensor":
    """A torch copy of ``array`` that collects gradients."""
    return torch.tensor(np.ascontiguousarray(array), requires_grad=True)


def assert_close(actual, expected, what="", rtol=1e-4, atol_fraction=1e-5):
    """float32 agreement: relative 1e-4, plus an absolute 1e-5 of the tensor's largest value
    (so that near-zero elements of a sum are judged on the sum's scale)."""
    if isinstance(expected, torch.Tensor):
        expected = expected.detach().numpy()
    assert np.shape(actual) == expected.shape, f"{what}: shape {np.shape(actual)} != {expected.shape}"
    scale = float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol_fraction * scale + 1e-30, err_msg=what)


def torch_backward(out: "torch.Tensor", dout: np.ndarray) -> None:
    out.backward(torch.tensor(np.ascontiguousarray(dout)))


# -- layers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("n, c_in, h, w, c_out, kernel, stride, padding, bias", [
    (1, 1, 28, 28, 6, 5, 1, 2, True),              # LeNet's conv1
    (4, 6, 14, 14, 16, 5, 1, 0, True),             # LeNet's conv2
    (2, 3, 9, 11, 4, 3, 2, 1, True),
    (3, 2, 10, 7, 5, (3, 2), (2, 1), (1, 3), True),  # non-square everything
    (2, 4, 8, 8, 3, 1, 1, 0, False),
    (1, 2, 12, 9, 2, 4, 3, 2, True),
])
def test_conv2d_matches_torch(n, c_in, h, w, c_out, kernel, stride, padding, bias):
    rng = seeded(n, c_in, h, w, c_out, kernel, stride, padding, bias)
    layer = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=bias, rng=rng)
    if bias:
        layer.params["bias"][...] = rng.normal(size=c_out)
    x = rng.normal(size=(n, c_in, h, w)).astype(np.float32)
    xt, wt = leaf(x), leaf(layer.params["weight"])
    bt = leaf(layer.params["bias"]) if bias else None
    out_t = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    out = layer(x)
    assert out.dtype == np.float32
    assert_close(out, out_t, "forward")
    dout = rng.normal(size=out.shape).astype(np.float32)
    torch_backward(out_t, dout)
    assert_close(layer.backward(dout), xt.grad, "dx")
    assert_close(layer.grads["weight"], wt.grad, "dweight")
    if bias:
        assert_close(layer.grads["bias"], bt.grad, "dbias")


POOL_CASES = [
    (2, None, 0, (28, 28)),  # LeNet
    (2, 2, 0, (9, 11)),      # odd sizes
    (3, 2, 1, (10, 9)),      # overlapping, padded
    (3, 1, 1, (7, 8)),       # heavy overlap
    ((2, 4), (1, 3), (1, 2), (9, 13)),
    (2, 3, 0, (8, 10)),      # gaps
]


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES, ids=str)
def test_maxpool_matches_torch(kernel, stride, padding, hw):
    rng = seeded("max", kernel, stride, padding, hw)
    layer = nn.MaxPool2d(kernel, stride, padding)
    x = rng.normal(size=(3, 2, *hw)).astype(np.float32)
    xt = leaf(x)
    out_t = F.max_pool2d(xt, kernel, stride, padding)
    out = layer(x)
    np.testing.assert_array_equal(out, out_t.detach().numpy())  # a max is exact
    dout = rng.normal(size=out.shape).astype(np.float32)
    torch_backward(out_t, dout)
    assert_close(layer.backward(dout), xt.grad, "dx")


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES, ids=str)
def test_maxpool_ties_route_like_torch(kernel, stride, padding, hw, layout):
    """Normalised MNIST is mostly one background value: whole windows tie. PyTorch sends
    each window's gradient to one element, the first maximum; so must we, in every memory
    layout (the batch-last view a conv layer hands over may take another path)."""
    rng = seeded("ties", kernel, stride, padding, hw)
    layer = nn.MaxPool2d(kernel, stride, padding)
    background, ink = -0.4242, 2.8215
    x = np.where(rng.random((3, 2, *hw)) < 0.8, background, ink).astype(np.float32)
    x[0, 0] = background  # one plane with every window tied
    xt = leaf(x)
    out_t = F.max_pool2d(xt, kernel, stride, padding)
    x = in_layout(x, layout)
    np.testing.assert_array_equal(layer(x), out_t.detach().numpy())
    # Small integers: sums of them are exact, so routing must agree bit for bit.
    dout = rng.integers(1, 9, size=out_t.shape).astype(np.float32)
    torch_backward(out_t, dout)
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    assert dx.sum() == dout.sum()


@pytest.mark.parametrize("kernel, stride, padding, hw", POOL_CASES, ids=str)
def test_avgpool_matches_torch(kernel, stride, padding, hw):
    rng = seeded("avg", kernel, stride, padding, hw)
    layer = nn.AvgPool2d(kernel, stride, padding)
    x = rng.normal(loc=1.0, size=(3, 2, *hw)).astype(np.float32)  # off zero: padding counts
    xt = leaf(x)
    out_t = F.avg_pool2d(xt, kernel, stride, padding, count_include_pad=True)
    assert_close(layer(x), out_t, "forward")
    dout = rng.normal(size=out_t.shape).astype(np.float32)
    torch_backward(out_t, dout)
    assert_close(layer.backward(dout), xt.grad, "dx")


@pytest.mark.parametrize("n, n_in, n_out, bias", [(1, 400, 120, True), (7, 84, 10, True), (3, 5, 2, False)])
def test_linear_matches_torch(n, n_in, n_out, bias):
    rng = seeded(n, n_in, n_out, bias)
    layer = nn.Linear(n_in, n_out, bias=bias, rng=rng)
    if bias:
        layer.params["bias"][...] = rng.normal(size=n_out)
    x = rng.normal(size=(n, n_in)).astype(np.float32)
    xt, wt = leaf(x), leaf(layer.params["weight"])
    bt = leaf(layer.params["bias"]) if bias else None
    out_t = F.linear(xt, wt, bt)
    assert_close(layer(x), out_t, "forward")
    dout = rng.normal(size=out_t.shape).astype(np.float32)
    torch_backward(out_t, dout)
    assert_close(layer.backward(dout), xt.grad, "dx")
    assert_close(layer.grads["weight"], wt.grad, "dweight")
    if bias:
        assert_close(layer.grads["bias"], bt.grad, "dbias")


ACTIVATIONS = {
    "relu": (nn.ReLU, torch.nn.ReLU),
    "leaky_relu": (nn.LeakyReLU, torch.nn.LeakyReLU),  # both default to 0.01
    "leaky_relu_0.2": (lambda: nn.LeakyReLU(0.2), lambda: torch.nn.LeakyReLU(0.2)),
    "tanh": (nn.Tanh, torch.nn.Tanh),
    "sigmoid": (nn.Sigmoid, torch.nn.Sigmoid),
}


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_activation_matches_torch(name):
    ours, theirs = ACTIVATIONS[name]
    rng = seeded(name)
    x = rng.normal(scale=3.0, size=(2, 3, 5, 4)).astype(np.float32)
    x.flat[::7] = 0.0  # exact zeros: both take the derivative at 0 from the left branch
    x.flat[1], x.flat[2] = 60.0, -60.0  # saturation
    xt = leaf(x)
    out_t = theirs()(xt)
    layer = ours()
    assert_close(layer(x), out_t, "forward", rtol=1e-6)
    dout = rng.normal(size=x.shape).astype(np.float32)
    torch_backward(out_t, dout)
    assert_close(layer.backward(dout), xt.grad, "dx", rtol=1e-6)


def test_dropout_eval_mode_is_the_identity_like_torch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 6, 6)).astype(np.float32)
    dout = rng.normal(size=x.shape).astype(np.float32)
    layer = nn.Dropout(0.5, rng=rng).eval()
    xt = leaf(x)
    out_t = torch.nn.Dropout(0.5).eval()(xt)
    torch_backward(out_t, dout)
    np.testing.assert_array_equal(layer(x), out_t.detach().numpy())
    np.testing.assert_array_equal(layer.backward(dout), xt.grad.numpy())


def test_dropout_train_mode_scales_like_torch():
    """Masks come from different generators, so compare the rule: PyTorch's inverted
    dropout applied with OUR mask gives our output and our gradient; and the drop rate is p."""
    rng = np.random.default_rng(1)
    p = 0.3
    x = rng.normal(size=(64, 100)).astype(np.float32)
    dout = rng.normal(size=x.shape).astype(np.float32)
    layer = nn.Dropout(p, rng=rng).train()
    out = layer(x)
    dx = layer.backward(dout)
    kept = torch.tensor(out != 0)
    xt = leaf(x)
    out_t = xt * kept / (1 - p)  # what F.dropout computes once its mask is drawn
    torch_backward(out_t, dout)
    assert_close(out, out_t, "forward", rtol=1e-6)
    assert_close(dx, xt.grad, "dx", rtol=1e-6)
    dropped = 1 - kept.float().mean().item()
    assert abs(dropped - p) < 0.02  # 6400 draws: 4 standard deviations is 0.023
    torch_rate = 1 - (F.dropout(torch.ones(64, 100), p, training=True) != 0).float().mean().item()
    assert abs(torch_rate - dropped) < 0.04


@pytest.mark.parametrize("n, k, offset", [(1, 10, 0.0), (16, 10, 0.0), (5, 3, 500.0), (4, 7, -500.0)])
def test_softmax_cross_entropy_matches_torch(n, k, offset):
    rng = seeded(n, k, offset)
    logits = (rng.normal(scale=3.0, size=(n, k)) + offset).astype(np.float32)
    labels = rng.integers(0, k, size=n)
    logits_t = leaf(logits)
    loss_t = F.cross_entropy(logits_t, torch.tensor(labels), reduction="mean")
    loss_t.backward()
    loss, dlogits = nn.SoftmaxCrossEntropy()(logits, labels)
    assert np.isfinite(loss) and abs(loss - loss_t.item()) <= 1e-5 * max(1.0, abs(loss_t.item()))
    assert_close(dlogits, logits_t.grad, "dlogits")
    np.testing.assert_allclose(nn.softmax(logits), torch.softmax(torch.tensor(logits), 1).numpy(), rtol=1e-5, atol=1e-7)


# -- the whole network -----------------------------------------------------------------------
def torch_lenet5(activation: str, pool: str, leaky_slope: float, dropout: float = 0.0):
    """PyTorch's LeNet-5 with the same layer names as ``nn.lenet5``."""
    tnn = torch.nn

    def act():
        return {"relu": tnn.ReLU, "leaky_relu": lambda: tnn.LeakyReLU(leaky_slope),
                "tanh": tnn.Tanh, "sigmoid": tnn.Sigmoid}[activation]()

    pooling = {"max": tnn.MaxPool2d, "avg": tnn.AvgPool2d}[pool]
    layers = [("conv1", tnn.Conv2d(1, 6, 5, padding=2)), ("act1", act()), ("pool1", pooling(2, 2)),
              ("conv2", tnn.Conv2d(6, 16, 5)), ("act2", act()), ("pool2", pooling(2, 2)),
              ("flatten", tnn.Flatten()), ("fc1", tnn.Linear(400, 120)), ("act3", act())]
    layers += [("drop1", tnn.Dropout(dropout))] if dropout else []
    layers += [("fc2", tnn.Linear(120, 84)), ("act4", act())]
    layers += [("drop2", tnn.Dropout(dropout))] if dropout else []
    layers += [("fc3", tnn.Linear(84, 10))]
    return tnn.Sequential(OrderedDict(layers))


LENET_CASES = [("mnist_like", activation, pool) for activation in ("relu", "leaky_relu", "tanh", "sigmoid")
               for pool in ("max", "avg")] + [("gaussian", "relu", "max"), ("gaussian", "sigmoid", "avg")]


@pytest.mark.parametrize("images, activation, pool", LENET_CASES)
def test_lenet5_matches_torch(images, activation, pool):
    """Logits, loss, input gradient and every parameter gradient. On MNIST-like images the
    max pools see exact ties (flat background), so the tie rule matters for the gradients.
    Those cases run in float64: float32 BLAS kernels may round equal input columns
    differently by their position, which breaks conv2's ties differently in each library."""
    rng = seeded(images, activation, pool)
    dtype = np.float64 if images == "mnist_like" else np.float32
    model = nn.lenet5(activation=activation, pool=pool, leaky_slope=0.1, rng=rng, dtype=dtype)
    for name, value in model.named_parameters():
        if name.endswith("bias"):  # zero at init; make the copy of biases count
            value[...] = rng.normal(scale=0.1, size=value.shape)
    twin = torch_lenet5(activation, pool, leaky_slope=0.1).to(torch.float64 if dtype == np.float64 else torch.float32)
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == {k: tuple(v.shape) for k, v in twin.state_dict().items()}
    twin.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()}, strict=True)

    x = rng.normal(size=(8, 1, 28, 28)).astype(np.float32) if images == "gaussian" else mnist_like(rng, 8)
    x = x.astype(dtype)
    y = rng.integers(0, 10, size=8)
    xt = leaf(x)
    logits_t = twin(xt)
    loss_t = F.cross_entropy(logits_t, torch.tensor(y))
    loss_t.backward()

    logits = model(x)
    loss, dlogits = nn.SoftmaxCrossEntropy()(logits, y)
    dx = model.backward(dlogits)
    assert_close(logits, logits_t, "logits")
    assert abs(loss - loss_t.item()) <= 1e-5 * loss_t.item()
    assert_close(dx, xt.grad, "dx")
    torch_grads = {name: p.grad for name, p in twin.named_parameters()}
    ours = dict(model.named_gradients())
    assert ours.keys() == torch_grads.keys()
    for name in ours:
        assert_close(ours[name], torch_grads[name], name)


def test_lenet5_loads_torch_weights_and_dropout_eval_matches():
    """The other direction: PyTorch's own initial weights, loaded by name (strict), give the
    same logits; dropout layers in eval mode change nothing in either framework."""
    torch.manual_seed(0)
    twin = torch_lenet5("relu", "max", leaky_slope=0.01, dropout=0.4).eval()
    model = nn.lenet5(dropout=0.4, rng=np.random.default_rng(0)).eval()
    assert list(dict(model.named_parameters())) == list(dict(twin.named_parameters()))
    model.load_state_dict({name: value.numpy() for name, value in twin.state_dict().items()}, strict=True)
    x = mnist_like(np.random.default_rng(1), 4)
    with torch.no_grad():
        expected = twin(torch.tensor(x))
    assert_close(model(x), expected, "logits")


# -- the loop references agree with PyTorch too (float64) ------------------------------------
@pytest.mark.parametrize("stride, padding", [(1, 0), ((2, 1), (1, 3))])
def test_reference_conv2d_matches_torch(stride, padding):
    rng = seeded("ref conv", stride, padding)
    x, w, b = rng.normal(size=(2, 3, 7, 6)), rng.normal(size=(4, 3, 3, 2)), rng.normal(size=4)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    out_t = F.conv2d(xt, wt, bt, stride=stride, padding=padding)
    dout = rng.normal(size=out_t.shape)
    torch_backward(out_t, dout)
    np.testing.assert_allclose(ref.conv2d_forward(x, w, b, stride, padding), out_t.detach().numpy(), rtol=1e-12)
    for ours, theirs in zip(ref.conv2d_backward(x, w, dout, stride, padding), (xt.grad, wt.grad, bt.grad)):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_reference_pools_match_torch(kind):
    rng = seeded("ref pool", kind)
    x = np.where(rng.random((2, 2, 7, 8)) < 0.7, -0.5, rng.normal(size=(2, 2, 7, 8)))  # ties
    xt = leaf(x)
    if kind == "max":
        out_t = F.max_pool2d(xt, 3, 2, 1)
        forward, backward = ref.maxpool_forward, ref.maxpool_backward
    else:
        out_t = F.avg_pool2d(xt, 3, 2, 1, count_include_pad=True)
        forward, backward = ref.avgpool_forward, ref.avgpool_backward
    dout = rng.integers(1, 9, size=out_t.shape).astype(np.float64)
    torch_backward(out_t, dout)
    np.testing.assert_allclose(forward(x, 3, 2, 1), out_t.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(backward(x, dout, 3, 2, 1), xt.grad.numpy(), rtol=1e-14)
