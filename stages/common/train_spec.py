"""The ``train`` section of params.yaml, shared by the train, evaluate and plot stages.

:class:`TrainParams` holds the whole recipe, with the nested sections
:class:`EarlyStoppingParams` and :class:`AugmentParams`; each field carries the rule its
value must pass. Every option list comes from the ``nn`` module that implements the
options, so a new activation or schedule is accepted here the moment ``nn`` has it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nn.init import SCHEMES as INITS
from nn.lenet import ACTIVATIONS, POOLS
from nn.loss import REDUCTIONS
from nn.optim import OPTIMIZERS
from nn.schedules import SCHEDULES
from nn.training import MONITORS
from stages.common.errors import StageError
from stages.common.param_rules import Bool, Choice, Float, Int, ListOf
from stages.common.param_sections import param


@dataclass(frozen=True)
class EarlyStoppingParams:
    """``train.early_stopping``: the arguments of ``nn.training.EarlyStopping``."""

    monitor: str = param(Choice(*MONITORS))
    patience: int = param(Int(min=0))
    min_delta: float = param(Float(min=0))


@dataclass(frozen=True)
class AugmentParams:
    """``train.augment``: the random distortions of training batches.

    The field names are ``nn.augment``'s keyword arguments, so
    ``nn.augment(images, rng, **dataclasses.asdict(augment))`` applies them.
    """

    max_shift: float = param(Float(min=0, max=14))
    max_rotation: float = param(Float(min=0, max=180))
    max_scale: float = param(Float(min=0, lt=1))
    elastic_alpha: float = param(Float(min=0, max=100))
    elastic_sigma: float = param(Float(gt=0, max=28))


@dataclass(frozen=True)
class TrainParams:
    """``train``: the whole training recipe (params.yaml comments each key)."""

    seed: int = param(Int(min=0))
    epochs: int = param(Int(min=1, max=10_000))
    batch_size: int = param(Int(min=1, max=60_000))
    workers: int = param(Int(min=1, max=64))
    init: str = param(Choice(*INITS))
    activation: str = param(Choice(*ACTIVATIONS))
    leaky_slope: float = param(Float(min=0, lt=1))
    pool: str = param(Choice(*POOLS))
    channels: tuple[int, ...] = param(ListOf(Int(min=1, max=1024), length=2))
    hidden: tuple[int, ...] = param(ListOf(Int(min=1, max=65_536), length=2))
    dropout: float = param(Float(min=0, lt=1))
    optimizer: str = param(Choice(*OPTIMIZERS))
    lr: float = param(Float(gt=0, max=10))
    loss_reduction: str = param(Choice(*REDUCTIONS))
    momentum: float = param(Float(min=0, lt=1))
    nesterov: bool = param(Bool())
    weight_decay: float = param(Float(min=0, lt=1))
    schedule: str = param(Choice(*SCHEDULES))
    warmup_epochs: float = param(Float(min=0))
    step_size: int = param(Int(min=1))
    gamma: float = param(Float(gt=0, max=1))
    min_lr: float = param(Float(min=0))
    early_stopping: EarlyStoppingParams
    augment: AugmentParams


def check_train_consistency(train: TrainParams) -> None:
    """Rules that tie two params together, checked before any work.

    Raises
    ------
    StageError
        One line naming both params, when they contradict each other.
    """
    if train.nesterov and train.optimizer == "sgd" and train.momentum == 0:
        raise StageError("params.yaml: train.nesterov needs train.momentum > 0 (got 0)")
    if train.min_lr > train.lr:
        raise StageError(f"params.yaml: train.min_lr must be <= train.lr ({train.lr}), got {train.min_lr}")
    if train.warmup_epochs >= train.epochs:
        raise StageError(f"params.yaml: train.warmup_epochs must be < train.epochs ({train.epochs}), "
                         f"got {train.warmup_epochs}")
