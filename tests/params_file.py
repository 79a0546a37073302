"""Edit a scratch copy of params.yaml the way ``dvc exp run -S`` does (comments kept)."""

from pathlib import Path

from ruamel.yaml import YAML


def set_params(root: Path, changes: dict) -> None:
    """Set dotted keys, e.g. ``{"train.lr": 0.01}``, in ``root/params.yaml``."""
    yaml = YAML()
    data = yaml.load((root / "params.yaml").read_text())
    for key, value in changes.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    with open(root / "params.yaml", "w") as handle:
        yaml.dump(data, handle)
