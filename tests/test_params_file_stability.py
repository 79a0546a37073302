"""params.yaml is written the way ``dvc exp run -S`` writes it back, so an experiment's diff is
exactly the keys it set, never a re-dumped list or a ``null`` turned into an empty value."""

import difflib
import shutil
from pathlib import Path

import pytest

from tests.params_file import set_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("key, value, line", [
    ("train.lr", 0.01, "  lr: 0.01"),
    ("train.batch_size", 128, "  batch_size: 128"),
    ("normalize.limit", 2000, "  limit: 2000"),
    ("train.augment.max_shift", 0.5, "    max_shift: 0.5"),
])
def test_setting_one_param_changes_exactly_one_line(tmp_path, key, value, line):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    before = (ROOT / "params.yaml").read_text().splitlines()
    set_params(tmp_path, {key: value})
    after = (tmp_path / "params.yaml").read_text().splitlines()
    changed = [d for d in difflib.unified_diff(before, after, lineterm="", n=0)
               if d[:1] in "+-" and not d.startswith(("+++", "---"))]
    assert len(changed) == 2 and changed[0].startswith("-"), changed
    removed, added = changed[0][1:], changed[1][1:]
    assert added.split("#")[0].rstrip() == line  # the value, as DVC writes it
    assert added.partition("#")[2] == removed.partition("#")[2]  # the comment is kept


def test_setting_a_value_back_restores_the_file_byte_for_byte(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    set_params(tmp_path, {"train.lr": 0.2, "train.channels": [6, 16]})
    set_params(tmp_path, {"train.lr": 0.05, "train.channels": [8, 24]})
    assert (tmp_path / "params.yaml").read_bytes() == (ROOT / "params.yaml").read_bytes()
