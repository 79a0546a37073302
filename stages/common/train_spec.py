"""The rules for every ``train.*`` param, shared by the train, evaluate and plot stages.

Every option list comes from the ``nn`` module that implements the options, so a new
activation or schedule is accepted here the moment ``nn`` has it.
"""

from __future__ import annotations

from nn.init import SCHEMES as INITS
from nn.lenet import ACTIVATIONS, POOLS
from nn.loss import REDUCTIONS
from nn.optim import OPTIMIZERS
from nn.schedules import SCHEDULES
from nn.training import MONITORS
from stages.common.errors import StageError
from stages.common.params import Bool, Choice, Float, Int, ListOf, StageParams

AUGMENT_SPEC = {
    "train.augment.max_shift": Float(min=0, max=14),
    "train.augment.max_rotation": Float(min=0, max=180),
    "train.augment.max_scale": Float(min=0, lt=1),
    "train.augment.elastic_alpha": Float(min=0, max=100),
    "train.augment.elastic_sigma": Float(gt=0, max=28),
}

TRAIN_SPEC = {
    "train.seed": Int(min=0),
    "train.epochs": Int(min=1, max=10_000),
    "train.batch_size": Int(min=1, max=60_000),
    "train.workers": Int(min=1, max=64),
    "train.init": Choice(*INITS),
    "train.activation": Choice(*ACTIVATIONS),
    "train.leaky_slope": Float(min=0, lt=1),
    "train.pool": Choice(*POOLS),
    "train.channels": ListOf(Int(min=1, max=1024), length=2),
    "train.hidden": ListOf(Int(min=1, max=65_536), length=2),
    "train.dropout": Float(min=0, lt=1),
    "train.optimizer": Choice(*OPTIMIZERS),
    "train.lr": Float(gt=0, max=10),
    "train.loss_reduction": Choice(*REDUCTIONS),
    "train.momentum": Float(min=0, lt=1),
    "train.nesterov": Bool(),
    "train.weight_decay": Float(min=0, lt=1),
    "train.schedule": Choice(*SCHEDULES),
    "train.warmup_epochs": Float(min=0),
    "train.step_size": Int(min=1),
    "train.gamma": Float(gt=0, max=1),
    "train.min_lr": Float(min=0),
    "train.early_stopping.monitor": Choice(*MONITORS),
    "train.early_stopping.patience": Int(min=0),
    "train.early_stopping.min_delta": Float(min=0),
    **AUGMENT_SPEC,
}


def check_train_consistency(params: StageParams) -> None:
    """Rules that tie two params together, checked before any work."""
    if params["train.nesterov"] and params["train.optimizer"] == "sgd" and params["train.momentum"] == 0:
        raise StageError("params.yaml: train.nesterov needs train.momentum > 0 (got 0)")
    if params["train.min_lr"] > params["train.lr"]:
        raise StageError(f"params.yaml: train.min_lr must be <= train.lr ({params['train.lr']}), "
                         f"got {params['train.min_lr']}")
    if params["train.warmup_epochs"] >= params["train.epochs"]:
        raise StageError(f"params.yaml: train.warmup_epochs must be < train.epochs "
                         f"({params['train.epochs']}), got {params['train.warmup_epochs']}")


def augment_kwargs(params: StageParams) -> dict[str, float]:
    """``nn.augment.augment`` keyword arguments from the ``train.augment`` section."""
    return params.section("train.augment")
