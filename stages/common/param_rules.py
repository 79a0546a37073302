"""What a param value may be: one rule per kind of value.

:class:`Int`, :class:`Float`, :class:`Bool`, :class:`Choice`, :class:`Str`, :class:`ListOf`
and :class:`Optional`. A rule checks a value read from ``params.yaml`` and returns it (a
float for :class:`Float`, a tuple for :class:`ListOf`), or raises a one-line
:class:`StageError` naming the key, what was expected and what was found::

    Float(gt=0).check("train.lr", -1)
    # StageError: params.yaml: train.lr must be a number > 0, got -1
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from stages.common.errors import StageError

PARAMS_FILE = "params.yaml"


class Rule:
    """Checks one param value: :meth:`accepts` decides, :meth:`convert` shapes what is kept."""

    expected: str = "a value"

    def accepts(self, value: Any) -> bool:
        """Whether ``value``, as ``params.yaml`` holds it, passes the rule."""
        raise NotImplementedError

    def convert(self, value: Any) -> Any:
        """The value the stage gets for an accepted ``value``: itself, unless a rule says otherwise."""
        return value

    def check(self, key: str, value: Any) -> Any:
        """The checked value of param ``key``.

        Parameters
        ----------
        key : str
            The dotted key, for the message: ``train.lr``.
        value : Any
            The value as ``params.yaml`` holds it.

        Returns
        -------
        Any
            The value the stage reads (see :meth:`convert`).

        Raises
        ------
        StageError
            ``params.yaml: <key> must be <expected>, got <value>`` when the rule refuses it.
        """
        if not self.accepts(value):
            raise self.fail(key, value)
        return self.convert(value)

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
    """An integer (not a bool) within ``[min, max]``, either bound optional."""

    min: int | None = None
    max: int | None = None

    @property
    def expected(self) -> str:
        return _bounds_text("an integer", min=self.min, max=self.max)

    def accepts(self, value):
        if isinstance(value, bool) or not isinstance(value, int):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)


@dataclass(frozen=True)
class Float(Rule):
    """A finite number (an integer is taken as a float) within the given bounds, each optional."""

    gt: float | None = None
    min: float | None = None
    max: float | None = None
    lt: float | None = None

    @property
    def expected(self) -> str:
        text = _bounds_text("a number", gt=self.gt, min=self.min, max=self.max)
        return text + (f" and < {self.lt}" if self.lt is not None else "")

    def accepts(self, value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return ((self.gt is None or value > self.gt) and (self.min is None or value >= self.min)
                and (self.max is None or value <= self.max) and (self.lt is None or value < self.lt))

    def convert(self, value):
        return float(value)


@dataclass(frozen=True)
class Bool(Rule):
    """``true`` or ``false`` (YAML's ``yes`` is a string in YAML 1.2, as DVC reads it)."""

    expected = "true or false"

    def accepts(self, value):
        return isinstance(value, bool)


class Choice(Rule):
    """One of the ``allowed`` strings."""

    def __init__(self, *allowed: str):
        self.allowed = tuple(allowed)
        self.expected = "one of " + ", ".join(self.allowed)

    def accepts(self, value):
        return value in self.allowed


@dataclass(frozen=True)
class Str(Rule):
    """A non-empty string."""

    expected = "a non-empty string"

    def accepts(self, value):
        return isinstance(value, str) and value != ""


@dataclass(frozen=True)
class ListOf(Rule):
    """A list of values each passing ``item``; ``length`` fixes its size, else non-empty.

    The stage gets a tuple, so the params it holds cannot change under it.
    """

    item: Rule
    length: int | None = None

    @property
    def expected(self) -> str:
        size = f"{self.length} " if self.length is not None else "a non-empty list of "
        return f"{'a list of ' if self.length is not None else ''}{size}items, each {self.item.expected}"

    def accepts(self, value):
        return isinstance(value, list) and bool(value) and (self.length is None or len(value) == self.length)

    def check(self, key, value):
        """As :meth:`Rule.check`; an item that fails is named by its index: ``fetch.mirrors[1]``."""
        if not self.accepts(value):
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
        """As :meth:`Rule.check`; a value ``rule`` refuses is reported against this rule."""
        if value is None:
            return None
        try:
            return self.rule.check(key, value)
        except StageError:
            raise self.fail(key, value) from None
