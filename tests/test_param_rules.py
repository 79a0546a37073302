"""The value rules: what each accepts, what the stage gets, and the one-line refusal."""

import pytest

from stages.common.errors import StageError
from stages.common.param_rules import Bool, Choice, Float, Int, ListOf, Optional, Str


@pytest.mark.parametrize("rule, value, kept", [
    (Int(min=0), 3, 3),
    (Float(gt=0), 2, 2.0),  # an integer is taken as a float
    (Bool(), False, False),
    (Choice("a", "b"), "b", "b"),
    (Str(), "x", "x"),
    (ListOf(Int(), length=2), [1, 2], (1, 2)),  # a tuple: the stage cannot change it
    (Optional(Int()), None, None),
    (Optional(Int()), 4, 4),
])
def test_accepted_values_and_what_the_stage_gets(rule, value, kept):
    assert rule.check("x.y", value) == kept
    assert type(rule.check("x.y", value)) is type(kept)


@pytest.mark.parametrize("rule, value, message", [
    (Int(min=1, max=3), 4, "x.y must be an integer >= 1 and <= 3, got 4"),
    (Int(), True, "x.y must be an integer, got True"),
    (Float(min=0, lt=1), 1, "x.y must be a number >= 0 and < 1, got 1"),
    (Float(), float("nan"), "x.y must be a number, got nan"),
    (Bool(), "yes", "x.y must be true or false, got 'yes'"),
    (Bool(), 1, "x.y must be true or false, got 1"),
    (Choice("a", "b"), "c", "x.y must be one of a, b, got 'c'"),
    (Str(), "", "x.y must be a non-empty string, got ''"),
    (Str(), 3, "x.y must be a non-empty string, got 3"),
    (ListOf(Str()), [], "x.y must be a non-empty list of items, each a non-empty string, got []"),
    (ListOf(Int(), length=2), [1], "x.y must be a list of 2 items, each an integer, got [1]"),
    (ListOf(Int(min=0)), [1, -1], "x.y[1] must be an integer >= 0, got -1"),
    (Optional(Int(min=0)), -1, "x.y must be null or an integer >= 0, got -1"),
])
def test_refusals_name_the_key_what_was_expected_and_what_was_found(rule, value, message):
    with pytest.raises(StageError) as error:
        rule.check("x.y", value)
    assert str(error.value) == f"params.yaml: {message}"
