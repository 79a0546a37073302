"""What ``lenet studies`` runs: the report's studies, its ideas and an ablation, row by row.

Every run but one starts from the report's setup, the Hydra preset ``preset/tutorial.yaml``
(``-S +preset=tutorial``), and changes the keys its row lists. The report is
"基于numpy的卷积神经网络手写数字识别" (2024); its figures are quoted beside each row.

- ``best``: its best run (lr 0.0015 on the summed loss, batch 64, 50 epochs: 98.17%) with
  three seeds.
- ``lr``, ``batch``, ``epochs``: its three studies (section 5.2), as it ran them.
- ``ideas``: its closing ideas (section 6) measured on its setup: a learning rate that falls
  with the epoch (from 0.005, the best rate of its own learning-rate study, against constant
  rates), stopping once training accuracy gains less than a threshold between two epochs
  (what it proposed; patience 1), and Leaky ReLU with weights drawn for it (He).
- ``ablation``: from its setup to the default recipe of ``params.yaml``, one change at a time;
  each change takes its values from ``params.yaml``, and the last row is ``params.yaml`` itself.

Names and labels are templates filled from the run's composed params (``{lr}`` is
``train.lr``), so an override such as ``-S train.epochs=1`` shows in them.
"""

from __future__ import annotations

from dataclasses import dataclass

PRESET = "+preset=tutorial"  # preset/tutorial.yaml, composed by Hydra over params.yaml


@dataclass(frozen=True)
class Row:
    """One run of a study.

    Attributes
    ----------
    name, label : str
        Templates over the composed ``train`` params: the experiment's name, and the label of
        its curve and table row (the report's own wording for its studies).
    sets : tuple of (key, value)
        ``-S`` overrides after the preset (values in Hydra's override syntax).
    report : str
        The report's figure for this run, if it ran it.
    defaults : tuple of str
        Keys that take ``params.yaml``'s own value (the ablation's steps toward the recipe).
    preset : bool
        False: ``params.yaml`` alone, no preset (the ablation's end).
    """

    name: str
    label: str
    sets: tuple[tuple[str, str], ...] = ()
    report: str = ""
    defaults: tuple[str, ...] = ()
    preset: bool = True


@dataclass(frozen=True)
class Study:
    key: str
    title: str
    rows: tuple[Row, ...]
    memory: bool = False  # a column for each run's peak memory


REPORT_NAME = "tut-lr{lr:g}-b{batch_size}-e{epochs}"
REPORT_LABEL = "LR={lr:g}, BS={batch_size}, Epochs={epochs}"  # its figures' captions


def report_run(lr: str, batch: int, epochs: int, figure: str, seed: int = 0) -> Row:
    """A run of the report's: its learning rate (on the summed loss), batch size and epochs."""
    sets = (("train.lr", lr), ("train.batch_size", str(batch)), ("train.epochs", str(epochs)))
    if seed:
        return Row(REPORT_NAME + "-s{seed}", REPORT_LABEL + ", seed {seed}", (*sets, ("train.seed", str(seed))), figure)
    return Row(REPORT_NAME, REPORT_LABEL, sets, figure)


BEST = report_run("0.0015", 64, 50, "98.17%")
IDEA_LR = "0.005"  # the best rate of the report's learning-rate study
STOP_RULE = "train.early_stopping"

# The ablation: each step adds the keys of one idea, with params.yaml's values, to the ones before.
ABLATION_STEPS = (
    ("abl-1-he-init-e{epochs}", "+ He init ({init}), zero biases", ("train.init", "train.bias_init")),
    ("abl-2-relu-e{epochs}", "+ ReLU", ("train.activation",)),
    ("abl-3-maxpool-e{epochs}", "+ max pooling", ("train.pool",)),
    ("abl-4-standardize-e{epochs}", "+ inputs standardized", ("normalize.scale",)),
    ("abl-5-momentum-e{epochs}", "+ Nesterov momentum {momentum}, weight decay {weight_decay}, lr {lr:g} on the "
     "mean loss", ("train.loss_reduction", "train.lr", "train.momentum", "train.nesterov", "train.weight_decay")),
    ("abl-6-schedule-e{epochs}", "+ {schedule} schedule, {warmup_epochs:g} warmup epoch",
     ("train.schedule", "train.warmup_epochs", "train.step_size", "train.gamma", "train.min_lr")),
    ("abl-7-augment-e{epochs}", "+ augmentation (shifts, rotations, scaling)",
     ("train.augment.max_shift", "train.augment.max_rotation", "train.augment.max_scale",
      "train.augment.elastic_alpha", "train.augment.elastic_sigma")),
    ("abl-8-width-e{epochs}", "+ width {channels[0]}, {channels[1]}", ("train.channels", "train.hidden")),
)
RECIPE = Row("abl-9-recipe-e{epochs}", "= the default recipe: + validation split, best epoch kept, early "
             "stopping, {epochs} epochs", preset=False)


