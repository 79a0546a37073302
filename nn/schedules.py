"""Learning-rate schedules: pure functions of the (fractional) epoch.

The trainer asks for the rate at ``epoch + batch_index / batches_per_epoch`` before every
step, so the rate changes smoothly within an epoch; asking at whole epochs gives the
per-epoch values (what the history logs). Nothing here keeps state: a resumed run gets
exactly the rates it would have had.

The rate is ``warmup(e) * decayed(e)``:

* ``decayed(e)``, the schedule proper, runs on the same clock as the epochs (the warmup
  does not delay it: ``step_size=10`` decays at epochs 10, 20, ... whatever the warmup):

  - ``constant``:    ``base_lr``
  - ``step``:        ``max(min_lr, base_lr * gamma ** floor(e / step_size))``
  - ``exponential``: ``max(min_lr, base_lr * gamma ** e)``
  - ``cosine``:      ``min_lr + (base_lr - min_lr) * (1 + cos(pi * e / total_epochs)) / 2``,
    held at ``min_lr`` from ``e = total_epochs`` on.

* ``warmup(e) = (e + 1) / (warmup_epochs + 1)`` while ``e < warmup_epochs``, else 1: a
  linear ramp that starts at ``1 / (warmup_epochs + 1)`` of the scheduled rate at step 0
  and reaches it exactly at ``e = warmup_epochs`` (continuous there). This is nanoGPT's
  ``(it + 1) / (warmup_iters + 1)`` with the epoch as unit: the first step never has a
  zero rate (a wasted step that changes nothing), and at whole epochs the ramp climbs in
  equal steps of ``1 / (warmup_epochs + 1)``: with 1 warmup epoch, epoch 0 starts at half
  the rate and ramps to the full rate over its batches. ``min_lr`` bounds the schedule,
  not the warmup ramp.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "step", "exponential", "cosine")


def learning_rate(epoch: float, *, base_lr: float, schedule: str, total_epochs: float,
                  warmup_epochs: float = 0.0, step_size: float = 10, gamma: float = 0.1,
                  min_lr: float = 0.0) -> float:
    """The learning rate at ``epoch`` (0-based, may be fractional).

    Parameters
    ----------
    epoch : float
        e >= 0, e.g. ``epoch + batch_index / batches_per_epoch``.
    base_lr : float
        Rate after warmup, before any decay (> 0).
    schedule : str
        One of :data:`SCHEDULES`.
    total_epochs : float
        Length of the run (> 0); the cosine reaches ``min_lr`` there.
    warmup_epochs : float, default 0.0
        Length of the linear warmup (0 = none).
    step_size : float, default 10
        Epochs between decays of the ``step`` schedule (> 0).
    gamma : float, default 0.1
        Decay factor of ``step`` (per step) and ``exponential`` (per epoch), in (0, 1].
    min_lr : float, default 0.0
        Floor of the decaying schedules, in [0, base_lr].

    Returns
    -------
    float
        The rate as a Python float.

    Raises
    ------
    ValueError
        Unknown schedule (listing the allowed ones) or an out-of-range argument.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    _require(epoch >= 0, "epoch", epoch, ">= 0")
    _require(base_lr > 0, "base_lr", base_lr, "> 0")
    _require(total_epochs > 0, "total_epochs", total_epochs, "> 0")
    _require(warmup_epochs >= 0, "warmup_epochs", warmup_epochs, ">= 0")
    _require(step_size > 0, "step_size", step_size, "> 0")
    _require(0 < gamma <= 1, "gamma", gamma, "in (0, 1]")
    _require(0 <= min_lr <= base_lr, "min_lr", min_lr, f"in [0, base_lr={base_lr}]")

    epoch = float(epoch)
    if schedule == "constant":
        rate = base_lr
    elif schedule == "step":
        rate = max(min_lr, base_lr * gamma ** math.floor(epoch / step_size))
    elif schedule == "exponential":
        rate = max(min_lr, base_lr * gamma ** epoch)
    else:  # cosine
        progress = min(epoch / total_epochs, 1.0)
        rate = min_lr + (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if epoch < warmup_epochs:
        rate *= (epoch + 1.0) / (warmup_epochs + 1.0)
    return float(rate)


def _require(ok: bool, name: str, value, rule: str) -> None:
    # Conditions are written so that NaN fails them (every comparison with NaN is False).
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
