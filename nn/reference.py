"""Read this first: every layer as explicit loops, in this project's conventions.

Every function here spells its layer out with Python loops over the batch, the channels, the
output pixels and the kernel window, down to single numbers, so that it reads like the
formulas. Each names its *fast twin*, the vectorised layer the network really runs (same
arguments, same shapes); read the two side by side. The tests prove every fast layer equal
to its twin here, and both equal to finite differences; ``docs/walkthrough.py`` shows the same,
step by step, in the order of the report this project grew from. Nothing in the training path
imports this module.

These loops are not the report's code. The report ("基于numpy的卷积神经网络手写数字识别",
section 4) loops over output pixels (and, in convolution, output channels) and lets NumPy do
the batch and the window; the loops here go down to single numbers, in PyTorch's
conventions, so that the fast layers and PyTorch can be checked against them element by
element.

How slow they are: ``benchmarks/bench_lenet.py`` times ``naive_lenet_step`` (LeNet-5 with
ReLU and max pooling, forward and backward) on a few images and scales it to 60,000 images:
these pure-Python loops would take over 2 hours an epoch (7,600-8,500 s on a 2-core AMD EPYC
Zen 4; ``benchmarks/README.md``), about 2,000 times the fast layers. That is not the report's
speed: its partly vectorised code took 5-13 minutes an epoch on its author's laptop CPU (13
at batch 32, 9 at 64, 6 at 128, 5 at 256; its section 5.2).

Notes
-----
The conventions every function here follows:

* Layout NCHW; weights have PyTorch's shapes (conv ``(C_out, C_in, kH, kW)``, linear
  ``(out, in)``).
* Convolution is cross-correlation (no kernel flip), like PyTorch and the report.
* Output size ``H_out = floor((H + 2*pH - kH) / sH) + 1`` (same for W). The report prints it
  without the floor (section 3.8); its code floors, as here.
* Padding is never materialised: a window position outside the input *is* the padding
  (zero for convolution and average pooling, -inf, i.e. skipped, for max pooling). The
  report pads with ``np.pad`` and crops the gradient afterwards: for convolution and average
  pooling the same numbers.
* Arithmetic uses Python floats (IEEE double): arrays are turned into nested lists first,
  which is also several times faster than indexing NumPy scalars. Results are float64.

Where the loops depart from the report's code, and why:

* **Linear weights are stored (out, in)** and ``y = x w^T + b``; the report stores ``W`` as
  (in, out) and writes ``y = xW + b`` (section 3.5). PyTorch's layout, so that state dicts
  and the parity tests compare name by name. The report's ``W`` is our ``w^T``, and its
  ``dJ/dW = x^T dJ/dy`` our ``dw^T``.
* **Max pooling sends a window's gradient to its first maximum only** (row-major order, as in
  PyTorch); the report's code sends all of it to every element equal to the maximum. On ties
  (a window of ReLU zeros, MNIST's flat background) its rule sends k times the gradient that
  came in, which is not the gradient of any loss; without ties the two agree.
  ``maxpool_backward_all_maxima`` keeps the report's rule to show this
  (``tests/test_layers_reference.py``).
* **Max pooling pads with -inf**, the report with 0: a zero pad becomes the maximum of a
  window whose values are all negative (tanh, leaky ReLU), an output no input had. With no
  padding, as in LeNet-5, the two agree.
* **Layers only compute.** Backward returns the gradients and changes nothing; the report's
  ``backward(dy, lr)`` also updates the weights. Optimizers are separate (``nn/optim.py``), so
  a gradient can be checked before any weight moves.
* **The loss is the batch mean**, its gradient ``(p - a) / N``. The report prints the mean,
  but its derivation back-propagates ``p - a`` per image and adds the images up (sections
  3.5 and 3.10; the line of its code that computes it is not printed), so its learning
  rate applies to summed gradients (``nn.SoftmaxCrossEntropy(reduction="sum")``,
  ``train.loss_reduction=sum``).
* **Softmax subtracts the maximum logit** before ``exp``, as the report's section 3.10 advises;
  its code (4.5) exponentiates the logits directly, which overflows float32 once a logit
  passes about 88.

Slips in the report that a reader checking it against this code will meet:

* **dW with stride S > 1.** Its sum ``dJ/dW[p,q] = sum_ij dJ/dy[i,j] x[p+(i-1)S, q+(j-1)S]``
  (1-based) is right, but its words for it, dJ/dy slid over x with stride S, read literally
  give ``sum_ij dJ/dy[i,j] x[(p-1)S+i, (q-1)S+j]``, which is wrong for S > 1. Right is a
  stride-1 correlation of x with dJ/dy *dilated* by S (S-1 zeros between neighbours):
  ``conv2d_backward`` gives the 0-based form. Its summary ``dJ/dW = y (*) x`` also writes the
  output y where dJ/dy is meant.
* **Its printed dx formula**, ``dJ/dx[p,q] = sum over A of W[m,n]``, drops the factor
  ``dJ/dy[i,j]`` of each window; its code multiplies by dy, as does ``conv2d_backward``.
* **Its all-maxima pooling rule on ties**, above.
"""

