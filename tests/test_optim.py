"""Optimizers: hand-computed updates, torch.optim agreement, exact resume, weight decay, errors."""

import io

import numpy as np
import pytest

from nn.optim import OPTIMIZERS, SGD, Adam, AdamW, make_optimizer


def toy_params(dtype=np.float64):
    """A weight (ndim 2, decayed) and a bias (ndim 1, never decayed)."""
    return {"fc.weight": np.array([[1.0, -2.0], [0.5, 3.0]], dtype=dtype),
            "fc.bias": np.array([0.25, -1.0], dtype=dtype)}


GRADS_1 = {"fc.weight": np.array([[0.5, -1.0], [2.0, 0.0]]), "fc.bias": np.array([1.0, -0.5])}
GRADS_2 = {"fc.weight": np.array([[-1.0, 0.5], [1.0, 4.0]]), "fc.bias": np.array([0.0, 2.0])}


def random_params(rng, dtype):
    return {"conv1.weight": rng.normal(size=(3, 1, 3, 3)).astype(dtype),
            "conv1.bias": rng.normal(size=3).astype(dtype),
            "fc1.weight": rng.normal(size=(4, 12)).astype(dtype),
            "fc1.bias": rng.normal(size=4).astype(dtype)}


def random_grads(rng, params):
    return {name: rng.normal(size=p.shape).astype(p.dtype) for name, p in params.items()}


# --- hand-computed updates (two steps, explicit formulas) -----------------------------


