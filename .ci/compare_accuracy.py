"""CI: the rerun default pipeline must reach the test accuracy main carries, within a tolerance.

Usage: python .ci/compare_accuracy.py [REV]   (REV: the committed baseline, default HEAD)

Same CPU and BLAS build: the numbers are identical. Another CPU runs other BLAS kernels,
whose last bits differ and grow over 40 epochs into a different (equally good) model; the
README gives the measured spread. TOLERANCE_POINTS is the README's stated tolerance.
"""

import json
import subprocess
import sys
from pathlib import Path

TOLERANCE_POINTS = 0.2  # percentage points of test accuracy = 20 of the 10,000 test images
EVAL = "metrics/eval.json"


def main() -> int:
    rev = sys.argv[1] if len(sys.argv) > 1 else "HEAD"
    shown = subprocess.run(["git", "show", f"{rev}:{EVAL}"], capture_output=True, text=True)
    if shown.returncode != 0:
        print(f"error: {EVAL} is not committed at {rev}: main must carry its results", file=sys.stderr)
        return 1
    committed = json.loads(shown.stdout)["test_accuracy"] * 100
    rerun = json.loads(Path(EVAL).read_text())["test_accuracy"] * 100
    delta = rerun - committed
    verdict = "ok" if abs(delta) <= TOLERANCE_POINTS else "FAILED"
    print(f"test accuracy: committed {committed:.2f}%, rerun {rerun:.2f}% "
          f"({delta:+.2f} points; tolerance ±{TOLERANCE_POINTS}): {verdict}")
    return 0 if verdict == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