from __future__ import annotations

import math

import numpy as np


# -- helpers ---------------------------------------------------------------------------------
def _pair(value) -> tuple[int, int]:
    """``2 -> (2, 2)``; ``(2, 3) -> (2, 3)``."""
    if np.ndim(value) == 0:
        return int(value), int(value)
    first, second = value
    return int(first), int(second)


def output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """``floor((size + 2*padding - kernel) / stride) + 1``."""
    return (size + 2 * padding - kernel) // stride + 1


def _zeros(shape) -> list:
    """Nested lists of 0.0 with the given shape (an accumulator for gradients)."""
    return np.zeros(shape).tolist()


def _lists(array) -> list:
    return np.asarray(array, dtype=np.float64).tolist()


def _array(nested) -> np.ndarray:
    return np.array(nested, dtype=np.float64)


# -- convolution -----------------------------------------------------------------------------
def conv2d_forward(x, w, b=None, stride=(1, 1), padding=(0, 0)) -> np.ndarray:
    """2-D cross-correlation with zero padding.

    Fast twin: ``nn.conv.Conv2d.forward``.

    ``out[n, o, i, j] = b[o] + sum_{c, a, d} w[o, c, a, d] * x[n, c, i*sH - pH + a, j*sW - pW + d]``
    where ``x`` is zero outside its bounds.

    Parameters
    ----------
    x : (N, C_in, H, W)
    w : (C_out, C_in, kH, kW)
    b : (C_out,) or None
    stride, padding : int or (h, w)

    Returns
    -------
    out : (N, C_out, H_out, W_out)
    """
    n_batch, c_in, height, width = np.shape(x)
    c_out, c_in_w, kh, kw = np.shape(w)
    assert c_in == c_in_w, f"x has {c_in} channels, w expects {c_in_w}"
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    xs, ws = _lists(x), _lists(w)
    bs = [0.0] * c_out if b is None else _lists(b)
    out = _zeros((n_batch, c_out, ho, wo))
    for n in range(n_batch):
        for o in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    total = bs[o]
                    for c in range(c_in):
                        for a in range(kh):
                            row = i * sh - ph + a
                            if not 0 <= row < height:
                                continue  # zero padding contributes nothing
                            for d in range(kw):
                                col = j * sw - pw + d
                                if 0 <= col < width:
                                    total += ws[o][c][a][d] * xs[n][c][row][col]
                    out[n][o][i][j] = total
    return _array(out)


