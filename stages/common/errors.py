"""The one exception type for an expected failure, in the stages and the ``lenet`` commands."""


class LenetError(Exception):
    """An expected failure (bad input, bad params, a damaged file), shown as one line, exit 1.

    The message names the file or param at fault and what was expected, e.g.
    ``params.yaml: train.lr must be greater than 0, got -1``.
    """


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (libraries' can span many), or its type's name when it has none."""
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
