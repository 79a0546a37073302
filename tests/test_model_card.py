"""The model card: its sections, numbers and confused pairs, from given inputs."""

import numpy as np

from stages.common.model_card import model_card, most_confused


def confusion():
    counts = np.diag(np.full(10, 100))
    counts[4, 9], counts[9, 4], counts[7, 2], counts[3, 5], counts[5, 3] = 6, 3, 6, 2, 1
    return counts


def card(counts=None):
    return model_card(
        architecture={"channels": [8, 24], "hidden": [120, 84], "pool": "max", "activation": "relu",
                      "dropout": 0.0},
        params={"train.lr": 0.05, "train.channels": (8, 24), "train.nesterov": True,
                "train.augment.max_shift": 2.0, "train.augment.max_rotation": 10.0,
                "train.augment.max_scale": 0.1},
        preprocessing={"mean": 0.1307, "std": 0.3081},
        sizes={"train": 55000, "val": 5000, "test": 10000},
        training={"best_epoch": 35, "epochs_run": 40, "stop_reason": "completed 40 epochs",
                  "parameters": 88166, "val_loss": 0.0239, "val_accuracy": 0.994},
        test_loss=0.0171, confusion=confusion() if counts is None else counts)


def test_most_confused_pairs_largest_first_ties_in_order():
    assert most_confused(confusion()) == [(4, 9, 6), (7, 2, 6), (9, 4, 3), (3, 5, 2), (5, 3, 1)]
    assert most_confused(confusion(), limit=2) == [(4, 9, 6), (7, 2, 6)]
    assert most_confused(np.eye(3, dtype=int) * 5) == []


def test_card_holds_every_section_and_its_numbers():
    text = card()
    for heading in ["## Model", "## Data", "## Training params", "## Results", "## Errors per class (test)",
                    "## Most confused pairs (test)", "## Not trained for"]:
        assert heading in text
    assert "Parameters: 88,166." in text
    assert "55,000 training images, 5,000 validation images" in text and "10,000 test images" in text
    total = 1000 + 18
    assert f"| test | 0.0171 | {100 * 1000 / total:.2f}% | 18 of {total:,} |" in text
    assert "| validation (best epoch 35 of 40) | 0.0239 | 99.40% | 30 of 5,000 |" in text
    assert "| `train.channels` | 8, 24 |" in text and "| `train.nesterov` | true |" in text
    assert "| 4 | 106 | 6 | 94.34% | 97.09% |" in text  # 100 right of 106 fours; 3 nines read as 4
    assert "- a 4 read as 9: 6 images" in text and "- a 5 read as 3: 1 image\n" in text
    assert "Other scripts" in text and "letters" in text and "off-centre" in text
    assert "shifts up to 2 px, rotations up to 10° and scaling by up to 10% only" in text


def test_card_is_a_pure_function_of_its_inputs():
    assert card() == card()
    perfect = card(np.diag(np.full(10, 100)))
    assert "- none: every test image was classified correctly" in perfect


def test_card_without_validation_says_the_last_epoch_was_kept_and_shows_no_validation_row():
    text = model_card(
        architecture={"channels": [6, 16], "hidden": [120, 84], "pool": "avg", "activation": "sigmoid"},
        params={"train.lr": 0.0015}, preprocessing={"mean": 0.0, "std": 256 / 255},
        sizes={"train": 60000, "val": 0, "test": 10000},
        training={"best_epoch": 50, "epochs_run": 50, "stop_reason": "completed 50 epochs", "parameters": 61706},
        test_loss=0.06, confusion=confusion())
    assert "60,000 training images, no validation split (the last epoch's weights are kept), 10,000 test" in text
    assert "| validation" not in text
    assert "Training stopped: completed 50 epochs; epoch 50 kept." in text