def test_sgd_momentum_weight_decay_by_hand():
    params = toy_params()
    w0, b0 = params["fc.weight"].copy(), params["fc.bias"].copy()
    opt = SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01)
    opt.step(GRADS_1)
    opt.lr = 0.05
    opt.step(GRADS_2)
    # Weight: decay added to the gradient; velocity starts as the first gradient.
    gw1 = GRADS_1["fc.weight"] + 0.01 * w0
    vw1 = gw1
    w1 = w0 - 0.1 * vw1
    gw2 = GRADS_2["fc.weight"] + 0.01 * w1
    vw2 = 0.9 * vw1 + gw2
    w2 = w1 - 0.05 * vw2
    # Bias: no decay.
    vb1 = GRADS_1["fc.bias"]
    b1 = b0 - 0.1 * vb1
    vb2 = 0.9 * vb1 + GRADS_2["fc.bias"]
    b2 = b1 - 0.05 * vb2
    np.testing.assert_allclose(params["fc.weight"], w2, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(params["fc.bias"], b2, rtol=1e-15, atol=1e-15)
    # A concrete number, worked out on paper: w[0, 0] after two steps.
    # gw1 = 0.5 + 0.01 = 0.51; w1 = 1 - 0.051 = 0.949; gw2 = -1 + 0.00949 = -0.99051;
    # vw2 = 0.459 - 0.99051 = -0.53151; w2 = 0.949 + 0.0265755 = 0.9755755
    assert params["fc.weight"][0, 0] == pytest.approx(0.9755755, abs=1e-12)


def test_sgd_nesterov_by_hand():
    params = toy_params()
    b0 = params["fc.bias"].copy()
    opt = SGD(params, lr=0.1, momentum=0.9, nesterov=True)
    opt.step(GRADS_1)
    opt.step(GRADS_2)
    v1 = GRADS_1["fc.bias"]
    b1 = b0 - 0.1 * (GRADS_1["fc.bias"] + 0.9 * v1)
    v2 = 0.9 * v1 + GRADS_2["fc.bias"]
    b2 = b1 - 0.1 * (GRADS_2["fc.bias"] + 0.9 * v2)
    np.testing.assert_allclose(params["fc.bias"], b2, rtol=1e-15, atol=1e-15)
    # bias[0]: b1 = 0.25 - 0.1 * 1.9 = 0.06; v2 = 0.9; b2 = 0.06 - 0.1 * 0.81 = -0.021
    assert params["fc.bias"][0] == pytest.approx(-0.021, abs=1e-12)


def test_plain_sgd_by_hand():
    params = toy_params()
    opt = SGD(params, lr=0.5)
    opt.step(GRADS_1)
    np.testing.assert_array_equal(params["fc.bias"], [0.25 - 0.5, -1.0 + 0.25])
    assert opt.state_dict().keys() == {"step"}  # no velocity without momentum


def adam_by_hand(p0, grads, lrs, beta1, beta2, eps, decay, decoupled):
    """Adam/AdamW on one array, written out as in the papers (t is 1-based)."""
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        if decoupled:
            p = p * (1 - lr * decay)
        else:
            g = g + decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


@pytest.mark.parametrize("cls, decoupled", [(Adam, False), (AdamW, True)])
def test_adam_family_by_hand(cls, decoupled):
    params = toy_params()
    w0, b0 = params["fc.weight"].copy(), params["fc.bias"].copy()
    opt = cls(params, lr=0.1, betas=(0.8, 0.9), eps=1e-3, weight_decay=0.05)
    opt.step(GRADS_1)
    opt.lr = 0.02
    opt.step(GRADS_2)
    kw = dict(lrs=[0.1, 0.02], beta1=0.8, beta2=0.9, eps=1e-3, decoupled=decoupled)
    w2 = adam_by_hand(w0, [GRADS_1["fc.weight"], GRADS_2["fc.weight"]], decay=0.05, **kw)
    b2 = adam_by_hand(b0, [GRADS_1["fc.bias"], GRADS_2["fc.bias"]], decay=0.0, **kw)
    np.testing.assert_allclose(params["fc.weight"], w2, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(params["fc.bias"], b2, rtol=1e-13, atol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    # Step 1 with bias correction: m_hat = g, v_hat = g^2, so p moves by lr * g / (|g| + eps).
    params = toy_params()
    b0 = params["fc.bias"].copy()
    Adam(params, lr=0.1, eps=1e-12).step(GRADS_1)
    np.testing.assert_allclose(params["fc.bias"], b0 - 0.1 * np.sign(GRADS_1["fc.bias"]), rtol=1e-11)


# --- agreement with torch.optim ------------------------------------------------------

TORCH_CASES = [
    ("sgd", dict(momentum=0.0, nesterov=False, weight_decay=0.0)),
    ("sgd", dict(momentum=0.9, nesterov=False, weight_decay=0.0)),
    ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=5e-3)),
    ("sgd", dict(momentum=0.5, nesterov=False, weight_decay=1e-2)),
    ("adam", dict(weight_decay=0.0)),
    ("adam", dict(weight_decay=1e-2, betas=(0.8, 0.99), eps=1e-6)),
    ("adamw", dict(weight_decay=0.1)),
]


def run_torch(name, params, grads_seq, lrs, options):
    torch = pytest.importorskip("torch")
    tensors = {k: torch.tensor(v) for k, v in params.items()}
    decay = options.get("weight_decay", 0.0)
    # Biases in their own group without decay: torch would decay every parameter.
    groups = [{"params": [t for k, t in tensors.items() if t.ndim > 1], "weight_decay": decay},
              {"params": [t for k, t in tensors.items() if t.ndim <= 1], "weight_decay": 0.0}]
    if name == "sgd":
        opt = torch.optim.SGD(groups, lr=lrs[0], momentum=options["momentum"],
                              nesterov=options["nesterov"])
    else:
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        opt = cls(groups, lr=lrs[0], betas=options.get("betas", (0.9, 0.999)),
                  eps=options.get("eps", 1e-8))
    for grads, lr in zip(grads_seq, lrs):
        for group in opt.param_groups:
            group["lr"] = lr
        for k, t in tensors.items():
            t.grad = torch.tensor(grads[k])
        opt.step()
    return {k: t.numpy() for k, t in tensors.items()}


def make(name, params, lr, options):
    defaults = dict(momentum=0.0, nesterov=False, weight_decay=0.0)
    return make_optimizer(name, params, lr=lr, **{**defaults, **options})


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("name, options", TORCH_CASES)
def test_matches_torch(name, options, dtype, rtol):
    pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    params = random_params(rng, dtype)
    start = {k: v.copy() for k, v in params.items()}
    grads_seq = [random_grads(rng, params) for _ in range(6)]
    lrs = [0.1, 0.05, 0.05, 0.02, 0.08, 0.01]  # a schedule changes lr between steps
    expected = run_torch(name, start, grads_seq, lrs, options)
    opt = make(name, params, lrs[0], options)
    for grads, lr in zip(grads_seq, lrs):
        opt.lr = lr
        opt.step(grads)
    for key in params:
        assert params[key].dtype == dtype
        np.testing.assert_allclose(params[key], expected[key], rtol=rtol, atol=rtol, err_msg=key)
    assert not np.allclose(params["fc1.weight"], start["fc1.weight"])  # it did move


# --- exact resume --------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_dict_round_trip_continues_bit_identically(name):
    rng = np.random.default_rng(1)
    params = random_params(rng, np.float32)
    grads_seq = [random_grads(rng, params) for _ in range(6)]
    options = dict(momentum=0.9, nesterov=True, weight_decay=1e-2)

    uninterrupted = {k: v.copy() for k, v in params.items()}
    opt = make(name, uninterrupted, 0.01, options)
    for grads in grads_seq:
        opt.step(grads)

    first = {k: v.copy() for k, v in params.items()}
    opt = make(name, first, 0.01, options)
    for grads in grads_seq[:3]:
        opt.step(grads)
    buffer = io.BytesIO()
    np.savez(buffer, **opt.state_dict())  # the checkpoint format: plain arrays in an .npz
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as archive:
        saved = {k: archive[k] for k in archive.files}
    assert saved["step"].dtype == np.int64 and saved["step"].shape == () and int(saved["step"]) == 3

    resumed = {k: v.copy() for k, v in first.items()}
    opt2 = make(name, resumed, 0.01, options)
    opt2.load_state_dict(saved)
    for grads in grads_seq[3:]:
        opt2.step(grads)
    for key in params:
        np.testing.assert_array_equal(resumed[key], uninterrupted[key], err_msg=key)
    assert opt2.steps == 6


def test_state_dict_keys_and_copies():
    params = toy_params(np.float32)
    adam = Adam(params)
    assert set(adam.state_dict()) == {"step", "exp_avg.fc.weight", "exp_avg.fc.bias",
                                      "exp_avg_sq.fc.weight", "exp_avg_sq.fc.bias"}
    sgd = SGD(params, lr=0.1, momentum=0.9)
    assert set(sgd.state_dict()) == {"step", "velocity.fc.weight", "velocity.fc.bias"}
    state = sgd.state_dict()
    state["velocity.fc.bias"][:] = 7  # a copy: changing it leaves the optimizer alone
    assert not sgd.buffers["velocity"]["fc.bias"].any()
    assert state["velocity.fc.weight"].dtype == np.float32


# --- weight decay on weights only ----------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_weight_decay_skips_biases(name):
    params = toy_params()
    before = {k: v.copy() for k, v in params.items()}
    opt = make(name, params, 0.1, dict(momentum=0.9, weight_decay=0.5))
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    for _ in range(3):
        opt.step(zero)
    np.testing.assert_array_equal(params["fc.bias"], before["fc.bias"])
    # Decay pulls weights towards zero.
    assert np.all(np.abs(params["fc.weight"]) < np.abs(before["fc.weight"]))


def test_adamw_decay_is_decoupled():
    # With a zero gradient Adam's step is zero, so AdamW's weight only shrinks by (1 - lr * wd).
    params = toy_params()
    w0 = params["fc.weight"].copy()
    AdamW(params, lr=0.1, weight_decay=0.5).step({k: np.zeros_like(v) for k, v in params.items()})
    np.testing.assert_allclose(params["fc.weight"], w0 * (1 - 0.1 * 0.5), rtol=1e-15)


# --- in place, dtypes, inputs untouched ----------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_updates_in_place_keeps_float32_and_leaves_grads_alone(name):
    rng = np.random.default_rng(2)
    params = random_params(rng, np.float32)
    model_arrays = dict(params)
    grads = random_grads(rng, params)
    grads_before = {k: v.copy() for k, v in grads.items()}
    opt = make(name, params, 0.01, dict(momentum=0.9, weight_decay=1e-2))
    for _ in range(3):
        opt.lr = np.float64(0.01)  # a NumPy float64 lr must not promote float32 parameters
        opt.step(grads)
    for key, array in params.items():
        assert array is model_arrays[key]
        assert array.dtype == np.float32
    for buffers in opt.buffers.values():
        assert all(b.dtype == np.float32 for b in buffers.values())
    for key in grads:
        np.testing.assert_array_equal(grads[key], grads_before[key])


# --- errors --------------------------------------------------------------------------


def test_step_rejects_missing_and_extra_keys():
    params = toy_params()
    opt = SGD(params, lr=0.1, momentum=0.9)
    before = {k: v.copy() for k, v in params.items()}
    with pytest.raises(ValueError, match="missing 'fc.bias'"):
        opt.step({"fc.weight": GRADS_1["fc.weight"]})
    with pytest.raises(ValueError, match="unexpected 'fc2.weight'"):
        opt.step({**GRADS_1, "fc2.weight": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"grads\['fc.bias'\] must be an array of shape \(2,\)"):
        opt.step({**GRADS_1, "fc.bias": np.zeros(3)})
    with pytest.raises(ValueError, match="dtype float64"):
        opt.step({**GRADS_1, "fc.bias": np.zeros(2, dtype=np.float32)})
    for key in params:  # a refused step changes nothing
        np.testing.assert_array_equal(params[key], before[key])
    assert opt.steps == 0


def test_load_state_dict_is_strict_and_atomic():
    params = toy_params()
    opt = Adam(params)
    opt.step(GRADS_1)
    good = opt.state_dict()
    fresh = Adam(toy_params())
    with pytest.raises(ValueError, match="missing 'exp_avg.fc.bias'"):
        fresh.load_state_dict({k: v for k, v in good.items() if k != "exp_avg.fc.bias"})
    with pytest.raises(ValueError, match="unexpected 'velocity.fc.bias'"):
        fresh.load_state_dict({**good, "velocity.fc.bias": np.zeros(2)})
    with pytest.raises(ValueError, match=r"exp_avg.fc.weight.*shape \(2, 2\)"):
        fresh.load_state_dict({**good, "exp_avg.fc.weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="dtype float64"):
        fresh.load_state_dict({**good, "exp_avg.fc.weight": np.zeros((2, 2), dtype=np.float32)})
    with pytest.raises(ValueError, match="step"):
        fresh.load_state_dict({**good, "step": np.array([1])})
    assert fresh.steps == 0 and not fresh.buffers["exp_avg"]["fc.weight"].any()
    fresh.load_state_dict(good)
    assert fresh.steps == 1
    np.testing.assert_array_equal(fresh.buffers["exp_avg_sq"]["fc.bias"], opt.buffers["exp_avg_sq"]["fc.bias"])


def test_sgd_state_without_momentum_refuses_velocity():
    with pytest.raises(ValueError, match="unexpected 'velocity.fc.weight'"):
        SGD(toy_params(), lr=0.1).load_state_dict(SGD(toy_params(), lr=0.1, momentum=0.9).state_dict())


def test_make_optimizer_names_and_errors():
    assert OPTIMIZERS == ("sgd", "adam", "adamw")
    common = dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    sgd = make_optimizer("sgd", toy_params(), **common)
    assert type(sgd) is SGD and sgd.nesterov and sgd.momentum == 0.9
    adam = make_optimizer("adam", toy_params(), **common, betas=(0.5, 0.6), eps=1e-4)
    assert type(adam) is Adam and adam.betas == (0.5, 0.6) and adam.eps == 1e-4
    assert type(make_optimizer("adamw", toy_params(), **common)) is AdamW
    with pytest.raises(ValueError, match="optimizer must be one of sgd, adam, adamw, got 'rmsprop'"):
        make_optimizer("rmsprop", toy_params(), **common)


@pytest.mark.parametrize("build, message", [
    (lambda p: SGD(p, lr=0.1, nesterov=True), "nesterov momentum needs momentum > 0"),
    (lambda p: SGD(p, lr=-1.0), "lr must be"),
    (lambda p: SGD(p, lr=0.1, momentum=1.0), "momentum must be in"),
    (lambda p: Adam(p, betas=(0.9, 1.0)), r"betas\[1\] must be in"),
    (lambda p: AdamW(p, weight_decay=-0.1), "weight_decay must be"),
    (lambda p: SGD({**p, "n": np.arange(3)}, lr=0.1), r"params\['n'\] must be a floating-point"),
    (lambda p: SGD({}, lr=0.1), "non-empty"),
])
def test_constructor_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build(toy_params())
