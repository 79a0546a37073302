"""The one exception type a stage raises for an expected failure (bad input, bad params)."""


class StageError(Exception):
    """An expected failure, reported to the user as one line, with a non-zero exit.

    The message names the file or param at fault and what was expected, e.g.
    ``params.yaml: train.lr must be a number > 0, got -1``.
    """


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message, or its type's name when it has none.

    Libraries' messages (YAML parsers, Arrow, zipfile) can span many lines, and ours are one line.
    """
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