def conv2d_backward(x, w, dout, stride=(1, 1), padding=(0, 0)):
    """Gradients of ``conv2d_forward`` given ``dout = dL/dout``.

    Fast twin: ``nn.conv.Conv2d.backward``.

    Every output pixel sends ``dout * w`` back to each input pixel of its window, and
    ``dout * x`` to each weight; the bias receives ``dout`` itself. In 0-based indices, with
    ``xp`` the input zero-padded by ``(pH, pW)`` (``xp[n, c, r, s] = x[n, c, r - pH, s - pW]``)::

        dw[o, c, a, d] = sum_{n, i, j} dout[n, o, i, j] * xp[n, c, i*sH + a, j*sW + d]
        dx[n, c, r, s] = sum of dout[n, o, i, j] * w[o, c, a, d]
                         over o and the (i, j, a, d) with i*sH - pH + a = r, j*sW - pW + d = s
        db[o]          = sum_{n, i, j} dout[n, o, i, j]

    ``dw`` is the report's ``dJ/dW[p,q] = sum_ij dJ/dy[i,j] x[p+(i-1)S, q+(j-1)S]`` (section
    3.8, 1-based, x padded) with the batch and channels added. Read as a function of the
    kernel offset ``(a, d)``, it is a *stride-1* cross-correlation of ``xp`` with ``dout``
    dilated by the stride (``dout[i, j]`` placed at ``(i*sH, j*sW)``, zeros between): the
    kernel ``dout`` is spread out, not moved S pixels at a time. The report's words, dJ/dy
    slid over x with stride S, fit only S = 1. ``dx`` keeps the factor ``dout`` that the
    report's printed formula drops (its code has it).

    Parameters
    ----------
    x : (N, C_in, H, W)
    w : (C_out, C_in, kH, kW)
    dout : (N, C_out, H_out, W_out)
    stride, padding : int or (h, w)

    Returns
    -------
    dx : (N, C_in, H, W)
    dw : (C_out, C_in, kH, kW)
    db : (C_out,)
    """
    n_batch, c_in, height, width = np.shape(x)
    c_out, _, kh, kw = np.shape(w)
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    ho, wo = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    assert np.shape(dout) == (n_batch, c_out, ho, wo), f"dout {np.shape(dout)} != {(n_batch, c_out, ho, wo)}"
    xs, ws, gs = _lists(x), _lists(w), _lists(dout)
    dx, dw, db = _zeros(np.shape(x)), _zeros(np.shape(w)), [0.0] * c_out
    for n in range(n_batch):
        for o in range(c_out):
            for i in range(ho):
                for j in range(wo):
                    g = gs[n][o][i][j]
                    db[o] += g
                    for c in range(c_in):
                        for a in range(kh):
                            row = i * sh - ph + a
                            if not 0 <= row < height:
                                continue
                            for d in range(kw):
                                col = j * sw - pw + d
                                if 0 <= col < width:
                                    dw[o][c][a][d] += g * xs[n][c][row][col]
                                    dx[n][c][row][col] += g * ws[o][c][a][d]
    return _array(dx), _array(dw), _array(db)


# -- pooling ---------------------------------------------------------------------------------
# Max and average pooling are one loop: slide a kH x kW window over every plane, read the
# values under it, and reduce them to one number. They differ only in that reduction
# (forward) and in how a window's gradient is shared among its values (backward), so the
# loop is written once, in _pool_forward and _pool_backward, and each pooling passes its rule.
def _pool_geometry(x, kernel, stride, padding):
    (kh, kw) = _pair(kernel)
    (sh, sw) = (kh, kw) if stride is None else _pair(stride)
    (ph, pw) = _pair(padding)
    assert 2 * ph <= kh and 2 * pw <= kw, "padding must be at most half the kernel (as in PyTorch)"
    n_batch, channels, height, width = np.shape(x)
    ho, wo = output_size(height, kh, sh, ph), output_size(width, kw, sw, pw)
    return n_batch, channels, height, width, kh, kw, sh, sw, ph, pw, ho, wo


def _window(plane, i, j, height, width, kh, kw, sh, sw, ph, pw, pad):
    """The kH*kW values of output pixel ``(i, j)``'s window, row by row, and where each is.

    A position outside the plane is padding: its value is ``pad`` and its position ``None``.
    """
    values, positions = [], []
    for a in range(kh):
        row = i * sh - ph + a  # window row a of output row i, in the unpadded input
        for d in range(kw):
            col = j * sw - pw + d
            if 0 <= row < height and 0 <= col < width:
                values.append(plane[row][col])
                positions.append((row, col))
            else:
                values.append(pad)
                positions.append(None)
    return values, positions


