"""params.yaml, typed and checked: a pydantic model per section, and each stage's share of it.

Every rule a value must pass is written once, on its field below. ``params.schema.json`` is
derived from the same models (``python -m stages.common.params`` rewrites it; a test keeps it
current), and params.yaml names it, so an editor completes and checks params.yaml as you type.

A stage reads its params with ``load_params("train")`` and gets only the keys ``dvc.yaml``
declares for it: DVC reruns a stage only when a declared param changes, so a stage that read
any other key would keep stale outputs. Reading one is an ``AttributeError``, never a value::

    params = load_params("plot")      # dvc.yaml: params: [train.seed, train.augment]
    params.train.augment.max_shift    # -> 2.0
    params.train.lr                   # AttributeError

A typo, a missing key, a bad value or an unknown section is one line naming the key and
what is allowed: ``params.yaml: train.lr must be greater than 0, got -1``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, create_model, model_validator
from ruamel.yaml import YAML

from nn.init import BIAS_SCHEMES
from nn.init import SCHEMES as INITS
from nn.lenet import ACTIVATIONS, POOLS
from nn.loss import REDUCTIONS
from nn.optim import OPTIMIZERS
from nn.schedules import SCHEDULES
from nn.training import MONITORS
from stages.common.errors import LenetError, first_line
from stages.common.paths import DVC_YAML, PARAMS

SCHEMA = Path("params.schema.json")


class Section(BaseModel):
    """A section of params.yaml: frozen; unknown keys, NaN, inf and silent conversions refused.

    Strict: YAML's ``"0.05"`` is a string, not a number, and ``1.0`` is not an integer.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    _source: Any = PrivateAttr(default=None)  # the params.yaml it was read from, for check_unchanged


class _Share(Section):
    """The declared part of a section: keys a stage does not declare are ignored (their stage checks them)."""

    model_config = ConfigDict(extra="ignore")


def _pair(item_rule: Any) -> Any:
    """Two integers (the YAML list ``[8, 24]``), each passing ``item_rule``."""
    return Annotated[tuple[Annotated[int, item_rule], ...], Field(min_length=2, max_length=2, strict=False)]


class NormalizeParams(Section):
    """``normalize``: the validation split, the pixel scale, and a size limit for small runs."""

    val_size: int = Field(ge=0, description="training images held out (stratified by label) for validation; "
                          "0: none, train on all and keep the last epoch")
    seed: int = Field(ge=0, description="which images are held out")
    scale: Literal["standardize", "unit256"] = Field(
        description="standardize: (pixels/255 - mean) / std of the train split; unit256: pixels/256 (the tutorial's)")
    limit: int = Field(ge=0, description="keep only the first N images of each source file (0: all); for tests")


class EarlyStoppingParams(Section):
    """``train.early_stopping``: the arguments of ``nn.training.EarlyStopping``."""

    monitor: Literal[MONITORS] = Field(description="val_*: the best epoch is kept; train_*: the last epoch is kept")
    patience: int = Field(ge=0, description="epochs without improvement before stopping; 0 switches it off")
    min_delta: float = Field(ge=0, description="the least change that counts as an improvement")


class AugmentParams(Section):
    """``train.augment``: random distortions of training batches (``nn.augment``'s arguments)."""

    max_shift: float = Field(ge=0, le=14, description="pixels; 0 switches it off")
    max_rotation: float = Field(ge=0, le=180, description="degrees")
    max_scale: float = Field(ge=0, lt=1, description="fraction")
    elastic_alpha: float = Field(ge=0, le=100, description="Simard et al. 2003 distortion strength in pixels; 0: off")
    elastic_sigma: float = Field(gt=0, le=28, description="smoothness of the elastic distortion, pixels")


