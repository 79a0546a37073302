"""Read and validate one stage's params: exactly the keys ``dvc.yaml`` declares for it.

DVC reruns a stage only when a param it *declares* changes. A stage that reads a param it
does not declare would silently keep stale outputs (and ``dvc exp run -S`` would record
stale metrics). So every stage gets its params only through :func:`load_stage_params`,
which refuses a spec key that ``dvc.yaml`` does not declare for that stage, and refuses a
declared key the stage never reads or that ``params.yaml`` spells wrongly.

Example::

    SPEC = {"train.lr": Float(gt=0), "train.activation": Choice("relu", "tanh")}
    params = load_stage_params("train", SPEC)
    params["train.lr"]  # -> 0.05
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from stages.common.errors import StageError, first_line

PARAMS_FILE = "params.yaml"
DVC_FILE = "dvc.yaml"


def _yaml_load(path: Path) -> Any:
    """YAML 1.2, as DVC reads it (so ``1e-3`` is a float here too)."""
    try:
        with open(path, encoding="utf-8") as handle:
            return YAML(typ="safe", pure=True).load(handle)
    except FileNotFoundError:
        raise StageError(f"{path}: file not found (run from the repository root)") from None
    except Exception as error:  # ruamel's parse errors span many lines: keep the first
        raise StageError(f"{path}: not valid YAML ({first_line(error)})") from None


# --- value rules -----------------------------------------------------------------------


class Rule:
    """Checks one param value; returns the value (possibly converted) or raises StageError."""

    expected: str = "a value"

    def check(self, key: str, value: Any) -> Any:
        raise NotImplementedError

    def fail(self, key: str, value: Any) -> StageError:
        return StageError(f"{PARAMS_FILE}: {key} must be {self.expected}, got {value!r}")


def _bounds_text(kind: str, gt=None, min=None, max=None) -> str:
    parts = []
    if gt is not None:
        parts.append(f"> {gt}")
    if min is not None:
        parts.append(f">= {min}")
    if max is not None:
        parts.append(f"<= {max}")
    return kind + (" " + " and ".join(parts) if parts else "")


@dataclass(frozen=True)
class Int(Rule):
    min: int | None = None
    max: int | None = None

    @property
    def expected(self) -> str:
        return _bounds_text("an integer", min=self.min, max=self.max)

    def check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, value)
        if (self.min is not None and value < self.min) or (self.max is not None and value > self.max):
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class Float(Rule):
    gt: float | None = None
    min: float | None = None
    max: float | None = None
    lt: float | None = None

    @property
    def expected(self) -> str:
        text = _bounds_text("a number", gt=self.gt, min=self.min, max=self.max)
        return text + (f" and < {self.lt}" if self.lt is not None else "")

    def check(self, key, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(key, value)
        number = float(value)
        if (
            (self.gt is not None and not number > self.gt)
            or (self.min is not None and number < self.min)
            or (self.max is not None and number > self.max)
            or (self.lt is not None and not number < self.lt)
        ):
            raise self.fail(key, value)
        return number


@dataclass(frozen=True)
class Bool(Rule):
    expected = "true or false"

    def check(self, key, value):
        if not isinstance(value, bool):
            raise self.fail(key, value)
        return value


class Choice(Rule):
    def __init__(self, *allowed: str):
        self.allowed = tuple(allowed)
        self.expected = "one of " + ", ".join(self.allowed)

    def check(self, key, value):
        if value not in self.allowed:
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class Str(Rule):
    expected = "a non-empty string"

    def check(self, key, value):
        if not isinstance(value, str) or not value:
            raise self.fail(key, value)
        return value


@dataclass(frozen=True)
class ListOf(Rule):
    """A list of values each passing ``item``; ``length`` fixes its size, else non-empty."""

    item: Rule
    length: int | None = None

    @property
    def expected(self) -> str:
        size = f"{self.length} " if self.length is not None else "a non-empty list of "
        return f"{'a list of ' if self.length is not None else ''}{size}items, each {self.item.expected}"

    def check(self, key, value):
        if not isinstance(value, list) or not value:
            raise self.fail(key, value)
        if self.length is not None and len(value) != self.length:
            raise self.fail(key, value)
        return tuple(self.item.check(f"{key}[{i}]", v) for i, v in enumerate(value))


@dataclass(frozen=True)
class Optional(Rule):
    """``null`` or a value passing ``rule``."""

    rule: Rule

    @property
    def expected(self) -> str:
        return f"null or {self.rule.expected}"

    def check(self, key, value):
        if value is None:
            return None
        try:
            return self.rule.check(key, value)
        except StageError:
            raise self.fail(key, value) from None


# --- which keys a stage may read --------------------------------------------------------


def declared_params(stage: str, root: Path | str = ".") -> list[str]:
    """The dotted ``params.yaml`` keys (or whole sections) ``dvc.yaml`` declares for ``stage``."""
    dvc = _yaml_load(Path(root) / DVC_FILE) or {}
    stages = dvc.get("stages", {})
    if stage not in stages:
        raise StageError(f"{DVC_FILE}: no stage named {stage!r}")
    declared = []
    for entry in stages[stage].get("params", []) or []:
        if isinstance(entry, str):
            declared.append(entry)
        elif isinstance(entry, dict) and PARAMS_FILE in entry:
            declared.extend(entry[PARAMS_FILE])
        else:
            raise StageError(f"{DVC_FILE}: stage {stage} declares params from another file: {entry!r}")
    return declared


def _covered(key: str, declared: list[str]) -> bool:
    return any(key == d or key.startswith(d + ".") for d in declared)


def _flatten(tree: Any, prefix: str) -> dict[str, Any]:
    if isinstance(tree, dict):
        flat = {}
        for name, value in tree.items():
            flat.update(_flatten(value, f"{prefix}.{name}" if prefix else str(name)))
        return flat
    return {prefix: tree}


def _lookup(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{PARAMS_FILE}: missing param {key}")
        node = node[part]
    return node


def _declared_values(tree: dict, declared: list[str]) -> dict[str, Any]:
    """The values under the ``declared`` keys or sections of ``tree``, flattened."""
    present = {}
    for section in declared:
        present.update(_flatten(_lookup(tree, section), section))
    return present


class StageParams(Mapping):
    """Read-only params of one stage; reading a key the stage did not declare is an error."""

    def __init__(self, stage: str, values: dict[str, Any], *, root: Path | str = ".",
                 declared: tuple[str, ...] = (), as_read: dict[str, Any] | None = None):
        self._stage = stage
        self._values = values
        self._root = Path(root)
        self._declared = tuple(declared)
        self._as_read = as_read  # the declared sections as params.yaml held them, flattened

    def __getitem__(self, key: str) -> Any:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(
                f"stage {self._stage} reads param {key!r}, which is not in its spec and so not "
                f"declared in {DVC_FILE}: declare it there and add it to the stage's SPEC"
            ) from None

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def check_unchanged(self) -> None:
        """Raise StageError if params.yaml no longer holds the values this stage read.

        Called just before a stage swaps its outputs in (:mod:`stages.common.outputs`): DVC
        records the params it finds *after* the stage ends, so an edit made meanwhile (a
        ``dvc exp run -S`` refused by the repro lock still rewrites params.yaml) would be
        recorded for outputs made with the old values.
        """
        if self._as_read is None:
            return
        try:
            now = _declared_values(_yaml_load(self._root / PARAMS_FILE) or {}, list(self._declared))
        except StageError:
            now = None
        if now != self._as_read:
            raise StageError(f"{PARAMS_FILE} changed while this stage ran; run again")

    def section(self, prefix: str) -> dict[str, Any]:
        """Keys under ``prefix.`` with the prefix stripped: ``section("train.augment")``."""
        start = prefix + "."
        return {k[len(start):]: v for k, v in self._values.items() if k.startswith(start)}


def load_stage_params(stage: str, spec: Mapping[str, Rule], root: Path | str = ".") -> StageParams:
    """Validate and return the params ``stage`` reads, as declared in ``dvc.yaml``.

    Raises StageError when: the spec reads a key ``dvc.yaml`` does not declare for the
    stage; ``dvc.yaml`` declares a key the spec never reads; ``params.yaml`` has a key under
    a declared section that the spec does not know (a typo); or a value breaks its rule.
    """
    root = Path(root)
    declared = declared_params(stage, root)
    undeclared = [key for key in spec if not _covered(key, declared)]
    if undeclared:
        raise StageError(
            f"{DVC_FILE}: stage {stage} reads {', '.join(undeclared)} but does not declare "
            "it under params (DVC would not rerun the stage when it changes)"
        )
    unread = [d for d in declared if not any(k == d or k.startswith(d + ".") for k in spec)]
    if unread:
        raise StageError(f"{DVC_FILE}: stage {stage} declares {', '.join(unread)} but never reads it")

    tree = _yaml_load(root / PARAMS_FILE) or {}
    present = _declared_values(tree, declared)
    unknown = sorted(key for key in present if key not in spec)
    if unknown:
        raise StageError(f"{PARAMS_FILE}: unknown param {unknown[0]} (stage {stage} knows: {', '.join(spec)})")
    values = {key: rule.check(key, _lookup(tree, key)) for key, rule in spec.items()}
    return StageParams(stage, values, root=root, declared=tuple(declared), as_read=present)