def _pool_forward(x, kernel, stride, padding, pad, reduce) -> np.ndarray:
    """Pool every window of ``x`` to the one number ``reduce(values)``.

    Parameters
    ----------
    x, kernel, stride, padding
        As for ``maxpool_forward``.
    pad : float
        What a window reads in the padding.
    reduce : callable
        ``reduce(values) -> float``, ``values`` being the window's kH*kW values, row by row.

    Returns
    -------
    out : (N, C, H_out, W_out)
    """
    n_batch, channels, height, width, kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel, stride, padding)
    xs = _lists(x)  # (N, C, H, W) as nested lists
    out = _zeros((n_batch, channels, ho, wo))
    # One output per sample n, channel c and window position (i, j): its window's reduction.
    for n in range(n_batch):
        for c in range(channels):
            for i in range(ho):
                for j in range(wo):
                    values, _ = _window(xs[n][c], i, j, height, width, kh, kw, sh, sw, ph, pw, pad)
                    out[n][c][i][j] = reduce(values)
    return _array(out)


def _pool_backward(x, dout, kernel, stride, padding, pad, share) -> np.ndarray:
    """Send each window's ``dout`` back to the inputs it was pooled from, as ``share`` says.

    Overlapping windows add up; the share of padded positions is dropped.

    Parameters
    ----------
    x, dout
        As for ``maxpool_backward``.
    kernel, stride, padding, pad
        As for ``_pool_forward``.
    share : callable
        ``share(values, g) -> gradients``: the gradient of each of the window's values
        (row by row) when its output's gradient is ``g``.

    Returns
    -------
    dx : (N, C, H, W)
    """
    n_batch, channels, height, width, kh, kw, sh, sw, ph, pw, ho, wo = _pool_geometry(x, kernel, stride, padding)
    assert np.shape(dout) == (n_batch, channels, ho, wo)
    xs, gs = _lists(x), _lists(dout)  # (N, C, H, W) and (N, C, H_out, W_out)
    dx = _zeros(np.shape(x))
    # Each output's gradient goes back to the window it was pooled from, shared by the rule.
    for n in range(n_batch):
        for c in range(channels):
            for i in range(ho):
                for j in range(wo):
                    values, positions = _window(xs[n][c], i, j, height, width, kh, kw, sh, sw, ph, pw, pad)
                    for position, grad in zip(positions, share(values, gs[n][c][i][j])):
                        if position is not None:  # padding: nothing to send the gradient to
                            row, col = position
                            dx[n][c][row][col] += grad
    return _array(dx)


def _mean(values) -> float:
    """Average pooling's reduction: padded zeros count, so every window divides by kH*kW."""
    return sum(values) / len(values)


def _first_max_gets_all(values, g) -> list:
    """Max pooling's gradient: all of ``g`` to the window's FIRST maximum, nothing to the others.

    First in row-major window order, as in PyTorch.
    """
    winner = values.index(max(values))  # index() finds the first of equal values
    return [g if k == winner else 0.0 for k in range(len(values))]


def _equal_shares(values, g) -> list:
    """Average pooling's gradient: each value of the window contributed 1/(kH*kW) of the mean."""
    return [g / len(values)] * len(values)


