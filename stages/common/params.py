"""Read and validate one stage's params: exactly the keys ``dvc.yaml`` declares for it.

DVC reruns a stage only when a param it *declares* changes. A stage that reads a param it
does not declare would silently keep stale outputs (and ``dvc exp run -S`` would record
stale metrics). So every stage gets its params only through :func:`load_stage_params`,
which refuses a key the stage reads that ``dvc.yaml`` does not declare for it, and refuses
a declared key the stage never reads or that ``params.yaml`` spells wrongly.

A stage says what it reads with a frozen dataclass: a :class:`StageParams` whose fields
are the sections of ``params.yaml`` it reads (see :mod:`stages.common.param_sections`)::

    @dataclass(frozen=True)
    class Params(StageParams):
        train: TrainParams

    params = load_stage_params("train", Params)
    params.train.lr                 # -> 0.05
    params.train.augment.max_shift  # -> 2.0
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from ruamel.yaml import YAML

from stages.common.errors import StageError, first_line
from stages.common.param_rules import PARAMS_FILE, Rule
from stages.common.param_sections import build_section, flatten, is_section, section_spec

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


# --- which keys a stage may read --------------------------------------------------------


def declared_params(stage: str, root: Path | str = ".") -> list[str]:
    """The dotted ``params.yaml`` keys (or whole sections) ``dvc.yaml`` declares for ``stage``.

    Parameters
    ----------
    stage : str
        The stage's name in ``dvc.yaml``.
    root : Path or str, default "."
        The directory holding ``dvc.yaml``.

    Returns
    -------
    list of str
        As ``dvc.yaml`` lists them: ``["train.seed", "train.augment"]``.

    Raises
    ------
    StageError
        If ``dvc.yaml`` has no such stage, or it declares params from another file.
    """
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


def _covered(key: str, declared: tuple[str, ...]) -> bool:
    """Whether ``key`` is one of the ``declared`` keys or lies in a declared section."""
    return any(key == d or key.startswith(d + ".") for d in declared)


def _lookup(tree: dict, key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"{PARAMS_FILE}: missing param {key}")
        node = node[part]
    return node


def _declared_values(tree: dict, declared: tuple[str, ...]) -> dict[str, Any]:
    """The values under the ``declared`` keys or sections of ``tree``, flattened."""
    present = {}
    for section in declared:
        present.update(flatten(_lookup(tree, section), section))
    return present


# --- what a stage reads, and what params.yaml held when it read it ------------------------


@dataclass(frozen=True)
class PinnedParams:
    """The declared keys of ``params.yaml`` as a stage read them, to see whether they changed.

    Parameters
    ----------
    path : Path
        The ``params.yaml`` read.
    declared : tuple of str
        The keys and sections ``dvc.yaml`` declares for the stage.
    values : dict
        What ``path`` held under them, flattened to dotted keys, before any rule.
    """

    path: Path
    declared: tuple[str, ...]
    values: dict[str, Any]

    def changed(self) -> bool:
        """Whether ``path`` holds other values now (or can no longer be read)."""
        try:
            return _declared_values(_yaml_load(self.path) or {}, self.declared) != self.values
        except StageError:
            return True


@dataclass(frozen=True)
class StageParams:
    """Base of a stage's params: each field a subclass adds is one section it reads.

    Parameters
    ----------
    pinned : PinnedParams or None, keyword-only
        What ``params.yaml`` held when :func:`load_stage_params` read it (``None`` for an
        object made by hand: nothing to check).
    """

    pinned: PinnedParams | None = field(default=None, kw_only=True, repr=False, compare=False)

    def check_unchanged(self) -> None:
        """Raise StageError if params.yaml no longer holds the values this stage read.

        Called just before a stage swaps its outputs in (:mod:`stages.common.outputs`): DVC
        records the params it finds *after* the stage ends, so an edit made meanwhile (a
        ``dvc exp run -S`` refused by the repro lock still rewrites params.yaml) would be
        recorded for outputs made with the old values.

        Raises
        ------
        StageError
            ``params.yaml changed while this stage ran; run again``.
        """
        if self.pinned is not None and self.pinned.changed():
            raise StageError(f"{PARAMS_FILE} changed while this stage ran; run again")


StageParamsT = TypeVar("StageParamsT", bound=StageParams)


def sections(params_class: type[StageParams]) -> dict[str, type]:
    """The sections a stage reads: the fields its class adds to :class:`StageParams`.

    Parameters
    ----------
    params_class : type
        A :class:`StageParams` subclass.

    Returns
    -------
    dict
        ``{"train": TrainParams}``: each section's name in ``params.yaml`` and its dataclass.

    Raises
    ------
    TypeError
        If a field is not a section (a dataclass): a mistake in the code.
    """
    base = {f.name for f in fields(StageParams)}
    kinds = get_type_hints(params_class)
    found = {f.name: kinds[f.name] for f in fields(params_class) if f.name not in base}
    for name, kind in found.items():
        if not is_section(kind):
            raise TypeError(f"{params_class.__name__}.{name}: a stage reads sections (dataclasses), got {kind!r}")
    return found


def stage_spec(params_class: type[StageParams]) -> dict[str, Rule]:
    """Every param a stage reads, under its dotted key, with its rule, in field order.

    For the evaluate stage's ``Params``: ``{"evaluate.batch_size": Int(min=1, max=100000),
    "train.seed": Int(min=0), ...}``, the spec its section dataclasses stand for.
    """
    return {key: rule for name, kind in sections(params_class).items()
            for key, rule in section_spec(kind, name).items()}


def load_stage_params(stage: str, params_class: type[StageParamsT], root: Path | str = ".") -> StageParamsT:
    """Validate and return the params ``stage`` reads, as declared in ``dvc.yaml``.

    Parameters
    ----------
    stage : str
        The stage's name in ``dvc.yaml``.
    params_class : type
        The stage's :class:`StageParams` subclass; its sections' fields say which keys the
        stage reads and the rule each value must pass.
    root : Path or str, default "."
        The directory holding ``dvc.yaml`` and ``params.yaml``.

    Returns
    -------
    params_class
        Frozen, every section filled from ``params.yaml``, and pinned for
        :meth:`StageParams.check_unchanged`.

    Raises
    ------
    StageError
        One line, when: the stage reads a key ``dvc.yaml`` does not declare for it;
        ``dvc.yaml`` declares a key the stage never reads; ``params.yaml`` has a key under a
        declared section that the stage does not know (a typo), or lacks one it reads; or a
        value breaks its rule.
    """
    root = Path(root)
    spec = stage_spec(params_class)
    declared = tuple(declared_params(stage, root))
    undeclared = [key for key in spec if not _covered(key, declared)]
    if undeclared:
        raise StageError(
            f"{DVC_FILE}: stage {stage} reads {', '.join(undeclared)} but does not declare "
            "it under params (DVC would not rerun the stage when it changes)"
        )
    unread = [d for d in declared if not any(_covered(key, (d,)) for key in spec)]
    if unread:
        raise StageError(f"{DVC_FILE}: stage {stage} declares {', '.join(unread)} but never reads it")

    tree = _yaml_load(root / PARAMS_FILE) or {}
    present = _declared_values(tree, declared)
    unknown = sorted(key for key in present if key not in spec)
    if unknown:
        raise StageError(f"{PARAMS_FILE}: unknown param {unknown[0]} (stage {stage} knows: {', '.join(spec)})")
    values = {key: rule.check(key, _lookup(tree, key)) for key, rule in spec.items()}
    read = {name: build_section(kind, values, name) for name, kind in sections(params_class).items()}
    return params_class(**read, pinned=PinnedParams(root / PARAMS_FILE, declared, present))
