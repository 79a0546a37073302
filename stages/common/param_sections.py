"""A section of ``params.yaml`` as a frozen dataclass whose fields carry their rules.

A field is either one param, declared with :func:`param` and the rule its value must pass,
or a nested section, declared by its type alone::

    @dataclass(frozen=True)
    class AugmentParams:
        max_shift: float = param(Float(min=0, max=14))

    @dataclass(frozen=True)
    class TrainParams:
        lr: float = param(Float(gt=0, max=10))
        augment: AugmentParams          # the nested section train.augment

A stage that reads only part of a section gets a smaller dataclass whose fields are
:func:`part_of` the full one, so each rule is written once, in the full section::

    @dataclass(frozen=True)
    class PlotTrainParams:
        seed: int = part_of(TrainParams)
        augment: AugmentParams = part_of(TrainParams)

From the dataclass, :func:`section_spec` derives the dotted keys and their rules,
:func:`build_section` makes the object from checked values, and :func:`dotted` gives the
dotted keys back from an object.
"""

from __future__ import annotations

from dataclasses import Field, asdict, field, fields, is_dataclass
from typing import Any, get_type_hints

from stages.common.param_rules import Rule

_RULE = "param_rule"        # metadata of a param field: its Rule
_PART_OF = "param_part_of"  # metadata of a borrowed field: the section it is borrowed from


def param(rule: Rule) -> Any:
    """A section field holding one param, whose value must pass ``rule``.

    Parameters
    ----------
    rule : Rule
        What the value may be, e.g. ``Float(gt=0)``.

    Returns
    -------
    dataclasses.Field
        With no default: every param a stage reads must be in ``params.yaml``.
    """
    return field(metadata={_RULE: rule})


def part_of(section: type) -> Any:
    """A field of a partial section: the field of the same name and type in ``section``.

    Parameters
    ----------
    section : type
        The full section dataclass that declares the field (its rule, or its type if the
        field is a nested section).

    Returns
    -------
    dataclasses.Field
        Resolved against ``section`` by :func:`section_spec`, which raises ``TypeError``
        if ``section`` has no such field or gives it another type.
    """
    return field(metadata={_PART_OF: section})


def is_section(kind: Any) -> bool:
    """Whether a field's type is itself a section (a dataclass), not a param's value."""
    return isinstance(kind, type) and is_dataclass(kind)


def _typed_fields(section: type) -> list[tuple[Field, Any]]:
    hints = get_type_hints(section)  # resolves the annotations, strings under PEP 563
    return [(f, hints[f.name]) for f in fields(section)]


def _origin(section: type, borrowed: Field, kind: Any) -> tuple[Field, Any]:
    """The field (and type) a :func:`part_of` field stands for, followed to its declaration."""
    source = borrowed.metadata[_PART_OF]
    found = {f.name: (f, k) for f, k in _typed_fields(source)}.get(borrowed.name)
    if found is None:
        raise TypeError(f"{section.__name__}.{borrowed.name} is part_of({source.__name__}), "
                        f"which has no field {borrowed.name}")
    if found[1] != kind:
        raise TypeError(f"{section.__name__}.{borrowed.name} is typed {kind!r}, but "
                        f"{source.__name__}.{borrowed.name} is {found[1]!r}")
    return _origin(source, *found) if _PART_OF in found[0].metadata else found


def section_spec(section: type, prefix: str) -> dict[str, Rule]:
    """Every param of ``section`` (nested sections flattened) under its dotted key.

    Parameters
    ----------
    section : type
        A section dataclass.
    prefix : str
        Its own dotted key in ``params.yaml``: ``"train"``, ``"train.augment"``.

    Returns
    -------
    dict
        ``{"train.lr": Float(gt=0, max=10), ..., "train.augment.max_shift": ...}``, in
        field order.

    Raises
    ------
    TypeError
        When a field is neither :func:`param`, :func:`part_of` nor a section (a mistake in
        the code, not in ``params.yaml``).
    """
    spec: dict[str, Rule] = {}
    for declared, kind in _typed_fields(section):
        key = f"{prefix}.{declared.name}"
        if _PART_OF in declared.metadata:
            declared, kind = _origin(section, declared, kind)
        if is_section(kind):
            spec.update(section_spec(kind, key))
        elif _RULE in declared.metadata:
            spec[key] = declared.metadata[_RULE]
        else:
            raise TypeError(f"{section.__name__}.{declared.name} needs param(rule), part_of(section) "
                            "or a section dataclass as its type")
    return spec


def build_section(section: type, values: dict[str, Any], prefix: str) -> Any:
    """The ``section`` object holding ``values``, nested sections included.

    Parameters
    ----------
    section : type
        A section dataclass.
    values : dict
        Checked values under dotted keys, at least every key of
        ``section_spec(section, prefix)``.
    prefix : str
        The section's dotted key, as for :func:`section_spec`.

    Returns
    -------
    section
        Its fields filled from ``values``.
    """
    arguments = {}
    for f, kind in _typed_fields(section):
        key = f"{prefix}.{f.name}"
        arguments[f.name] = build_section(kind, values, key) if is_section(kind) else values[key]
    return section(**arguments)


def flatten(tree: Any, prefix: str) -> dict[str, Any]:
    """Nested dicts as one dict under dotted keys: ``flatten({"a": {"b": 1}}, "x") == {"x.a.b": 1}``.

    Parameters
    ----------
    tree : dict or Any
        Nested dicts (anything else is a leaf value).
    prefix : str
        The dotted key of ``tree`` itself; ``""`` for a whole file.

    Returns
    -------
    dict
        Each leaf value under its dotted key, in the order of ``tree``.
    """
    if isinstance(tree, dict):
        flat = {}
        for name, value in tree.items():
            flat.update(flatten(value, f"{prefix}.{name}" if prefix else str(name)))
        return flat
    return {prefix: tree}


def dotted(section: Any, prefix: str) -> dict[str, Any]:
    """A section object's values under their dotted ``params.yaml`` keys, in field order.

    Parameters
    ----------
    section : a section dataclass instance
        E.g. ``params.train``.
    prefix : str
        Its dotted key: ``"train"``.

    Returns
    -------
    dict
        ``{"train.seed": 0, ..., "train.augment.max_shift": 2.0, ...}``: the keys
        :func:`section_spec` gives for its class, lists as tuples.
    """
    return flatten(asdict(section), prefix)
