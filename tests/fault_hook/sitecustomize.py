"""Test-only fault hook: with ``LENET_TEST_FAULT=<point>:<SIGNAL>``, a stage signals itself there.

The tests put this folder on ``PYTHONPATH``, so it acts in every ``python -m stages.<name>``,
even one that ``dvc repro`` starts, and nowhere else (not in DVC's own process). Points:

- ``begin``: the stage's staging area is made, nothing is built yet;
- ``built``: every output is complete in staging, nothing is in place yet.

``SIGSTOP`` freezes the stage there so that a test can act (send Ctrl-C to the process group,
edit params.yaml) before it goes on. Production code carries no hook: this patches it.
"""

import os
import signal
import sys

_point, _, _signame = os.environ.get("LENET_TEST_FAULT", "").partition(":")
_argv = sys.orig_argv
if _point and "-m" in _argv and _argv[_argv.index("-m") + 1].startswith("stages."):
    from stages.common import outputs

    def _fault() -> None:
        os.kill(os.getpid(), signal.Signals[_signame or "SIGKILL"])

    if _point == "begin":
        class _Staging(outputs.Staging):
            def __init__(self, *args):
                super().__init__(*args)
                _fault()

        outputs.Staging = _Staging
    elif _point == "built":
        _put_in_place = outputs.put_in_place

        def _faulty_put_in_place(*args):
            _fault()
            _put_in_place(*args)

        outputs.put_in_place = _faulty_put_in_place
    else:
        raise SystemExit(f"LENET_TEST_FAULT: unknown point {_point!r} (begin, built)")
