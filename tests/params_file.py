"""Edit a scratch copy of params.yaml exactly as ``dvc exp run -S`` does: with DVC's own code.

DVC rewrites params.yaml through Hydra overrides (``dvc.utils.hydra.apply_overrides``), which
also re-dumps every non-dict value in its own style. Editing the file any other way would
hide a params.yaml that changes beyond the key that was set.
"""

import json
from pathlib import Path

from dvc.utils.hydra import apply_overrides
from ruamel.yaml import YAML


def override(key: str, value, *, add: bool = False) -> str:
    """The ``-S`` argument that sets ``key`` to ``value``: ``train.lr=0.01``, ``train.init='randn'``.

    ``add`` prefixes ``++`` (add the key if it is missing), as a user adding a new key would.
    """
    if isinstance(value, str):
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = json.dumps(value)  # numbers, true/false, null, lists
    return f"{'++' if add else ''}{key}={text}"


def _has_key(tree, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def set_params(root: Path, changes: dict) -> None:
    """Set dotted keys, e.g. ``{"train.lr": 0.01}``, in ``root/params.yaml`` the way ``-S`` does."""
    path = Path(root) / "params.yaml"
    tree = YAML(typ="safe", pure=True).load(path.read_text())
    apply_overrides(str(path), [override(k, v, add=not _has_key(tree, k)) for k, v in changes.items()])
