"""Stage train: fit LeNet-5 on the training split, choosing the epoch on validation.

Writes the model (models/: weights, architecture, the input normalization) and the kept
epoch's scores, how the run went and its history (metrics/), as dvc.yaml declares. With an
empty validation split (``normalize.val_size: 0``, the tutorial's setup) every validation
figure is absent, not faked, and the last epoch is kept. A checkpoint after every epoch
(checkpoints/train.npz, outside DVC's outputs) lets an interrupted run resume exactly.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import typer

import nn
from nn.parallel import retain_freed_memory
from nn.training import VALIDATION_MONITORS, EarlyStopping, Trainer, TrainingDiverged
from stages.common import checkpoint
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, check_run, read_split
from stages.common.errors import LenetError
from stages.common.model_files import blank_value, write_model
from stages.common.outputs import staged_outputs, write_json
from stages.common.params import TrainParams, dotted, load_params
from stages.common.paths import (CHECKPOINT, HISTORY, MODELS, PARAMS, TRAIN_METRICS, TRAIN_RUN, TRAIN_SPLIT,
                                 VAL_SPLIT)
from stages.common.progress import EpochProgress, peak_memory_line

NN_SOURCES = sorted(Path(nn.__file__).parent.rglob("*.py"))  # code that shapes the run
OUTPUTS = (MODELS, HISTORY, TRAIN_METRICS, TRAIN_RUN)  # as dvc.yaml declares them: put in place together
NUM_CLASSES = 10
# A network whose kept accuracy (validation, else training) is within 1.5x of guessing (0.15 for 10 classes)
# has learned nothing: too large a learning rate saturates sigmoid/tanh units without ever
# making the loss NaN. Even one epoch on a 1,500-image subset reaches > 0.5, so no real
# run comes near this; a threshold in code, not params, because it is a sanity check.
CHANCE_FACTOR = 1.5
# No wall-clock column: a tracked output must be a pure function of code, data and params
# (the console shows each epoch's time instead). Without validation the val_* cells are
# empty: absent, not faked, and the columns stay, so DVC's loss and accuracy plots (which
# name them) still draw the training curves, also beside runs that had validation.
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")

app = typer.Typer(add_completion=False, help=__doc__)


def model_config(train: TrainParams) -> dict:
    """The ``nn.lenet5`` keyword arguments: all a saved model needs to be rebuilt."""
    architecture = train.model_dump(include={"activation", "leaky_slope", "pool", "channels", "hidden", "dropout"})
    return architecture | {"num_classes": NUM_CLASSES}


def history_csv(history: list[dict]) -> str:
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(str(row["epoch"]) if c == "epoch" else f"{row[c]:.6g}" if c in row else ""
                              for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def build_trainer(train: TrainParams, rng: np.random.Generator, fill: float):
    """Model, optimizer, schedule, early stopping and augmentation, all from the ``train`` params."""
    model = nn.lenet5(**model_config(train), init=train.init, rng=rng)
    if train.workers > 1:
        model = nn.DataParallel(model, train.workers)
    optimizer = nn.make_optimizer(
        train.optimizer, dict(model.named_parameters()), lr=train.lr,
        momentum=train.momentum, nesterov=train.nesterov, weight_decay=train.weight_decay)
    lr_at = functools.partial(
        nn.learning_rate, base_lr=train.lr, schedule=train.schedule,
        total_epochs=train.epochs, warmup_epochs=train.warmup_epochs,
        step_size=train.step_size, gamma=train.gamma, min_lr=train.min_lr)
    # With every effect at 0, nn.augment returns its input and draws no random numbers.
    augment = functools.partial(nn.augment, fill=fill, **train.augment.model_dump())
    early_stopping = EarlyStopping(**train.early_stopping.model_dump())
    return Trainer(model=model, optimizer=optimizer, lr_at=lr_at, rng=rng, batch_size=train.batch_size,
                   early_stopping=early_stopping, augment=augment, loss_fn=nn.SoftmaxCrossEntropy(train.loss_reduction))


def write_outputs(staged, trainer: Trainer, state, config: dict, preprocessing: dict) -> None:
    """Model, history and metrics into the staging area (put in place together later).

    ``train.json`` holds the numbers ``dvc exp show`` compares: the kept epoch's (``best_epoch``,
    the best by validation, else the last) scores and the epochs run; text and constants (why it
    stopped, the parameter count) go to ``train_run.json`` beside it, for the model card.
    """
    kept = state.history[state.kept_epoch - 1]
    write_model(staged.path(MODELS), trainer.model, config, preprocessing)
    staged.path(HISTORY).write_text(history_csv(state.history))
    write_json(staged.path(TRAIN_METRICS), {key: kept[key] for key in (
        "train_loss", "train_accuracy", "val_loss", "val_accuracy") if key in kept}
        | {"best_epoch": kept["epoch"], "epochs_run": state.epochs_done})
    write_json(staged.path(TRAIN_RUN), {
        "stop_reason": state.stop_reason,
        "parameters": int(sum(p.size for p in trainer.model.parameters())),
    })


def check_learned(kept: dict) -> None:
    """Raise LenetError if the kept epoch's accuracy is at chance level (see CHANCE_FACTOR)."""
    split = "validation" if "val_accuracy" in kept else "training"
    accuracy = kept["val_accuracy" if split == "validation" else "train_accuracy"]
    chance = 1 / NUM_CLASSES
    if accuracy <= CHANCE_FACTOR * chance:
        raise LenetError(
            f"training learned nothing: {split} accuracy {accuracy:.4f} (kept epoch "
            f"{kept['epoch']}) is at chance level (<= {CHANCE_FACTOR * chance:.2f} for {NUM_CLASSES} "
            "classes); try a smaller train.lr or another train.init")