class TrainParams(Section):
    """``train``: the whole training recipe. Option lists come from the ``nn`` modules."""

    seed: int = Field(ge=0)
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=60_000)
    workers: int = Field(ge=1, le=64, description="processes sharing each batch, one core each")
    init: Literal[INITS]
    bias_init: Literal[BIAS_SCHEMES]
    activation: Literal[ACTIVATIONS]
    leaky_slope: float = Field(ge=0, lt=1)
    pool: Literal[POOLS]
    channels: _pair(Field(ge=1, le=1024)) = Field(description="feature maps of conv1, conv2 (LeNet-5: 6, 16)")
    hidden: _pair(Field(ge=1, le=65_536)) = Field(description="units of the two hidden dense layers")
    dropout: float = Field(ge=0, lt=1)
    optimizer: Literal[OPTIMIZERS]
    lr: float = Field(gt=0, le=10)
    loss_reduction: Literal[REDUCTIONS] = Field(description="sum: each step is batch_size times larger")
    momentum: float = Field(ge=0, lt=1)
    nesterov: bool
    weight_decay: float = Field(ge=0, lt=1, description="on weights only, never biases")
    schedule: Literal[SCHEDULES]
    warmup_epochs: float = Field(ge=0)
    step_size: int = Field(ge=1, description="step schedule: epochs between decays")
    gamma: float = Field(gt=0, le=1, description="step/exponential schedule: decay factor")
    min_lr: float = Field(ge=0)
    early_stopping: EarlyStoppingParams
    augment: AugmentParams

    @model_validator(mode="after")
    def _consistent(self) -> TrainParams:
        """Rules that tie two params together."""
        if self.nesterov and self.optimizer == "sgd" and self.momentum == 0:
            raise ValueError("train.nesterov needs train.momentum > 0 (got 0)")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr must be <= train.lr ({self.lr}), got {self.min_lr}")
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"train.warmup_epochs must be < train.epochs ({self.epochs}), got {self.warmup_epochs}")
        return self


class EvaluateParams(Section):
    """``evaluate``: how many test images go through the network at once (memory, not results)."""

    batch_size: int = Field(ge=1, le=100_000)


class Params(Section):
    """The whole of params.yaml: one field per section."""

    model_config = ConfigDict(title="params.yaml of the NumPy LeNet-5 pipeline")
    normalize: NormalizeParams
    train: TrainParams
    evaluate: EvaluateParams


def read_yaml(path: Path) -> Any:
    """YAML 1.2, as DVC reads it (so ``1e-3`` is a float here too)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return YAML(typ="safe", pure=True).load(handle)
    except FileNotFoundError:
        raise LenetError(f"{path}: file not found (run from the repository root)") from None
    except Exception as error:  # ruamel's parse errors span many lines: keep the first
        raise LenetError(f"{path}: not valid YAML ({first_line(error)})") from None


def declared_params(stage: str, root: Path = Path(".")) -> list[str]:
    """The dotted keys (or whole sections) of params.yaml that ``dvc.yaml`` declares for ``stage``."""
    stages = (read_yaml(root / DVC_YAML) or {}).get("stages", {})
    if stage not in stages:
        raise LenetError(f"{DVC_YAML}: no stage named {stage!r}")
    declared = []
    for entry in stages[stage].get("params") or []:
        if isinstance(entry, dict) and list(entry) == [str(PARAMS)]:
            entry = entry[str(PARAMS)]
        declared.extend([entry] if isinstance(entry, str) else entry)
    return declared


def _share(model: type[Section], keys: list[str], stage: str, prefix: str = "") -> type[Section]:
    """The part of ``model`` that the dotted ``keys`` name, as a model of its own.

    A key naming a whole section gets that section's own model, with its cross-field rules.
    """
    fields: dict[str, Any] = {}
    for head in dict.fromkeys(key.partition(".")[0] for key in keys):
        field = model.model_fields.get(head)
        if field is None:
            raise LenetError(f"{DVC_YAML}: stage {stage} declares {prefix}{head}, a param no rule of "
                             f"{PARAMS} knows")
        rest = [key.partition(".")[2] for key in keys if key.partition(".")[0] == head]
        if all(rest):
            fields[head] = (_share(field.annotation, rest, stage, f"{prefix}{head}."), ...)
        else:
            fields[head] = (field.annotation, field)
    return create_model(f"{model.__name__}Share", __base__=_Share, **fields)


def _one_line(error: ValidationError, source: Path = PARAMS) -> str:
    """pydantic's first complaint, as ``<source>: <key> <what was expected>, got <value>``."""
    problem = error.errors()[0]
    key = ".".join(str(part) for part in problem["loc"] if isinstance(part, str))
    key += "".join(f"[{part}]" for part in problem["loc"] if isinstance(part, int))
    if problem["type"] == "extra_forbidden":
        return f"{source}: unknown param {key}"
    if problem["type"] == "missing":
        return f"{source}: missing param {key}"
    if problem["type"] == "value_error":  # a cross-field rule: its message names the keys
        return f"{source}: {problem['msg'].removeprefix('Value error, ')}"
    expected = problem["msg"].replace("Input should be", "must be", 1).replace(" after validation", "")
    expected = expected.replace("Tuple should have", "must have", 1)  # a list of YAML: our pairs
    return f"{source}: {key} {expected}, got {problem['input']!r}"


