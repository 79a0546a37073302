"""``SoftmaxCrossEntropy(reduction="sum")``: the batch-summed loss of the original tutorial.

Summing instead of averaging multiplies loss and gradient by the batch size, nothing else:
so plain SGD at ``lr`` on the sum is the step of the mean at ``lr * batch_size``, in one
process or shared by DataParallel, and the loss the trainer reports is the same mean per
image either way.
"""

import numpy as np
import pytest

import nn
from nn.parallel import DataParallel
from nn.training import EarlyStopping, Trainer
from tests.gradcheck import adaptive_numerical_gradient, relative_error
from tests.synthetic import mnist_like


def batch(n: int, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=3.0, size=(n, k)), rng.integers(0, k, size=n)


@pytest.mark.parametrize("n", [1, 7, 32])
def test_the_sum_is_batch_size_times_the_mean_loss_and_gradient(n):
    logits, labels = batch(n)
    loss_mean, grad_mean = nn.SoftmaxCrossEntropy("mean")(logits, labels)
    loss_sum, grad_sum = nn.SoftmaxCrossEntropy("sum")(logits, labels)
    assert grad_sum.dtype == np.float64
    np.testing.assert_allclose(grad_sum, n * grad_mean, rtol=1e-14, atol=1e-16)
    assert loss_sum == pytest.approx(n * loss_mean, rel=1e-14)
    # A shard of a larger batch: a sum ignores the whole batch's size, a mean divides by it.
    assert nn.SoftmaxCrossEntropy("sum")(logits, labels, 4 * n)[0] == loss_sum
    assert nn.SoftmaxCrossEntropy("mean")(logits, labels, 4 * n)[0] == pytest.approx(loss_mean / 4, rel=1e-14)


def test_the_summed_loss_gradient_equals_finite_differences():
    logits, labels = batch(6, k=5, seed=1)
    loss_fn = nn.SoftmaxCrossEntropy("sum")
    _, dlogits = loss_fn(logits, labels)
    numeric = adaptive_numerical_gradient(lambda: loss_fn(logits, labels)[0], logits)
    assert relative_error(dlogits, numeric) < 1e-6


def test_an_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="reduction must be one of mean, sum, got 'max'"):
        nn.SoftmaxCrossEntropy("max")


def train(reduction: str, lr: float, batch_size: int = 16, epochs: int = 2):
    """Plain SGD (the tutorial's) on a float64 toy set: (weights, history)."""
    rng = np.random.default_rng(3)
    images = mnist_like(rng, 96).astype(np.float64)
    labels = rng.integers(0, 10, 96)
    model = nn.lenet5(channels=(4, 8), hidden=(32, 16), activation="sigmoid", pool="avg",
                      init="randn", rng=rng, dtype=np.float64)
    optimizer = nn.make_optimizer("sgd", dict(model.named_parameters()), lr=lr, momentum=0.0,
                                  nesterov=False, weight_decay=0.0)
    trainer = Trainer(model=model, optimizer=optimizer, lr_at=lambda epoch: lr, rng=rng,
                      batch_size=batch_size, early_stopping=EarlyStopping(),
                      loss_fn=nn.SoftmaxCrossEntropy(reduction))
    state = trainer.fit((images[:64], labels[:64]), (images[64:], labels[64:]), epochs=epochs)
    return model.state_dict(), state.history


def test_sgd_on_the_sum_at_lr_is_sgd_on_the_mean_at_lr_times_batch_size():
    # 64 images in batches of 16: every batch is full, so every step scales alike.
    weights_sum, history_sum = train("sum", lr=0.0015)
    weights_mean, history_mean = train("mean", lr=0.0015 * 16)
    initial, _ = train("sum", lr=0.0015, epochs=0)
    for name in weights_sum:
        assert not np.allclose(weights_sum[name], initial[name], rtol=0, atol=1e-6), name  # it trained
        np.testing.assert_allclose(weights_sum[name], weights_mean[name], rtol=1e-9, atol=1e-12, err_msg=name)
    # The reported losses are means per image in both: comparable across reductions.
    for row_sum, row_mean in zip(history_sum, history_mean, strict=True):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert row_sum[key] == pytest.approx(row_mean[key], rel=1e-9), key
    assert 1.0 < history_sum[0]["train_loss"] < 5.0  # per image (ln 10 ~ 2.3), not per batch


@pytest.mark.parametrize("n", [1, 5, 16])
def test_data_parallel_with_the_sum_equals_one_process(n):
    rng = np.random.default_rng(20 + n)
    x, labels = mnist_like(rng, n).astype(np.float64), rng.integers(0, 10, n)
    loss_fn = nn.SoftmaxCrossEntropy("sum")
    reference = nn.lenet5(rng=np.random.default_rng(0), dtype=np.float64)
    loss_ref, logits_ref = reference.forward_backward(x, labels, loss_fn)
    with DataParallel(nn.lenet5(rng=np.random.default_rng(0), dtype=np.float64), workers=3) as parallel:
        loss, logits = parallel.forward_backward(x, labels, loss_fn)
        grads = {name: grad.copy() for name, grad in parallel.named_gradients()}
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    np.testing.assert_allclose(logits, logits_ref, rtol=1e-12, atol=1e-13)
    for name, grad in reference.named_gradients():
        np.testing.assert_allclose(grads[name], grad, rtol=1e-11, atol=1e-14, err_msg=name)
