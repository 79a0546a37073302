"""The training loop: epochs of shuffled mini-batches, validation, early stopping.

Which epoch's weights are kept: with a validation monitor (``val_loss``, ``val_accuracy``),
the best epoch's; with a training monitor (``train_loss``, ``train_accuracy``: what the
original tutorial watched, having no validation split) the last epoch's, as the tutorial
tested its final weights. A validation monitor needs validation data.

Pure NumPy and no files: the caller passes data in and receives each finished epoch's
state through ``on_epoch_end`` (the pipeline saves a checkpoint there). Everything the
loop needs to continue after an interruption lives in :class:`TrainState`, so that a run
resumed from a saved state ends bit-identical to one that never stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nn.loss import SoftmaxCrossEntropy
from nn.module import Module

VALIDATION_MONITORS = ("val_loss", "val_accuracy")
MONITORS = (*VALIDATION_MONITORS, "train_loss", "train_accuracy")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: more steps would only spread garbage."""

    def __init__(self, epoch: int, batch: int, lr: float, loss: float):
        self.epoch, self.batch, self.lr, self.loss = epoch, batch, lr, loss
        super().__init__(
            f"training diverged: loss is {loss} at epoch {epoch + 1}, batch {batch + 1} "
            f"(lr {lr:.6g}); try a smaller train.lr, a warmup (train.warmup_epochs) "
            "or another train.init"
        )


@dataclass
class EarlyStopping:
    """Stop when the monitored metric has not improved for ``patience`` epochs.

    An improvement must beat the best value so far by more than ``min_delta``: with
    ``patience=1`` and a training monitor this is the original tutorial's idea of stopping
    once the gain between two epochs falls below a threshold. ``patience == 0`` switches
    stopping off but still tracks the best epoch, whose weights the trainer restores at the
    end when the monitor is a validation figure (:attr:`keeps_best`).
    """

    monitor: str = "val_loss"
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int = -1
    epochs_without_improvement: int = 0

    def __post_init__(self):
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {', '.join(MONITORS)}, got {self.monitor!r}")

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Record one epoch's metrics; return True when it is the new best epoch."""
        value = metrics[self.monitor]
        if self.best is None or self._score(value) > self._score(self.best) + self.min_delta:
            self.best, self.best_epoch, self.epochs_without_improvement = value, epoch, 0
            return True
        self.epochs_without_improvement += 1
        return False

    def _score(self, value: float) -> float:
        """Loss should fall, accuracy rise: compare both as 'higher is better'."""
        return -value if self.monitor.endswith("_loss") else value

    @property
    def keeps_best(self) -> bool:
        """Whether the best epoch's weights are kept (a validation monitor), not the last's."""
        return self.monitor in VALIDATION_MONITORS

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.epochs_without_improvement >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch,
                "epochs_without_improvement": self.epochs_without_improvement}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.epochs_without_improvement = state["epochs_without_improvement"]


@dataclass
class TrainState:
    """Everything a run needs to continue exactly where it stopped.

    Attributes
    ----------
    epochs_done : int
        Completed epochs.
    history : list of dict
        One dict per completed epoch (epoch, losses, accuracies, lr). No wall-clock time:
        the history is a pipeline output, and must be the same on every rerun.
    best_weights : dict[str, np.ndarray] or None
        ``state_dict`` of the best epoch so far, by a validation monitor (else None).
    stop_reason : str or None
        Why training ended, once it has.
    kept_epoch : int
        The epoch (1-based) whose weights the model holds once training ended; 0 before.
    """

    epochs_done: int = 0
    history: list[dict] = field(default_factory=list)
    best_weights: dict[str, np.ndarray] | None = None
    stop_reason: str | None = None
    kept_epoch: int = 0


def evaluate(model: Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000):
    """Mean cross-entropy, accuracy and predictions of ``model`` in eval mode.

    Parameters
    ----------
    model : Module
    images : (N, 1, H, W) float
    labels : (N,) int
    batch_size : int, default 1000

    Returns
    -------
    loss : float
    accuracy : float
    predictions : (N,) int64
    """
    was_training = model.training
    model.eval()
    loss_fn = SoftmaxCrossEntropy()
    total_loss = 0.0
    predictions = np.empty(len(labels), dtype=np.int64)
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        logits = model.forward(images[start:stop])
        loss, _ = loss_fn(logits, labels[start:stop])
        total_loss += float(loss) * (stop - start)
        predictions[start:stop] = logits.argmax(axis=1)
    model.train(was_training)
    accuracy = float((predictions == labels).mean()) if len(labels) else float("nan")
    return total_loss / max(len(labels), 1), accuracy, predictions


