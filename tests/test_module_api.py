"""The Module API contract: names, state dicts, train/eval, and model files."""

import io
import json

import numpy as np
import pytest

import nn
from tests.synthetic import mnist_like
from nn.serialization import load_model, save_model

EXPECTED_NAMES = [
    "conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight", "fc1.bias",
    "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias",
]


def small_model(seed=0, **kwargs):
    return nn.lenet5(rng=np.random.default_rng(seed), **kwargs)


def test_named_parameters_are_dotted_pytorch_names_and_shapes():
    model = small_model()
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert list(shapes) == EXPECTED_NAMES
    assert shapes["conv1.weight"] == (6, 1, 5, 5) and shapes["conv2.weight"] == (16, 6, 5, 5)
    assert shapes["fc1.weight"] == (120, 400) and shapes["fc3.bias"] == (10,)
    assert [n for n, _ in model.named_gradients()] == EXPECTED_NAMES
    assert model.num_parameters() == 61706  # the classic LeNet-5 count
    assert all(p.dtype == np.float32 for p in model.parameters())
    # ReLU after max pooling gives the same numbers (see the next test), on 4x fewer values.
    assert list(model.children()) == ["conv1", "pool1", "act1", "conv2", "pool2", "act2",
                                      "flatten", "fc1", "act3", "fc2", "act4", "fc3"]
    assert list(small_model(pool="avg").children())[:3] == ["conv1", "act1", "pool1"]
    assert list(small_model(activation="tanh").children())[:3] == ["conv1", "act1", "pool1"]


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
def test_activation_after_max_pool_is_bit_identical_to_before(activation):
    model = small_model(activation=activation, leaky_slope=0.1)
    layers = model.children()
    textbook = nn.Sequential(**{name: layers[name] for name in
                                ["conv1", "act1", "pool1", "conv2", "act2", "pool2", "flatten",
                                 "fc1", "act3", "fc2", "act4", "fc3"]})
    x = mnist_like(np.random.default_rng(1), 16)  # flat background: many ties in the pools
    x[:4] -= 5.0  # and windows where every value is negative
    results = []
    for net in (model, textbook):
        logits = net.forward(x)
        dx = net.backward(np.random.default_rng(2).standard_normal(logits.shape, dtype=np.float32))
        results.append((logits, dx, [g.copy() for _, g in net.named_gradients()]))
    (logits, dx, grads), (logits_ref, dx_ref, grads_ref) = results
    assert np.array_equal(logits, logits_ref) and np.array_equal(dx, dx_ref)
    assert all(np.array_equal(g, r) for g, r in zip(grads, grads_ref))


def test_dropout_children_and_positional_sequential_names():
    model = small_model(dropout=0.5)
    assert list(model.children())[8:12] == ["act3", "drop1", "fc2", "act4"]
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert seq[0] is seq["0"]


def test_named_parameters_are_the_live_arrays():
    model = small_model()
    params = dict(model.named_parameters())
    params["fc3.bias"] += 1.0  # what an optimizer does
    assert np.all(model.fc3.params["bias"] == 1.0)


