"""Typed params: each section a frozen dataclass, its fields' rules the only spec."""

import dataclasses
import importlib
import typing
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from stages.common.param_rules import Float, Int
from stages.common.param_sections import build_section, dotted, flatten, param, part_of, section_spec
from stages.common.params import StageParams, load_stage_params, sections, stage_spec
from stages.common.train_spec import AugmentParams, EarlyStoppingParams, TrainParams
from stages.plot import PlotTrainParams

ROOT = Path(__file__).resolve().parents[1]
STAGES = sorted(YAML(typ="safe").load((ROOT / "dvc.yaml").read_text())["stages"])
PARAMS_YAML = YAML(typ="safe", pure=True).load((ROOT / "params.yaml").read_text())


def load(stage):
    return load_stage_params(stage, importlib.import_module(f"stages.{stage}").Params, root=ROOT)


def leaves(section):
    """``(owner, field name, value, annotated type)`` of every param in ``section``, nested ones too."""
    kinds = typing.get_type_hints(type(section))
    for field in dataclasses.fields(section):
        value = getattr(section, field.name)
        if dataclasses.is_dataclass(value):
            yield from leaves(value)
        else:
            yield section, field.name, value, kinds[field.name]


def has_type(value, kind) -> bool:
    if typing.get_origin(kind) is tuple:  # tuple[int, ...]
        item = typing.get_args(kind)[0]
        return type(value) is tuple and all(type(v) is item for v in value)
    return type(value) is kind  # exact: a bool is not an int, an int is not a float


@pytest.mark.parametrize("stage", STAGES)
def test_every_value_has_the_type_its_field_declares(stage):
    params = load(stage)
    for name in sections(type(params)):
        for owner, field, value, kind in leaves(getattr(params, name)):
            assert has_type(value, kind), f"{type(owner).__name__}.{field} = {value!r} is not {kind}"


@pytest.mark.parametrize("stage", STAGES)
def test_params_and_every_nested_section_are_frozen(stage):
    params = load(stage)
    objects = [params, *(getattr(params, name) for name in sections(type(params)))]
    objects += [owner for name in sections(type(params)) for owner, *_ in leaves(getattr(params, name))]
    for obj in objects:
        field = dataclasses.fields(obj)[-1].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(obj, field, None)


def test_nested_sections_are_their_own_dataclasses():
    train = load("train").train
    assert isinstance(train.augment, AugmentParams) and isinstance(train.early_stopping, EarlyStoppingParams)
    assert train.augment.max_shift == 2.0 and train.early_stopping.monitor == "val_loss"
    assert train.channels == (8, 24) and train.nesterov is True and train.warmup_epochs == 1.0


def test_dotted_keys_are_params_yaml_keys_in_its_order():
    """The model card and the checkpoint fingerprint list the train params by these keys."""
    assert list(dotted(load("evaluate").train, "train")) == list(flatten(PARAMS_YAML["train"], "train"))
    assert list(section_spec(TrainParams, "train")) == list(flatten(PARAMS_YAML["train"], "train"))


def test_a_partial_section_borrows_rules_and_types_from_the_full_one():
    train = load("plot").train
    assert isinstance(train, PlotTrainParams) and not hasattr(train, "lr")
    assert (train.seed, train.augment) == (load("train").train.seed, load("train").train.augment)
    full = section_spec(TrainParams, "train")
    assert section_spec(PlotTrainParams, "train") == {
        key: rule for key, rule in full.items() if key == "train.seed" or key.startswith("train.augment.")}


def test_the_stage_spec_is_derived_from_its_sections():
    spec = stage_spec(importlib.import_module("stages.evaluate").Params)
    assert list(spec)[0] == "evaluate.batch_size" and spec["train.lr"] == Float(gt=0, max=10)
    assert spec["train.augment.max_rotation"] == Float(min=0, max=180)


def test_equal_params_are_equal_whoever_pinned_them():
    first, second = load("train"), load("train")
    assert first == second and hash(first) == hash(second) and first.pinned is not second.pinned


def test_every_param_must_be_given():
    with pytest.raises(TypeError):
        AugmentParams(max_shift=1.0)


def test_build_section_nests():
    values = {"x.a": 1, "x.inner.b": 2.0}
    assert build_section(Outer, values, "x") == Outer(a=1, inner=Inner(b=2.0))


# --- mistakes in a section's code are TypeErrors, found when its spec is derived ----------


@dataclass(frozen=True)
class Inner:
    b: float = param(Float())


@dataclass(frozen=True)
class Outer:
    a: int = param(Int())
    inner: Inner


@dataclass(frozen=True)
class NoRule:
    a: int


@dataclass(frozen=True)
class BorrowsMissing:
    lr2: float = part_of(TrainParams)


@dataclass(frozen=True)
class BorrowsWrongType:
    lr: int = part_of(TrainParams)


@dataclass(frozen=True)
class BorrowsBorrowed:
    seed: int = part_of(PlotTrainParams)


@dataclass(frozen=True)
class LeafAtTopLevel(StageParams):
    lr: float = param(Float())


@pytest.mark.parametrize("section, message", [
    (NoRule, r"NoRule.a needs param\(rule\), part_of\(section\) or a section"),
    (BorrowsMissing, r"BorrowsMissing.lr2 is part_of\(TrainParams\), which has no field lr2"),
    (BorrowsWrongType, r"BorrowsWrongType.lr is typed <class 'int'>, but TrainParams.lr is <class 'float'>"),
])
def test_a_section_field_without_a_rule_or_a_true_origin_is_refused(section, message):
    with pytest.raises(TypeError, match=message):
        section_spec(section, "x")


def test_part_of_follows_a_partial_section_to_the_full_one():
    assert section_spec(BorrowsBorrowed, "train") == {"train.seed": Int(min=0)}


def test_a_stage_reads_sections_not_loose_params():
    with pytest.raises(TypeError, match="LeafAtTopLevel.lr: a stage reads sections"):
        stage_spec(LeafAtTopLevel)