@dataclass
class Trainer:
    """Mini-batch training of ``model`` with ``optimizer`` and a learning-rate function.

    Parameters
    ----------
    model : Module
    optimizer : Optimizer
        Its ``lr`` is set before each step.
    lr_at : callable
        Learning rate as a pure function of the (fractional) epoch, called each step.
    rng : numpy.random.Generator
        The one Generator for shuffling, augmentation and dropout.
    batch_size : int
    early_stopping : EarlyStopping
    augment : callable, optional
        ``f(images, rng) -> images`` applied to each training batch, by the model's
        ``forward_backward`` (a ``DataParallel`` model augments each shard in its own
        process, so ``f`` must then be picklable, e.g. a ``functools.partial`` of
        ``nn.augment``).
    eval_batch_size : int, default 1000
    on_batch : callable, optional
        ``f(batch_index, batches, loss, accuracy)`` for progress display.
    loss_fn : SoftmaxCrossEntropy, default SoftmaxCrossEntropy()
        The training loss; ``SoftmaxCrossEntropy(reduction="sum")`` makes the gradient,
        hence the step at a given learning rate, ``batch_size`` times larger. The losses
        reported (``on_batch``, history) are means per image either way.
    """

    model: Module
    optimizer: object
    lr_at: Callable[[float], float]
    rng: np.random.Generator
    batch_size: int
    early_stopping: EarlyStopping
    augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None
    eval_batch_size: int = 1000
    on_batch: Callable[[int, int, float, float], None] | None = None
    loss_fn: SoftmaxCrossEntropy = field(default_factory=SoftmaxCrossEntropy)

    def train_epoch(self, epoch: int, images: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
        """One pass over a fresh permutation of the data.

        Parameters
        ----------
        epoch : int
            0-based; with the batch index it gives the learning rate's fractional epoch.
        images : (N, 1, H, W) float32
        labels : (N,) int

        Returns
        -------
        loss : float
            Mean loss per image.
        accuracy : float

        Raises
        ------
        TrainingDiverged
            If a batch's loss is NaN or infinite.
        """
        self.model.train()
        # Nothing upstream of the first layer learns: skip its input gradient (a product and its adds).
        self.model.input_grad = False
        order = self.rng.permutation(len(labels))
        batches = math.ceil(len(labels) / self.batch_size)
        loss_sum, correct, seen = 0.0, 0, 0
        for index in range(batches):
            batch = order[index * self.batch_size:(index + 1) * self.batch_size]
            x, y = images[batch], labels[batch]
            self.optimizer.lr = self.lr_at(epoch + index / batches)
            # The model augments (a DataParallel model: each process its own shard).
            loss, logits = self.model.forward_backward(x, y, self.loss_fn, augment=self.augment, rng=self.rng)
            if not math.isfinite(loss):
                raise TrainingDiverged(epoch, index, self.optimizer.lr, loss)
            self.optimizer.step(dict(self.model.named_gradients()))
            loss_sum += self.loss_fn.summed(float(loss), len(batch))  # per image whatever the reduction
            correct += int((logits.argmax(axis=1) == y).sum())
            seen += len(batch)
            if self.on_batch is not None:
                self.on_batch(index, batches, loss_sum / seen, correct / seen)
        return loss_sum / seen, correct / seen

    def fit(self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray] | None,
            epochs: int, state: TrainState | None = None,
            on_epoch_end: Callable[[TrainState], None] | None = None) -> TrainState:
        """Train from ``state`` (or from scratch) until ``epochs`` or early stopping.

        At the end, with a validation monitor, the best epoch's weights are loaded into the
        model; otherwise it keeps the last epoch's (``state.kept_epoch`` says which).

        Parameters
        ----------
        train : (images, labels)
        val : (images, labels) or None
            None (or no images): no validation, and no ``val_*`` figures in the history.
        epochs : int
        state : TrainState, optional
            Where to resume; ``None`` starts from scratch.
        on_epoch_end : callable, optional
            ``f(state)`` after each epoch (the pipeline saves a checkpoint there).

        Returns
        -------
        TrainState
            The final state.

        Raises
        ------
        ValueError
            If early stopping monitors a validation figure and there is no validation data.
        """
        validating = val is not None and len(val[1]) > 0
        if self.early_stopping.keeps_best and not validating:
            raise ValueError(f"early stopping monitors {self.early_stopping.monitor}, but there is no "
                             "validation data; monitor train_loss or train_accuracy")
        state = state or TrainState()
        while state.stop_reason is None and state.epochs_done < epochs:
            epoch = state.epochs_done
            lr = self.lr_at(float(epoch))
            train_loss, train_accuracy = self.train_epoch(epoch, *train)
            row = {"epoch": epoch + 1, "train_loss": train_loss, "train_accuracy": train_accuracy}
            if validating:
                row["val_loss"], row["val_accuracy"], _ = evaluate(self.model, *val, batch_size=self.eval_batch_size)
            row["lr"] = lr
            state.history.append(row)
            state.epochs_done = epoch + 1
            if self.early_stopping.update(epoch + 1, row) and self.early_stopping.keeps_best:
                state.best_weights = self.model.state_dict()
            if self.early_stopping.should_stop:
                es = self.early_stopping
                state.stop_reason = (f"early stopping: {es.monitor} did not improve by more than "
                                     f"{es.min_delta} for {es.patience} epochs")
            elif state.epochs_done >= epochs:
                state.stop_reason = f"completed {epochs} epochs"
            if on_epoch_end is not None:
                on_epoch_end(state)
        if state.best_weights is not None:
            self.model.load_state_dict(state.best_weights)
        state.kept_epoch = self.early_stopping.best_epoch if self.early_stopping.keeps_best else state.epochs_done
        return state