def load_params(stage: str, root: Path = Path(".")) -> Section:
    """Validate and return, frozen, the params ``stage`` reads: only the keys ``dvc.yaml`` declares for it.

    Parameters
    ----------
    stage : str
        The stage's name in ``dvc.yaml``.
    root : Path, default "."
        The directory holding ``dvc.yaml`` and ``params.yaml``.

    Raises
    ------
    LenetError
        One line, for a typo, a missing key or a value that breaks its rule.
    """
    model = _share(Params, declared_params(stage, root), stage)
    tree = read_yaml(root / PARAMS) or {}
    if not isinstance(tree, dict):
        raise LenetError(f"{PARAMS}: expected sections {', '.join(Params.model_fields)}, got a {type(tree).__name__}")
    unknown = sorted(set(tree) - set(Params.model_fields))
    if unknown:  # e.g. what a misspelt Hydra group (-S +presets=x) leaves: a stage would ignore it
        raise LenetError(f"{PARAMS}: unknown section {unknown[0]!r}; expected {', '.join(Params.model_fields)} "
                         "(presets are added with -S +preset=NAME, from preset/NAME.yaml)")
    try:
        params = model.model_validate(tree)
    except ValidationError as error:
        raise LenetError(_one_line(error)) from None
    params._source = root / PARAMS
    return params


def check_unchanged(params: Section) -> None:
    """Raise LenetError if params.yaml no longer holds the values ``params`` was read from.

    A stage calls it before its outputs go in place: DVC records the params it finds *after*
    a stage ends, so an edit made meanwhile would be recorded for outputs made without it.
    """
    try:
        unchanged = type(params).model_validate(read_yaml(params._source) or {}).model_dump() == params.model_dump()
    except (LenetError, ValidationError):
        unchanged = False
    if not unchanged:
        raise LenetError(f"{PARAMS} changed while this stage ran; run again")


def dotted(section: BaseModel, prefix: str) -> dict[str, Any]:
    """A section's values under their dotted params.yaml keys: ``{"train.augment.max_shift": 2.0}``."""
    flat: dict[str, Any] = {}
    for name, value in section:
        key = f"{prefix}.{name}"
        flat.update(dotted(value, key) if isinstance(value, BaseModel) else {key: value})
    return flat


def schema_text() -> str:
    """The JSON Schema of params.yaml, as committed in ``params.schema.json``."""
    return json.dumps(Params.model_json_schema(), indent=2) + "\n"


if __name__ == "__main__":  # python -m stages.common.params: rewrite params.schema.json
    SCHEMA.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA}")