@app.command()
def main() -> None:
    """Train LeNet-5 with the ``train`` params of params.yaml."""
    params = load_params("train")
    train = params.train
    retain_freed_memory()  # steps free and reallocate megabytes: keep them, don't refault them
    train_split, val_split = read_split(TRAIN_SPLIT), read_split(VAL_SPLIT)
    check_run(val_split, train_split.metadata[RUN_KEY], TRAIN_SPLIT, rerun="normalize")
    if not len(val_split) and train.early_stopping.monitor in VALIDATION_MONITORS:
        raise LenetError(f"{PARAMS}: train.early_stopping.monitor is {train.early_stopping.monitor}, but {VAL_SPLIT} "
                         "is empty (normalize.val_size: 0); monitor train_loss or train_accuracy")
    validation = (val_split.images, val_split.labels) if len(val_split) else None
    mean, std = train_split.metadata["mean"], train_split.metadata["std"]

    def fresh():
        rng = np.random.default_rng(train.seed)
        return rng, build_trainer(train, rng, fill=blank_value(mean, std))

    run_fingerprint = checkpoint.fingerprint(dotted(train, "train"), [TRAIN_SPLIT, VAL_SPLIT, *NN_SOURCES])
    rng, trainer, state = checkpoint.resume(CHECKPOINT, run_fingerprint, fresh)
    progress = EpochProgress(train.epochs)

    def on_epoch_end(state) -> None:
        progress.epoch_done(state.history[-1])
        checkpoint.save_checkpoint(CHECKPOINT, run_fingerprint, trainer, rng, state)

    with staged_outputs("train", OUTPUTS, params) as staged:
        try:
            state = trainer.fit((train_split.images, train_split.labels), validation,
                                epochs=train.epochs, state=state, on_epoch_end=on_epoch_end)
            memory = peak_memory_line(getattr(trainer.model, "worker_pids", []))  # while the workers live
            kept = state.history[state.kept_epoch - 1]
            check_learned(kept)
            write_outputs(staged, trainer, state, model_config(train),
                          {"mean": mean, "std": std, RUN_KEY: train_split.metadata[RUN_KEY]})
        except TrainingDiverged as error:
            raise LenetError(str(error)) from None
        finally:
            trainer.model.close()
    CHECKPOINT.unlink(missing_ok=True)
    print(memory, file=sys.stderr)
    split = "val" if validation else "train"
    print(f"{state.stop_reason}; kept epoch {kept['epoch']}: {split} accuracy {kept[f'{split}_accuracy']:.4f}, "
          f"{split} loss {kept[f'{split}_loss']:.4f}")


if __name__ == "__main__":
    run(app)
