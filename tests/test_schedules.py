"""Learning-rate schedules: exact values, warmup shape, cosine shape, floors and errors."""

import math

import numpy as np
import pytest

from nn.schedules import SCHEDULES, learning_rate


def lr(epoch, schedule, **kw):
    options = dict(base_lr=0.1, schedule=schedule, total_epochs=30)
    return learning_rate(epoch, **{**options, **kw})


def test_schedule_names():
    assert SCHEDULES == ("constant", "step", "exponential", "cosine")


def test_constant():
    assert [lr(e, "constant") for e in (0, 7.5, 29, 100)] == [0.1] * 4


def test_step_values():
    kw = dict(step_size=10, gamma=0.5)
    assert lr(0, "step", **kw) == 0.1
    assert lr(9.99, "step", **kw) == 0.1
    assert lr(10, "step", **kw) == 0.05
    assert lr(19.5, "step", **kw) == 0.05
    assert lr(25, "step", **kw) == 0.025


def test_exponential_values():
    assert lr(0, "exponential", gamma=0.9) == 0.1
    assert lr(1, "exponential", gamma=0.9) == pytest.approx(0.09, rel=1e-15)
    assert lr(3, "exponential", gamma=0.9) == pytest.approx(0.0729, rel=1e-15)
    assert lr(2.5, "exponential", gamma=0.9) == pytest.approx(0.1 * 0.9**2.5, rel=1e-15)


def test_cosine_values():
    assert lr(0, "cosine") == 0.1
    assert lr(15, "cosine") == pytest.approx(0.05, rel=1e-15)  # half way: the mean
    assert lr(10, "cosine") == pytest.approx(0.1 * (1 + math.cos(math.pi / 3)) / 2, rel=1e-15)  # 0.075
    assert lr(30, "cosine") == pytest.approx(0.0, abs=1e-18)
    # With a floor: min + (base - min) * (1 + cos) / 2.
    assert lr(15, "cosine", min_lr=0.02) == pytest.approx(0.06, rel=1e-15)
    assert lr(30, "cosine", min_lr=0.02) == pytest.approx(0.02, rel=1e-15)
    assert lr(45, "cosine", min_lr=0.02) == pytest.approx(0.02, rel=1e-15)  # held after the end


def test_cosine_decreases_monotonically_to_the_floor():
    epochs = np.linspace(0, 30, 601)
    rates = np.array([lr(e, "cosine", min_lr=1e-3) for e in epochs])
    assert np.all(np.diff(rates) <= 0)
    assert np.all(np.diff(rates)[1:-1] < 0)  # strictly inside the run
    assert rates.min() == pytest.approx(1e-3, rel=1e-12)


@pytest.mark.parametrize("schedule, kw", [("step", dict(step_size=2, gamma=0.1)),
                                           ("exponential", dict(gamma=0.5))])
def test_min_lr_floors_step_and_exponential(schedule, kw):
    rates = [lr(e, schedule, min_lr=0.004, **kw) for e in range(30)]
    assert min(rates) == 0.004
    assert rates[0] == 0.1
    assert lr(29, schedule, min_lr=0.0, **kw) < 0.004  # without the floor it would go lower


def test_warmup_shape():
    # factor (e + 1) / (warmup + 1) while e < warmup, then the schedule itself.
    kw = dict(warmup_epochs=3)
    assert lr(0, "constant", **kw) == pytest.approx(0.1 / 4, rel=1e-15)  # never 0 at step 0
    assert lr(1, "constant", **kw) == pytest.approx(0.1 * 2 / 4, rel=1e-15)
    assert lr(2.5, "constant", **kw) == pytest.approx(0.1 * 3.5 / 4, rel=1e-15)
    assert lr(3, "constant", **kw) == 0.1
    assert lr(2.999999, "constant", **kw) == pytest.approx(0.1, rel=1e-6)  # continuous at the end
    ramp = [lr(e, "constant", **kw) for e in np.linspace(0, 3, 61)]
    assert np.all(np.diff(ramp) > 0)
    # Linear: equal increments for equal epoch steps.
    np.testing.assert_allclose(np.diff(ramp), np.diff(ramp)[0], rtol=1e-9)


def test_warmup_multiplies_the_schedule_on_the_same_clock():
    kw = dict(warmup_epochs=2, min_lr=0.01)
    assert lr(1, "cosine", **kw) == pytest.approx(lr(1, "cosine", min_lr=0.01) * 2 / 3, rel=1e-15)
    assert lr(5, "cosine", **kw) == lr(5, "cosine", min_lr=0.01)  # after warmup: untouched
    # The step schedule still decays at multiples of step_size, warmup or not.
    assert lr(9.9, "step", warmup_epochs=1, step_size=10) == 0.1
    assert lr(10, "step", warmup_epochs=1, step_size=10) == pytest.approx(0.01, rel=1e-15)
    # One warmup epoch (the pipeline's default): epoch 0 starts at half the rate.
    assert lr(0, "cosine", warmup_epochs=1) == pytest.approx(0.05, rel=1e-15)


def test_returns_python_float():
    value = learning_rate(np.float32(2.0), base_lr=np.float64(0.1), schedule="exponential",
                          total_epochs=10, gamma=np.float64(0.5))
    assert type(value) is float


@pytest.mark.parametrize("kw, message", [
    (dict(schedule="linear"), "schedule must be one of constant, step, exponential, cosine, got 'linear'"),
    (dict(epoch=-1), "epoch must be >= 0"),
    (dict(base_lr=0.0), "base_lr must be > 0"),
    (dict(total_epochs=0), "total_epochs must be > 0"),
    (dict(warmup_epochs=-1), "warmup_epochs must be >= 0"),
    (dict(step_size=0), "step_size must be > 0"),
    (dict(gamma=1.5), "gamma must be in"),
    (dict(gamma=0.0), "gamma must be in"),
    (dict(min_lr=0.2), "min_lr must be in"),
    (dict(min_lr=float("nan")), "min_lr must be in"),
])
def test_errors(kw, message):
    args = {**dict(epoch=1.0, base_lr=0.1, schedule="cosine", total_epochs=10), **kw}
    epoch = args.pop("epoch")
    with pytest.raises(ValueError, match=message):
        learning_rate(epoch, **args)