def test_state_dict_round_trip_is_bit_identical():
    source, target = small_model(seed=1), small_model(seed=2)
    state = source.state_dict()
    assert not np.array_equal(state["conv1.weight"], target.state_dict()["conv1.weight"])
    target.load_state_dict(state)
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        assert a.tobytes() == b.tobytes(), name
    x = np.random.default_rng(3).standard_normal((4, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(source.eval()(x), target.eval()(x))


def test_state_dict_holds_copies():
    model = small_model()
    state = model.state_dict()
    state["conv1.bias"][:] = 5.0
    assert np.all(model.conv1.params["bias"] == 0.0)


def test_load_keeps_the_parameter_arrays_in_place():
    model = small_model(seed=1)
    weight = model.conv1.params["weight"]
    model.load_state_dict(small_model(seed=2).state_dict())
    assert model.conv1.params["weight"] is weight


@pytest.mark.parametrize("change, named", [
    (lambda s: s.pop("fc2.bias"), "fc2.bias"),
    (lambda s: s.__setitem__("fc9.weight", np.zeros(3, np.float32)), "fc9.weight"),
    (lambda s: s.__setitem__("conv2.weight", np.zeros((16, 6, 3, 3), np.float32)), "conv2.weight"),
])
def test_load_rejects_missing_extra_and_misshaped_tensors_by_name(change, named):
    model = small_model(seed=1)
    before = model.state_dict()
    state = small_model(seed=2).state_dict()
    change(state)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        model.load_state_dict(state)
    for name, value in model.named_parameters():  # nothing half-loaded
        assert np.array_equal(value, before[name]), name


def test_non_strict_load_reports_and_skips_unknown_keys():
    model = small_model(seed=1)
    state = small_model(seed=2).state_dict()
    del state["fc3.weight"]
    state["extra"] = np.ones(2)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc3.weight"] and result.unexpected_keys == ["extra"]
    assert np.array_equal(model.conv1.params["weight"], state["conv1.weight"])
    with pytest.raises(ValueError, match="conv1.weight"):  # shapes are checked even then
        model.load_state_dict({"conv1.weight": np.zeros((1, 1))}, strict=False)


def test_train_eval_toggle_reaches_every_layer_and_controls_dropout():
    model = small_model(dropout=0.5)
    assert model.eval() is model
    assert not any(m.training for m in model.children().values())
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    assert np.array_equal(model(x), model(x))  # eval: deterministic
    model.train()
    assert all(m.training for m in model.children().values())
    assert not np.array_equal(model(x), model(x))  # fresh dropout masks


def test_zero_grad_and_backward_fill_every_gradient():
    model = small_model()
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    _, dlogits = nn.SoftmaxCrossEntropy()(model(x), np.array([0, 1, 2]))
    model.backward(dlogits)
    grads = dict(model.named_gradients())
    for name, param in model.named_parameters():
        assert grads[name].shape == param.shape and grads[name].dtype == param.dtype
        assert np.any(grads[name] != 0), name
    model.zero_grad()
    assert all(np.all(g == 0) for _, g in model.named_gradients())


def test_same_seed_same_weights_and_init_scale():
    a, b = small_model(seed=7), small_model(seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    w = small_model(seed=7).fc1.params["weight"]
    assert abs(w.std() - np.sqrt(2 / 400)) < 0.1 * np.sqrt(2 / 400)  # he_normal, fan_in 400
    assert np.all(small_model(seed=7).fc1.params["bias"] == 0)


def _save(model, config) -> tuple[io.BytesIO, io.StringIO]:
    weights, config_file = io.BytesIO(), io.StringIO()
    save_model(model, config, weights, config_file)
    weights.seek(0)
    config_file.seek(0)
    return weights, config_file


def test_save_load_round_trip():
    config = {"activation": "tanh", "pool": "avg", "channels": (4, 8), "hidden": (32, 16),
              "init": "glorot_uniform", "dtype": np.float64}
    model = small_model(seed=5, **config)
    weights, config_file = _save(model, config)
    assert json.loads(config_file.getvalue())["dtype"] == "float64"
    with np.load(io.BytesIO(weights.getvalue()), allow_pickle=False) as archive:  # plain arrays, no pickle needed
        assert sorted(archive.files) == sorted(n for n, _ in model.named_parameters())
    loaded, loaded_config = load_model(weights, config_file)
    assert loaded_config["channels"] == [4, 8]
    assert isinstance(loaded.act1, nn.Tanh) and isinstance(loaded.pool1, nn.AvgPool2d)
    for (name, a), (_, b) in zip(model.named_parameters(), loaded.named_parameters()):
        assert a.dtype == b.dtype == np.float64 and a.tobytes() == b.tobytes(), name
    x = np.random.default_rng(0).standard_normal((2, 1, 28, 28))
    assert np.array_equal(model(x), loaded(x))


def test_load_model_rejects_weights_of_another_architecture():
    weights, _ = _save(small_model(), {})
    with pytest.raises(ValueError, match="fc1.weight"):
        load_model(weights, io.StringIO(json.dumps({"hidden": [64, 32]})))
    with pytest.raises(ValueError, match="learning_rate"):
        _save(small_model(), {"learning_rate": 0.1})


def test_input_grad_false_skips_only_the_input_gradient():
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    labels = np.array([1, 2, 3])
    full, lean = small_model(seed=4), small_model(seed=4)
    lean.input_grad = False
    assert lean.conv1.input_grad is False and full.input_grad is True
    for model in (full, lean):
        _, dlogits = nn.SoftmaxCrossEntropy()(model(x), labels)
        result = model.backward(dlogits)
        assert (result is None) == (model is lean)
    # Skipping the input gradient changes no other product: the same bits.
    for (name, a), (_, b) in zip(full.named_gradients(), lean.named_gradients()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_outputs_and_gradients_never_alias_reused_buffers():
    # Layers reuse internal buffers between calls of the same shape; what they return must
    # survive the next call unchanged.
    rng = np.random.default_rng(0)
    model = small_model()
    x1, x2 = (rng.standard_normal((4, 1, 28, 28)).astype(np.float32) for _ in range(2))
    labels = np.arange(4)
    outputs = []
    for x in (x1, x2):
        activations = [x]
        for layer in model:
            activations.append(layer(activations[-1]))
        _, dlogits = nn.SoftmaxCrossEntropy()(activations[-1], labels)
        dx = model.backward(dlogits)
        outputs.append(([a.copy() for a in activations], [a for a in activations], dx.copy(), dx,
                        {k: (g.copy(), g) for k, g in model.named_gradients()}))
    saved, live, dx_saved, dx_live, grads = outputs[0]
    for kept, current in zip(saved, live):
        assert np.array_equal(kept, current)
    assert np.array_equal(dx_saved, dx_live)
    assert all(np.array_equal(copy, g) for copy, g in grads.values())


@pytest.mark.parametrize("stride, chunk_bytes", [(1, 1), (2, 1), (2, 2 * 2 * 3 * 5 * 6 * 6 * 4)])
def test_window_chunks_change_no_bit(stride, chunk_bytes):
    # Each output row is one product whatever the chunk, and dW's row shares are summed once
    # all are in: the layer gets the bits it gets in one chunk (chunk_bytes: one output row
    # per chunk, or two, 6 rows as 2+2+2).
    rng = np.random.default_rng(2)
    layer = nn.Conv2d(3, 4, 5, stride=stride, padding=2, rng=rng)
    x = rng.standard_normal((6, 3, 12, 12), dtype=np.float32)
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape, dtype=np.float32)
    layer.backward(dout)
    dweight = layer.grads["weight"].copy()
    layer.WINDOW_CHUNK_BYTES = chunk_bytes
    np.testing.assert_array_equal(layer.forward(x), out)
    layer.backward(dout)
    np.testing.assert_array_equal(layer.grads["weight"], dweight)


def test_backward_uses_the_chunks_of_its_forward():
    # The budget changed between forward and backward: backward must gather the windows its
    # forward's chunks left, not assume the one chunk its new budget would give.
    rng = np.random.default_rng(4)
    layer = nn.Conv2d(2, 3, 3, padding=1, rng=rng, dtype=np.float64)
    x, dout = rng.standard_normal((4, 2, 9, 9)), rng.standard_normal((4, 3, 9, 9))
    layer.forward(x)
    layer.backward(dout)
    expected = layer.grads["weight"].copy()
    layer.WINDOW_CHUNK_BYTES = 1
    layer.forward(x)
    layer.WINDOW_CHUNK_BYTES = 1 << 30
    layer.backward(dout)
    np.testing.assert_array_equal(layer.grads["weight"], expected)


@pytest.mark.parametrize("chunk_bytes, mode", [(1, "train"), (1, "eval"), (None, "eval")])
def test_chunked_and_eval_mode_passes_give_the_same_numbers(monkeypatch, chunk_bytes, mode):
    # Conv2d gathers its windows and computes the input gradient in chunks of output rows
    # (1 byte -> one row per chunk), and max pooling finds its winners lazily in evaluation
    # mode; results must not depend on either.
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 1, 28, 28))
    labels = np.array([0, 3, 5, 7, 9])

    def run(training):
        model = small_model(seed=3, dtype=np.float64)
        model.train(training)
        logits = model(x)
        _, dlogits = nn.SoftmaxCrossEntropy()(logits, labels)
        return logits, model.backward(dlogits), dict(model.named_gradients())

    reference = run(training=True)  # default chunks hold the whole 5-image batch
    if chunk_bytes is not None:
        monkeypatch.setattr(nn.Conv2d, "WINDOW_CHUNK_BYTES", chunk_bytes)
        monkeypatch.setattr(nn.Conv2d, "INPUT_GRADIENT_CHUNK_BYTES", chunk_bytes)
    logits, dx, grads = run(training=mode == "train")
    np.testing.assert_allclose(logits, reference[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx, reference[1], rtol=1e-12, atol=1e-12)
    for name, g in grads.items():
        np.testing.assert_allclose(g, reference[2][name], rtol=1e-10, atol=1e-12, err_msg=name)


def test_saved_model_files_are_byte_identical_for_identical_weights(monkeypatch):
    import time
    model = nn.lenet5(rng=np.random.default_rng(3))
    first, first_config = _save(model, {"activation": "relu"})
    monkeypatch.setattr(time, "time", lambda: 2_000_000_000.0)  # zip timestamps come from the clock
    monkeypatch.setattr(time, "localtime", lambda *a: (2033, 5, 18, 3, 33, 20, 2, 138, 0))
    second, second_config = _save(model, {"activation": "relu"})
    assert first.getvalue() == second.getvalue() and first_config.getvalue() == second_config.getvalue()
    loaded, _ = nn.load_model(second, second_config)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_forward_collect_returns_forward_and_the_named_layer_outputs():
    model = small_model(channels=(3, 5)).eval()
    x = mnist_like(np.random.default_rng(1), 4)
    output, maps = model.forward_collect(x, ["conv2", "conv1"])
    assert list(maps) == ["conv2", "conv1"]
    assert maps["conv1"].shape == (4, 3, 28, 28) and maps["conv2"].shape == (4, 5, 10, 10)
    np.testing.assert_array_equal(output, model.forward(x))
    np.testing.assert_array_equal(maps["conv1"], model.conv1.forward(x))
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        model.forward_collect(x, ["conv9"])