def maxpool_forward(x, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """Maximum over each window; padding is -inf.

    Fast twin: ``nn.pool.MaxPool2d.forward``.

    Parameters
    ----------
    x : (N, C, H, W)
    kernel : int or (kH, kW)
    stride : int or (sH, sW) or None
        None means the kernel size.
    padding : int or (pH, pW)
        At most half the kernel.

    Returns
    -------
    out : (N, C, H_out, W_out)
    """
    # Padding reads -inf, never a window's maximum: padding is at most half the kernel, so
    # every window holds at least one input value.
    return _pool_forward(x, kernel, stride, padding, pad=-math.inf, reduce=max)


def maxpool_backward(x, dout, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """Gradient of ``maxpool_forward``: each window's ``dout`` goes to exactly ONE input.

    Fast twin: ``nn.pool.MaxPool2d.backward``.

    That input is the first maximum in row-major window order; overlapping windows add up.
    The report gives it to every tied maximum instead (``maxpool_backward_all_maxima``), which
    is not a gradient when values tie.

    Parameters
    ----------
    x : (N, C, H, W)
        The forward input.
    dout : (N, C, H_out, W_out)
    kernel, stride, padding
        As for ``maxpool_forward``.

    Returns
    -------
    dx : (N, C, H, W)
    """
    return _pool_backward(x, dout, kernel, stride, padding, pad=-math.inf, share=_first_max_gets_all)


def _every_max_gets_all(values, g) -> list:
    """The report's rule: all of ``g`` to EVERY value equal to the window's maximum."""
    highest = max(values)
    return [g if value == highest else 0.0 for value in values]


def maxpool_backward_all_maxima(x, dout, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """The report's max-pooling gradient, kept to show why the layers do not use it.

    No fast twin: ``maxpool_backward`` is the gradient the layers compute.

    Each window's ``dout`` goes, whole, to every input equal to the window's maximum (the
    report's code compares the window with its maximum and routes ``dout`` through that mask),
    and windows pad with 0 as the report's ``np.pad`` does. Without ties and without padding
    it equals ``maxpool_backward``. With k tied maxima a window sends back k times its
    ``dout``: the gradients no longer add up to what came in, so this is not the gradient of
    any loss (``tests/test_layers_reference.py``, ``docs/walkthrough.py``).

    Parameters
    ----------
    x, dout, kernel, stride, padding
        As for ``maxpool_backward``.

    Returns
    -------
    dx : (N, C, H, W)
    """
    return _pool_backward(x, dout, kernel, stride, padding, pad=0.0, share=_every_max_gets_all)


def avgpool_forward(x, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """Mean over each window, padded zeros included (PyTorch's ``count_include_pad=True``).

    Fast twin: ``nn.pool.AvgPool2d.forward``.

    Every window divides by ``kH * kW``.

    Parameters
    ----------
    x, kernel, stride, padding
        As for ``maxpool_forward``.

    Returns
    -------
    out : (N, C, H_out, W_out)
    """
    return _pool_forward(x, kernel, stride, padding, pad=0.0, reduce=_mean)


def avgpool_backward(x, dout, kernel, stride=None, padding=(0, 0)) -> np.ndarray:
    """Gradient of ``avgpool_forward``: each input of a window receives ``dout / (kH*kW)``.

    Fast twin: ``nn.pool.AvgPool2d.backward``.

    The share of padded positions is dropped.

    Parameters
    ----------
    x, dout, kernel, stride, padding
        As for ``maxpool_backward``; only the shape of ``x`` is used.

    Returns
    -------
    dx : (N, C, H, W)
    """
    return _pool_backward(x, dout, kernel, stride, padding, pad=0.0, share=_equal_shares)


# -- fully connected -------------------------------------------------------------------------
def linear_forward(x, w, b=None) -> np.ndarray:
    """``out[n, o] = b[o] + sum_i w[o, i] * x[n, i]``.

    Fast twin: ``nn.linear.Linear.forward``.

    Parameters
    ----------
    x : (N, in)
    w : (out, in)
    b : (out,) or None

    Returns
    -------
    out : (N, out)
    """
    n_batch, n_in = np.shape(x)
    n_out, n_in_w = np.shape(w)
    assert n_in == n_in_w, f"x has {n_in} features, w expects {n_in_w}"
    xs, ws = _lists(x), _lists(w)
    bs = [0.0] * n_out if b is None else _lists(b)
    out = _zeros((n_batch, n_out))
    for n in range(n_batch):
        for o in range(n_out):
            total = bs[o]
            for i in range(n_in):
                total += ws[o][i] * xs[n][i]
            out[n][o] = total
    return _array(out)


def linear_backward(x, w, dout):
    """Gradients of ``linear_forward``.

    Fast twin: ``nn.linear.Linear.backward``.

    Parameters
    ----------
    x : (N, in)
    w : (out, in)
    dout : (N, out)

    Returns
    -------
    dx : (N, in)
    dw : (out, in)
    db : (out,)
    """
    n_batch, n_in = np.shape(x)
    n_out = np.shape(w)[0]
    assert np.shape(dout) == (n_batch, n_out)
    xs, ws, gs = _lists(x), _lists(w), _lists(dout)
    dx, dw, db = _zeros((n_batch, n_in)), _zeros((n_out, n_in)), [0.0] * n_out
    for n in range(n_batch):
        for o in range(n_out):
            g = gs[n][o]
            db[o] += g
            for i in range(n_in):
                dw[o][i] += g * xs[n][i]
                dx[n][i] += g * ws[o][i]
    return _array(dx), _array(dw), _array(db)


# -- element-wise activations (any shape) ----------------------------------------------------
def _elementwise(function, *arrays) -> np.ndarray:
    """Apply a scalar ``function`` to each element (one Python call per element)."""
    shape = np.shape(arrays[0])
    flats = [np.asarray(a, dtype=np.float64).ravel().tolist() for a in arrays]
    values = [function(*elements) for elements in zip(*flats)]
    return np.array(values, dtype=np.float64).reshape(shape)


def relu_forward(x) -> np.ndarray:
    """``max(x, 0)``.

    Fast twin: ``nn.activations.ReLU.forward``.
    """
    return _elementwise(lambda v: v if v > 0 else 0.0, x)


def relu_backward(x, dout) -> np.ndarray:
    """``dout`` where ``x > 0``, else 0 (the derivative at exactly 0 is taken as 0).

    Fast twin: ``nn.activations.ReLU.backward``.
    """
    return _elementwise(lambda v, g: g if v > 0 else 0.0, x, dout)


def leaky_relu_forward(x, negative_slope=0.01) -> np.ndarray:
    """``x`` if ``x > 0`` else ``negative_slope * x``.

    Fast twin: ``nn.activations.LeakyReLU.forward``.
    """
    return _elementwise(lambda v: v if v > 0 else negative_slope * v, x)


def leaky_relu_backward(x, dout, negative_slope=0.01) -> np.ndarray:
    """``dout`` where ``x > 0`` else ``negative_slope * dout``.

    Fast twin: ``nn.activations.LeakyReLU.backward``.
    """
    return _elementwise(lambda v, g: g if v > 0 else negative_slope * g, x, dout)


def tanh_forward(x) -> np.ndarray:
    """``tanh(x)``.

    Fast twin: ``nn.activations.Tanh.forward``.
    """
    return _elementwise(math.tanh, x)


def tanh_backward(x, dout) -> np.ndarray:
    """``dout * (1 - tanh(x)**2)``.

    Fast twin: ``nn.activations.Tanh.backward``.
    """
    return _elementwise(lambda v, g: g * (1.0 - math.tanh(v) ** 2), x, dout)


def _sigmoid(v: float) -> float:
    # Two branches so that exp never overflows.
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def sigmoid_forward(x) -> np.ndarray:
    """``1 / (1 + exp(-x))``.

    Fast twin: ``nn.activations.Sigmoid.forward``.
    """
    return _elementwise(_sigmoid, x)


def sigmoid_backward(x, dout) -> np.ndarray:
    """``dout * s * (1 - s)`` with ``s = sigmoid(x)``.

    Fast twin: ``nn.activations.Sigmoid.backward``.
    """
    return _elementwise(lambda v, g: g * _sigmoid(v) * (1.0 - _sigmoid(v)), x, dout)


ACTIVATIONS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
}


# -- loss ------------------------------------------------------------------------------------
def softmax_cross_entropy(logits, labels):
    """Mean over the batch of ``-log softmax(logits[n])[labels[n]]``, and its gradient.

    Fast twin: ``nn.loss.SoftmaxCrossEntropy``.

    ``loss_n = log(sum_k exp(z_nk)) - z_n,label`` computed as ``m + log(sum_k exp(z_nk - m))``
    with ``m = max_k z_nk`` (never overflows); ``dlogits[n, k] = (p_nk - [k == label]) / N``.

    Parameters
    ----------
    logits : (N, K)
    labels : (N,) integers in [0, K)

    Returns
    -------
    loss : float
    dlogits : (N, K)
    """
    zs = _lists(logits)
    labels = [int(label) for label in np.asarray(labels).ravel()]
    n_batch, n_classes = len(zs), len(zs[0])
    loss = 0.0
    dlogits = _zeros((n_batch, n_classes))
    for n in range(n_batch):
        m = max(zs[n])
        total = 0.0
        for k in range(n_classes):
            total += math.exp(zs[n][k] - m)
        log_sum_exp = m + math.log(total)
        loss += log_sum_exp - zs[n][labels[n]]
        for k in range(n_classes):
            probability = math.exp(zs[n][k] - log_sum_exp)
            dlogits[n][k] = (probability - (1.0 if k == labels[n] else 0.0)) / n_batch
    return loss / n_batch, _array(dlogits)


# -- LeNet-5 ---------------------------------------------------------------------------------
def naive_lenet_step(params: dict, x, y, *, activation: str = "relu", pool: str = "max",
                     leaky_slope: float = 0.01):
    """Forward and backward of LeNet-5 with the loop layers above.

    Fast twin: ``nn.lenet.lenet5 + nn.Module.forward_backward``.

    ::

        conv1 (k5, pad 2) -> act -> pool 2x2 -> conv2 (k5) -> act -> pool 2x2 -> flatten
        -> fc1 -> act -> fc2 -> act -> fc3 -> softmax cross-entropy (batch mean)

    Parameters
    ----------
    params : dict
        PyTorch's names and shapes: ``conv1.weight (c1, 1, 5, 5)``, ``conv1.bias (c1,)``,
        ``conv2.weight (c2, c1, 5, 5)``, ``conv2.bias``, ``fc1.weight (h1, c2*25)``,
        ``fc1.bias``, ``fc2.weight (h2, h1)``, ``fc2.bias``, ``fc3.weight (K, h2)``,
        ``fc3.bias`` (e.g. ``model.state_dict()`` of ``nn.lenet5``).
    x : (N, 1, 28, 28)
        Images.
    y : (N,)
        Integer labels.
    activation : {"relu", "leaky_relu", "tanh", "sigmoid"}, default "relu"
    pool : {"max", "avg"}, default "max"
    leaky_slope : float, default 0.01
        Negative slope of "leaky_relu".

    Returns
    -------
    loss : float
    grads : dict
        The same keys and shapes as ``params`` (float64).
    """
    p = params
    if activation == "leaky_relu":
        def act_forward(z):
            return leaky_relu_forward(z, leaky_slope)

        def act_backward(z, g):
            return leaky_relu_backward(z, g, leaky_slope)
    else:
        act_forward, act_backward = ACTIVATIONS[activation]
    pool_forward, pool_backward = {"max": (maxpool_forward, maxpool_backward),
                                   "avg": (avgpool_forward, avgpool_backward)}[pool]

    # Forward, keeping every layer's input for the backward pass.
    z1 = conv2d_forward(x, p["conv1.weight"], p["conv1.bias"], stride=1, padding=2)
    a1 = act_forward(z1)
    p1 = pool_forward(a1, 2, 2, 0)
    z2 = conv2d_forward(p1, p["conv2.weight"], p["conv2.bias"], stride=1, padding=0)
    a2 = act_forward(z2)
    p2 = pool_forward(a2, 2, 2, 0)
    flat = p2.reshape(p2.shape[0], -1)  # C order, like torch.flatten
    z3 = linear_forward(flat, p["fc1.weight"], p["fc1.bias"])
    a3 = act_forward(z3)
    z4 = linear_forward(a3, p["fc2.weight"], p["fc2.bias"])
    a4 = act_forward(z4)
    logits = linear_forward(a4, p["fc3.weight"], p["fc3.bias"])
    loss, dlogits = softmax_cross_entropy(logits, y)

    # Backward, layer by layer in reverse.
    grads = {}
    da4, grads["fc3.weight"], grads["fc3.bias"] = linear_backward(a4, p["fc3.weight"], dlogits)
    da3, grads["fc2.weight"], grads["fc2.bias"] = linear_backward(a3, p["fc2.weight"], act_backward(z4, da4))
    dflat, grads["fc1.weight"], grads["fc1.bias"] = linear_backward(flat, p["fc1.weight"], act_backward(z3, da3))
    dp2 = dflat.reshape(p2.shape)
    dz2 = act_backward(z2, pool_backward(a2, dp2, 2, 2, 0))
    dp1, grads["conv2.weight"], grads["conv2.bias"] = conv2d_backward(p1, p["conv2.weight"], dz2, 1, 0)
    dz1 = act_backward(z1, pool_backward(a1, dp1, 2, 2, 0))
    _, grads["conv1.weight"], grads["conv1.bias"] = conv2d_backward(x, p["conv1.weight"], dz1, 1, 2)
    return loss, grads
