"""The params contract: each stage reads exactly the keys dvc.yaml declares for it, every
value passes its rule, and params.schema.json is derived from the same rules."""

import json
import re
import shutil
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.common.errors import LenetError
from stages.common.params import (
    Params, check_unchanged, declared_params, dotted, load_params, read_yaml, schema_text)
from tests.params_file import set_params

ROOT = Path(__file__).resolve().parents[1]
STAGES = YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"]


def keys_of(section, prefix: str) -> set[str]:
    return set(dotted(section, prefix))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_gets_exactly_the_keys_dvc_yaml_declares(stage):
    params = load_params(stage, root=ROOT)
    declared = declared_params(stage, ROOT)
    read = set().union(*(keys_of(value, name) for name, value in params)) if declared else set()
    assert all(any(key == d or key.startswith(d + ".") for d in declared) for key in read)
    assert all(any(key == d or key.startswith(d + ".") for key in read) for d in declared)


def test_reading_an_undeclared_key_is_an_attribute_error():
    params = load_params("plot", root=ROOT)  # declares train.seed and train.augment
    assert params.train.seed == 0 and params.train.augment.max_shift >= 0
    with pytest.raises(AttributeError):
        params.train.lr
    with pytest.raises(AttributeError):
        params.normalize


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_scripts_read_params_only_through_load_params(stage):
    source = (ROOT / "stages" / f"{stage}.py").read_text()
    assert ("load_params(" in source) == bool(declared_params(stage, ROOT))
    assert not re.search(r"import yaml|ruamel|open\([^)]*params|dvc\.api", source)


def test_changing_lr_reaches_train_and_evaluate_but_not_fetch_normalize_or_plot():
    readers = {stage for stage in STAGES
               if any("train.lr" == d or "train.lr".startswith(d + ".") for d in declared_params(stage, ROOT))}
    assert readers == {"train", "evaluate"}  # evaluate only lists them in the model card


def test_the_whole_params_yaml_passes_its_schema():
    Params.model_validate(read_yaml(ROOT / "params.yaml"))


def test_the_committed_schema_is_current():
    assert (ROOT / "params.schema.json").read_text() == schema_text(), \
        "params.schema.json is stale: run python -m stages.common.params"


def test_params_yaml_names_its_schema_for_editors():
    first = (ROOT / "params.yaml").read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=params.schema.json"
    schema = json.loads((ROOT / "params.schema.json").read_text())
    assert set(schema["properties"]) == set(read_yaml(ROOT / "params.yaml"))


@pytest.fixture
def project(tmp_path):
    """A scratch copy of dvc.yaml and params.yaml to break on purpose."""
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


@pytest.mark.parametrize("key, value, expected", [
    ("train.lr", -1, "train.lr must be greater than 0, got -1"),
    ("train.lr", "fast", "train.lr must be a valid number, got 'fast'"),
    ("train.lr", ".nan", "train.lr must be a valid number"),
    ("train.batch_size", 0, "train.batch_size must be greater than or equal to 1, got 0"),
    ("train.batch_size", 32.5, "train.batch_size must be a valid integer, got 32.5"),
    ("train.activation", "foo", "train.activation must be 'relu', 'leaky_relu', 'tanh' or 'sigmoid', got 'foo'"),
    ("train.optimizer", "rmsprop", "train.optimizer must be 'sgd', 'adam' or 'adamw'"),
    ("train.schedule", "linear", "train.schedule must be 'constant', 'step', 'exponential' or 'cosine'"),
    ("train.early_stopping.patience", -1, "train.early_stopping.patience must be greater than or equal to 0"),
    ("train.augment.max_rotation", 400, "train.augment.max_rotation must be less than or equal to 180"),
    ("train.channels", [6], "train.channels must have at least 2 items, not 1, got [6]"),
    ("train.channels", [6, 0], "train.channels[1] must be greater than or equal to 1"),
    ("train.nesterov", "yes", "train.nesterov must be a valid boolean, got 'yes'"),
    ("train.min_lr", 1.0, "train.min_lr must be <= train.lr (0.05), got 1.0"),
    ("train.warmup_epochs", 40, "train.warmup_epochs must be < train.epochs ({epochs}), got 40.0"),
])
def test_bad_train_values_name_the_key_and_what_is_allowed(project, key, value, expected):
    expected = expected.format(epochs=load_params("train", root=project).train.epochs)
    set_params(project, {key: value})
    with pytest.raises(LenetError) as error:
        load_params("train", root=project)
    message = str(error.value)
    assert message.startswith("params.yaml: ") and expected.lower() in message.lower() and "\n" not in message


def test_nan_is_refused_as_a_finite_number(project):
    text = (project / "params.yaml").read_text().replace("lr: 0.05", "lr: .nan")
    (project / "params.yaml").write_text(text)
    with pytest.raises(LenetError, match="train.lr must be a finite number"):
        load_params("train", root=project)


def test_a_typo_in_params_yaml_is_refused(project):
    set_params(project, {"train.lrr": 0.1})
    with pytest.raises(LenetError, match="^params.yaml: unknown param train.lrr$"):
        load_params("train", root=project)


def test_a_typo_outside_what_a_stage_reads_does_not_stop_it(project):
    set_params(project, {"train.lrr": 0.1})
    assert load_params("plot", root=project).train.seed == 0


def test_missing_param_is_named(project):
    text = re.sub(r"\n  val_size: 5000[^\n]*", "", (project / "params.yaml").read_text())
    (project / "params.yaml").write_text(text)
    with pytest.raises(LenetError, match="^params.yaml: missing param normalize.val_size$"):
        load_params("normalize", root=project)


def test_dvc_yaml_declaring_a_key_params_has_no_rule_for_is_refused(project):
    text = (project / "dvc.yaml").read_text().replace("      - train.seed\n", "      - train.sed\n", 1)
    (project / "dvc.yaml").write_text(text)
    with pytest.raises(LenetError, match="dvc.yaml: stage plot declares train.sed"):
        load_params("plot", root=project)


def test_yaml_1_2_floats_like_dvc(project):
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("lr: 0.05", "lr: 5e-2"))
    assert load_params("train", root=project).train.lr == 0.05


def test_params_are_frozen(project):
    params = load_params("train", root=project)
    with pytest.raises(Exception):
        params.train.lr = 1.0


def test_an_edit_to_a_declared_key_after_loading_is_caught(project):
    params = load_params("normalize", root=project)
    set_params(project, {"train.lr": 0.01})  # not normalize's: no reason to stop
    check_unchanged(params)
    set_params(project, {"normalize.seed": 1})
    with pytest.raises(LenetError, match="^params.yaml changed while this stage ran; run again$"):
        check_unchanged(params)


def test_an_unreadable_params_yaml_after_loading_counts_as_changed(project):
    params = load_params("normalize", root=project)
    (project / "params.yaml").write_text("normalize: [")
    with pytest.raises(LenetError, match="changed while this stage ran"):
        check_unchanged(params)


def test_dotted_keys_are_params_yaml_keys_in_its_order():
    train = load_params("train", root=ROOT).train
    keys = list(dotted(train, "train"))
    assert keys[:3] == ["train.seed", "train.epochs", "train.batch_size"]
    assert "train.augment.max_shift" in keys and dotted(train, "train")["train.channels"] == tuple(train.channels)
