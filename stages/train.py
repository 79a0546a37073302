"""Stage train: fit LeNet-5 on the training split, choosing the epoch on validation.

Reads data/prepared/{train,val}.parquet and the ``train`` params; writes
models/model.npz + models/model.json (weights and architecture), models/preprocessing.json
(the mean and std inputs must be normalized with), metrics/train.json and metrics/history.csv.
A checkpoint after every epoch (checkpoints/train.npz, outside DVC's outputs) lets an
interrupted run resume exactly where it stopped.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import typer

import nn
from nn.parallel import retain_freed_memory
from nn.training import EarlyStopping, Trainer, TrainingDiverged
from stages.common import checkpoint
from stages.common.atomic import write_json, write_text
from stages.common.cli import run
from stages.common.dataset import RUN_KEY, blank_value, check_same_run, read_split
from stages.common.errors import StageError, first_line
from stages.common.model_files import MODELS, write_model
from stages.common.outputs import staged_outputs
from stages.common.param_sections import dotted
from stages.common.params import StageParams, load_stage_params
from stages.common.progress import EpochProgress
from stages.common.train_spec import TrainParams, check_train_consistency

DATA = Path("data/prepared")
METRICS = Path("metrics/train.json")
HISTORY = Path("metrics/history.csv")
CHECKPOINT = Path("checkpoints/train.npz")
NN_SOURCES = sorted(Path(nn.__file__).parent.glob("*.py"))  # code that shapes the run
OUTPUTS = (MODELS, HISTORY, METRICS)  # as dvc.yaml declares them: swapped in together
NUM_CLASSES = 10
# A network whose best validation accuracy is within 1.5x of guessing (0.15 for 10 classes)
# has learned nothing: too large a learning rate saturates sigmoid/tanh units without ever
# making the loss NaN. Even one epoch on a 1,500-image subset reaches > 0.5, so no real
# run comes near this; a threshold in code, not params, because it is a sanity check.
CHANCE_FACTOR = 1.5
# No wall-clock column: a tracked output must be a pure function of code, data and params
# (the console shows each epoch's time instead).
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr")


@dataclass(frozen=True)
class Params(StageParams):
    """What this stage reads from params.yaml: the whole ``train`` section."""

    train: TrainParams


app = typer.Typer(add_completion=False, help=__doc__)


def model_config(train: TrainParams) -> dict:
    """The ``nn.lenet5`` keyword arguments: all a saved model needs to be rebuilt."""
    return {
        "activation": train.activation,
        "leaky_slope": train.leaky_slope,
        "pool": train.pool,
        "channels": list(train.channels),
        "hidden": list(train.hidden),
        "dropout": train.dropout,
        "num_classes": NUM_CLASSES,
    }


def history_csv(history: list[dict]) -> str:
    lines = [",".join(HISTORY_COLUMNS)]
    for row in history:
        lines.append(",".join(str(row["epoch"]) if c == "epoch" else f"{row[c]:.6g}" for c in HISTORY_COLUMNS))
    return "\n".join(lines) + "\n"


def build_trainer(train: TrainParams, rng: np.random.Generator, fill: float, on_batch=None):
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
    augment = functools.partial(nn.augment, fill=fill, **asdict(train.augment))
    early_stopping = EarlyStopping(**asdict(train.early_stopping))
    return Trainer(model=model, optimizer=optimizer, lr_at=lr_at, rng=rng,
                   batch_size=train.batch_size, early_stopping=early_stopping,
                   augment=augment, on_batch=on_batch,
                   loss_fn=nn.SoftmaxCrossEntropy(train.loss_reduction))


def write_outputs(staged, trainer: Trainer, state, config: dict, preprocessing: dict) -> None:
    """Model, metrics and history, into the staging area (swapped in together later)."""
    best = state.history[trainer.early_stopping.best_epoch - 1]
    write_model(staged.path(MODELS), trainer.model, config, preprocessing)
    write_text(staged.path(HISTORY), history_csv(state.history))
    write_json(staged.path(METRICS), {
        "best_epoch": best["epoch"],
        "epochs_run": state.epochs_done,
        "stop_reason": state.stop_reason,
        "train_loss": best["train_loss"],
        "train_accuracy": best["train_accuracy"],
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "parameters": int(sum(p.size for p in trainer.model.parameters())),
    })


def check_learned(best: dict) -> None:
    """Raise StageError if the best validation accuracy is at chance level (see CHANCE_FACTOR)."""
    chance = 1 / NUM_CLASSES
    if best["val_accuracy"] <= CHANCE_FACTOR * chance:
        raise StageError(
            f"training learned nothing: best validation accuracy {best['val_accuracy']:.4f} (epoch "
            f"{best['epoch']}) is at chance level (<= {CHANCE_FACTOR * chance:.2f} for {NUM_CLASSES} "
            "classes); try a smaller train.lr or another train.init; the previous model is kept")


def close(trainer: Trainer) -> None:
    """Stop the worker processes of a data-parallel model (nothing for a plain one)."""
    if isinstance(trainer.model, nn.DataParallel):
        trainer.model.close()


def matching_checkpoint(run_fingerprint: str) -> bool:
    """Whether CHECKPOINT exists and belongs to this run; if it exists but not, says why."""
    if not CHECKPOINT.exists():
        return False
    stored = checkpoint.read_fingerprint(CHECKPOINT)
    if stored is None:
        print(f"ignoring {CHECKPOINT}: unreadable (corrupt or truncated); starting over", file=sys.stderr)
    elif stored != run_fingerprint:
        print(f"ignoring {CHECKPOINT}: it belongs to other params, data or code; starting over",
              file=sys.stderr)
    return stored == run_fingerprint


@app.command()
def main() -> None:
    """Train LeNet-5 with the ``train`` params of params.yaml."""
    params = load_stage_params("train", Params)
    train = params.train
    check_train_consistency(train)
    retain_freed_memory()  # steps free and reallocate megabytes: keep them, don't refault them
    train_split, val_split = read_split(DATA / "train.parquet"), read_split(DATA / "val.parquet")
    check_same_run(train_split, val_split)
    mean, std = train_split.metadata["mean"], train_split.metadata["std"]
    background = blank_value(mean, std)

    def fresh():
        rng = np.random.default_rng(train.seed)
        return rng, build_trainer(train, rng, fill=background, on_batch=progress.on_batch)

    progress = EpochProgress(train.epochs)
    run_fingerprint = checkpoint.fingerprint(
        dotted(train, "train"), [DATA / "train.parquet", DATA / "val.parquet", *NN_SOURCES])
    with staged_outputs("train", OUTPUTS, params) as staged:
        rng, trainer = fresh()
        try:
            state = None
            if matching_checkpoint(run_fingerprint):
                try:
                    state = checkpoint.load_checkpoint(CHECKPOINT, model=trainer.model, optimizer=trainer.optimizer,
                                                       rng=rng, early_stopping=trainer.early_stopping)
                    progress.epochs_done = state.epochs_done
                    print(f"resuming from {CHECKPOINT} after epoch {state.epochs_done}", file=sys.stderr)
                except Exception as error:  # noqa: BLE001 - any damage: one line, and start over
                    print(f"ignoring {CHECKPOINT}: corrupt ({first_line(error)}); starting over", file=sys.stderr)
                    close(trainer)  # the failed load may have filled some of its state
                    rng, trainer = fresh()

            def on_epoch_end(state) -> None:
                progress.epoch_done(state.history[-1])
                checkpoint.save_checkpoint(CHECKPOINT, run_fingerprint=run_fingerprint, model=trainer.model,
                                           optimizer=trainer.optimizer, rng=rng, state=state,
                                           early_stopping=trainer.early_stopping)

            with progress:
                state = trainer.fit((train_split.images, train_split.labels),
                                    (val_split.images, val_split.labels),
                                    epochs=train.epochs, state=state, on_epoch_end=on_epoch_end)
            best = state.history[trainer.early_stopping.best_epoch - 1]
            check_learned(best)
            write_outputs(staged, trainer, state, model_config(train),
                          {"mean": mean, "std": std, RUN_KEY: train_split.metadata[RUN_KEY]})
        except TrainingDiverged as error:
            raise StageError(str(error)) from None
        finally:
            close(trainer)
    CHECKPOINT.unlink(missing_ok=True)
    print(f"{state.stop_reason}; best epoch {best['epoch']}: val accuracy {best['val_accuracy']:.4f}, "
          f"val loss {best['val_loss']:.4f}")


if __name__ == "__main__":
    run(app)
