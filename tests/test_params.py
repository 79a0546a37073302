"""The params contract: each stage reads exactly the keys dvc.yaml declares for it."""

import importlib
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.common.errors import StageError
from stages.common.param_rules import Choice
from stages.common.param_sections import dotted, part_of
from stages.common.params import StageParams, declared_params, load_stage_params, sections, stage_spec
from stages.common.train_spec import TrainParams
from stages.normalize import NormalizeParams
from stages.normalize import Params as NormalizeStage
from stages.train import Params as TrainStage
from tests.params_file import set_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


@dataclass(frozen=True)
class LearningRate:
    lr: float = part_of(TrainParams)


@dataclass(frozen=True)
class NormalizeAndLr(StageParams):
    """Reads train.lr, which dvc.yaml does not declare for normalize."""

    normalize: NormalizeParams
    train: LearningRate


@dataclass(frozen=True)
class ReadsNothing(StageParams):
    pass


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_reads_exactly_its_declared_params(stage):
    module = importlib.import_module(f"stages.{stage}")
    params = load_stage_params(stage, module.Params, root=ROOT)  # raises on any mismatch
    read = {key for name in sections(module.Params) for key in dotted(getattr(params, name), name)}
    assert read == set(stage_spec(module.Params))
    for key in read:
        assert any(key == d or key.startswith(d + ".") for d in declared_params(stage, ROOT))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_scripts_do_not_read_params_behind_the_helpers_back(stage):
    source = (ROOT / "stages" / f"{stage}.py").read_text()
    assert "load_stage_params(" in source
    assert not re.search(r"import yaml|ruamel|open\([^)]*params|dvc\.api", source)


def test_changing_lr_reaches_train_but_not_fetch_or_normalize():
    declared = {stage: declared_params(stage, ROOT) for stage in STAGES}
    readers = {s for s, keys in declared.items()
               if any("train.lr" == d or "train.lr".startswith(d + ".") for d in keys)}
    assert readers == {"train", "evaluate"}  # evaluate only lists them in the model card


@pytest.fixture
def project(tmp_path):
    """A scratch copy of dvc.yaml and params.yaml to break on purpose."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize("key, value, expected", [
    ("train.lr", -1, "train.lr must be a number > 0"),
    ("train.lr", "fast", "train.lr must be a number > 0"),
    ("train.batch_size", 0, "train.batch_size must be an integer >= 1"),
    ("train.batch_size", 32.5, "train.batch_size must be an integer"),
    ("train.activation", "foo", "train.activation must be one of relu, leaky_relu, tanh, sigmoid"),
    ("train.optimizer", "rmsprop", "train.optimizer must be one of sgd, adam, adamw"),
    ("train.schedule", "linear", "train.schedule must be one of constant, step, exponential, cosine"),
    ("train.early_stopping.patience", -1, "train.early_stopping.patience must be an integer >= 0"),
    ("train.augment.max_rotation", 400, "train.augment.max_rotation must be a number >= 0 and <= 180"),
    ("train.channels", [6], "train.channels must be a list of 2 items"),
    ("train.nesterov", "yes", "train.nesterov must be true or false"),
])
def test_bad_train_values_name_the_key_and_what_is_allowed(project, key, value, expected):
    set_params(project, {key: value})
    with pytest.raises(StageError) as error:
        load_stage_params("train", TrainStage, root=project)
    message = str(error.value)
    assert expected in message and "\n" not in message


def test_a_typo_in_params_yaml_is_refused(project):
    set_params(project, {"train.lrr": 0.1})
    with pytest.raises(StageError, match="unknown param train.lrr"):
        load_stage_params("train", TrainStage, root=project)


def test_a_stage_has_only_the_sections_its_class_declares(project):
    params = load_stage_params("normalize", NormalizeStage, root=project)
    with pytest.raises(AttributeError):
        params.train


def test_a_key_dvc_yaml_does_not_declare_is_refused(project):
    with pytest.raises(StageError, match="reads train.lr but does not declare it"):
        load_stage_params("normalize", NormalizeAndLr, root=project)


def test_a_declared_key_the_stage_never_reads_is_refused(project):
    with pytest.raises(StageError, match="declares normalize.val_size.* but never reads it"):
        load_stage_params("normalize", ReadsNothing, root=project)


def test_missing_param_is_named(project):
    text = re.sub(r"\n  val_size: 5000[^\n]*", "", (project / "params.yaml").read_text())
    (project / "params.yaml").write_text(text)
    with pytest.raises(StageError, match="missing param normalize.val_size"):
        load_stage_params("normalize", NormalizeStage, root=project)


def test_yaml_1_2_floats_like_dvc(project):
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("lr: 0.05", "lr: 5e-2"))
    assert load_stage_params("train", TrainStage, root=project).train.lr == 0.05


def test_an_edit_to_a_declared_key_after_loading_is_caught(project):
    params = load_stage_params("normalize", NormalizeStage, root=project)
    set_params(project, {"train.lr": 0.01})  # not normalize's: no reason to stop
    params.check_unchanged()
    set_params(project, {"normalize.seed": 1})
    with pytest.raises(StageError, match="^params.yaml changed while this stage ran; run again$"):
        params.check_unchanged()


def test_an_unreadable_params_yaml_after_loading_counts_as_changed(project):
    params = load_stage_params("normalize", NormalizeStage, root=project)
    (project / "params.yaml").write_text("normalize: [")
    with pytest.raises(StageError, match="changed while this stage ran"):
        params.check_unchanged()


def test_params_made_by_hand_have_nothing_to_check():
    NormalizeStage(normalize=NormalizeParams(val_size=10, seed=0, limit=0)).check_unchanged()


def test_choice_error_lists_allowed_values():
    with pytest.raises(StageError, match="x.y must be one of a, b, got 'c'"):
        Choice("a", "b").check("x.y", "c")