def ablation_rows() -> tuple[Row, ...]:
    rows, keys = [Row(BEST.name, "the report's setup", BEST.sets, BEST.report)], ()
    for name, label, step in ABLATION_STEPS:
        keys += step
        rows.append(Row(name, label, defaults=keys))  # the preset's lr, batch and epochs: the best run's
    return (*rows, RECIPE)


STUDIES = (
    Study("best", "The report's best run, three seeds", (
        Row(BEST.name, REPORT_LABEL + ", seed 0", BEST.sets, BEST.report),
        report_run("0.0015", 64, 50, "", seed=1), report_run("0.0015", 64, 50, "", seed=2))),
    Study("lr", "Learning rate (batch 32, 10 epochs)", (
        report_run("0.001", 32, 10, "95.58%"),
        report_run("0.0015", 32, 10, "95.83%"),
        report_run("0.002", 32, 10, "96.15%"),
        report_run("0.005", 32, 10, "96.93%"),
    )),
    Study("batch", "Batch size (lr 0.0015, 10 epochs)", (
        report_run("0.0015", 32, 10, "95.83%, 13 min/epoch"),
        report_run("0.0015", 64, 10, "95.72%, 9 min/epoch"),
        report_run("0.0015", 128, 10, "95.45%, 6 min/epoch"),
        report_run("0.0015", 256, 10, "94.84%, 5 min/epoch"),
    ), memory=True),
    Study("epochs", "Epochs", (
        report_run("0.002", 32, 10, "96.15%"),
        report_run("0.002", 32, 50, "98.13%"),
        report_run("0.0015", 64, 10, "95.72%"),
        BEST,
    )),
    Study("ideas", "The report's ideas, on its setup (LR=0.0015, BS=64, Epochs=50 unless said)", (
        Row(BEST.name, "constant lr {lr:g} (the report's)", BEST.sets, BEST.report),
        Row("idea-constant-lr{lr:g}-e{epochs}", "constant lr {lr:g}", (("train.lr", IDEA_LR),)),
        Row("idea-step-lr{lr:g}-e{epochs}", "step: lr {lr:g}, x{gamma:g} every {step_size} epochs",
            (("train.lr", IDEA_LR), ("train.schedule", "step"), ("train.step_size", "15"), ("train.gamma", "0.3"))),
        Row("idea-exponential-lr{lr:g}-e{epochs}", "exponential: lr {lr:g}, x{gamma:g} per epoch",
            (("train.lr", IDEA_LR), ("train.schedule", "exponential"), ("train.gamma", "0.95"))),
        Row("idea-cosine-lr{lr:g}-e{epochs}", "cosine: lr {lr:g} to {min_lr:g}",
            (("train.lr", IDEA_LR), ("train.schedule", "cosine"), ("train.min_lr", "0.0"))),
        Row("idea-stop-1e-3-e{epochs}", "stop when training accuracy gains < {early_stopping[min_delta]:g}",
            ((f"{STOP_RULE}.patience", "1"), (f"{STOP_RULE}.min_delta", "0.001"))),
        Row("idea-stop-2e-4-e{epochs}", "stop when training accuracy gains < {early_stopping[min_delta]:g}",
            ((f"{STOP_RULE}.patience", "1"), (f"{STOP_RULE}.min_delta", "0.0002"))),
        Row("idea-leaky-relu-e{epochs}", "Leaky ReLU (slope {leaky_slope:g}), He init, zero biases",
            (("train.activation", "leaky_relu"), ("train.init", "he_normal"), ("train.bias_init", "zeros"))),
    )),
    Study("ablation", "From the report's setup to the default recipe, one change at a time", ablation_rows()),
)
STUDY_KEYS = tuple(study.key for study in STUDIES)
