"""The training loop: early stopping, restoring the best weights, divergence, determinism."""

import functools

import numpy as np
import pytest

import nn
from nn.training import EarlyStopping, Trainer, TrainingDiverged, evaluate


def test_early_stopping_tracks_the_best_loss_and_counts_patience():
    stopper = EarlyStopping(monitor="val_loss", patience=2, min_delta=0.01)
    improved = [stopper.update(epoch, {"val_loss": loss})
                for epoch, loss in enumerate([1.0, 0.5, 0.495, 0.6], start=1)]
    assert improved == [True, True, False, False]  # 0.495 beats 0.5 by less than min_delta
    assert stopper.best == 0.5 and stopper.best_epoch == 2 and stopper.should_stop


def test_early_stopping_on_accuracy_wants_it_higher():
    stopper = EarlyStopping(monitor="val_accuracy", patience=1)
    assert stopper.update(1, {"val_accuracy": 0.9})
    assert not stopper.update(2, {"val_accuracy": 0.8})
    assert stopper.best_epoch == 1 and stopper.should_stop


def test_patience_zero_never_stops_but_tracks_the_best():
    stopper = EarlyStopping(patience=0)
    for epoch, loss in enumerate([1.0, 2.0, 3.0, 4.0], start=1):
        stopper.update(epoch, {"val_loss": loss})
    assert not stopper.should_stop and stopper.best_epoch == 1


def test_early_stopping_state_round_trip():
    stopper = EarlyStopping(patience=3)
    stopper.update(1, {"val_loss": 1.0})
    stopper.update(2, {"val_loss": 2.0})
    copy = EarlyStopping(patience=3)
    copy.load_state_dict(stopper.state_dict())
    assert copy.state_dict() == stopper.state_dict() == {"best": 1.0, "best_epoch": 1, "epochs_without_improvement": 1}


def blobs(n: int, rng: np.random.Generator):
    """A learnable toy problem: each class is a bright square at its own place."""
    labels = rng.integers(0, 10, n)
    images = rng.normal(0, 0.3, (n, 1, 28, 28)).astype(np.float32)
    for c in range(10):
        r, col = divmod(c, 4)
        images[labels == c, 0, 2 + 6 * r:7 + 6 * r, 2 + 6 * col:7 + 6 * col] += 2.0
    return images, labels


def make_trainer(seed=0, lr=0.01, patience=0, min_delta=0.0, augment=None):
    rng = np.random.default_rng(seed)
    model = nn.lenet5(channels=(4, 8), hidden=(32, 16), rng=rng)
    optimizer = nn.make_optimizer("sgd", dict(model.named_parameters()), lr=lr, momentum=0.9,
                                  nesterov=False, weight_decay=0.0)
    return Trainer(model=model, optimizer=optimizer, lr_at=lambda epoch: lr, rng=rng, batch_size=32,
                   early_stopping=EarlyStopping(patience=patience, min_delta=min_delta), augment=augment)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(123)
    return blobs(320, rng), blobs(160, rng)


def test_training_learns_the_toy_problem(data):
    train, val = data
    trainer = make_trainer()
    state = trainer.fit(train, val, epochs=4)
    assert state.stop_reason == "completed 4 epochs" and len(state.history) == 4
    assert state.history[-1]["val_accuracy"] > 0.9
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_the_best_epochs_weights_are_restored(data):
    train, val = data
    trainer = make_trainer(lr=0.3)  # a high lr makes validation loss bounce
    snapshots = []
    state = trainer.fit(train, val, epochs=5, on_epoch_end=lambda s: snapshots.append(trainer.model.state_dict()))
    losses = [row["val_loss"] for row in state.history]
    best = int(np.argmin(losses))
    assert trainer.early_stopping.best_epoch == best + 1
    restored = trainer.model.state_dict()
    for name, value in snapshots[best].items():
        np.testing.assert_array_equal(restored[name], value)
    loss, _, _ = evaluate(trainer.model, *val)
    assert loss == pytest.approx(losses[best], rel=1e-6)


def test_early_stopping_ends_the_run(data):
    train, val = data
    trainer = make_trainer(patience=2, min_delta=100.0)  # nothing can improve by 100
    state = trainer.fit(train, val, epochs=10)
    assert state.epochs_done == 3 and state.stop_reason.startswith("early stopping")
    assert trainer.early_stopping.best_epoch == 1


def test_a_non_finite_loss_stops_at_once_naming_epoch_batch_and_lr(data):
    (images, labels), val = data
    images = images.copy()
    images[40] = np.nan  # lands in some batch of the first epoch
    trainer = make_trainer()
    with pytest.raises(TrainingDiverged) as error:
        trainer.fit((images, labels), val, epochs=2)
    assert error.value.epoch == 0 and "epoch 1, batch" in str(error.value) and "lr 0.01" in str(error.value)


def test_same_seed_same_weights_bit_for_bit(data):
    train, val = data
    augment = functools.partial(nn.augment, max_shift=2.0, max_rotation=10.0, fill=0.0)
    results = []
    for _ in range(2):
        trainer = make_trainer(seed=7, augment=augment)
        state = trainer.fit(train, val, epochs=2)
        results.append((trainer.model.state_dict(), state.history))
    (weights_a, history_a), (weights_b, history_b) = results
    assert history_a == history_b
    for name in weights_a:
        assert weights_a[name].tobytes() == weights_b[name].tobytes()


def test_training_monitors_keep_the_last_epoch_and_stop_on_the_reports_threshold_rule():
    # The report's idea: stop once training accuracy gains less than a threshold (patience 1).
    stopper = EarlyStopping(monitor="train_accuracy", patience=1, min_delta=0.01)
    gains = [stopper.update(epoch, {"train_accuracy": accuracy})
             for epoch, accuracy in enumerate([0.90, 0.95, 0.955], start=1)]
    assert gains == [True, True, False] and stopper.should_stop and not stopper.keeps_best
    loss = EarlyStopping(monitor="train_loss")
    assert loss.update(1, {"train_loss": 1.0}) and loss.update(2, {"train_loss": 0.5})  # loss should fall
    assert EarlyStopping(monitor="val_loss").keeps_best


def test_without_validation_the_history_has_no_val_figures_and_the_last_epoch_is_kept(data):
    train, _ = data
    trainer = make_trainer(lr=0.3)
    trainer.early_stopping = EarlyStopping(monitor="train_accuracy")
    snapshots = []
    state = trainer.fit(train, None, epochs=3, on_epoch_end=lambda s: snapshots.append(trainer.model.state_dict()))
    assert [set(row) for row in state.history] == [{"epoch", "train_loss", "train_accuracy", "lr"}] * 3
    assert state.kept_epoch == 3 and state.best_weights is None
    for name, value in snapshots[-1].items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name], value)


def test_a_training_monitor_with_validation_still_keeps_the_last_epoch(data):
    train, val = data
    trainer = make_trainer(lr=0.3)
    trainer.early_stopping = EarlyStopping(monitor="train_loss")
    state = trainer.fit(train, val, epochs=3)
    assert "val_loss" in state.history[0] and state.kept_epoch == 3


def test_a_validation_monitor_without_validation_data_is_refused(data):
    train, (images, labels) = data
    for val in (None, (images[:0], labels[:0])):
        with pytest.raises(ValueError, match="monitors val_loss, but there is no validation data"):
            make_trainer().fit(train, val, epochs=1)
