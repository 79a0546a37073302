"""tests/mnist_mirror.py finds the MNIST files where a new user has them."""

import gzip

from tests import mnist_mirror


def _fake_raw(directory, names=mnist_mirror.NAMES):
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_bytes(name.encode())


def test_mnist_mirror_env_wins(tmp_path, monkeypatch):
    for name in mnist_mirror.NAMES:
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(b"x"))
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path))
    assert mnist_mirror.find_mirror() == tmp_path.resolve()


def test_after_dvc_repro_data_raw_serves_as_a_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path / "empty"))
    monkeypatch.setattr(mnist_mirror, "ROOT", tmp_path / "clone")  # no ../shared/mnist beside it
    monkeypatch.setattr(mnist_mirror, "RAW", tmp_path / "clone/data/raw")
    monkeypatch.setattr(mnist_mirror, "FROM_RAW", tmp_path / "clone/.pytest_cache/mnist-mirror")
    _fake_raw(tmp_path / "clone/data/raw")
    found = mnist_mirror.find_mirror()
    assert found == tmp_path / "clone/.pytest_cache/mnist-mirror"
    for name in mnist_mirror.NAMES:
        assert gzip.decompress((found / f"{name}.gz").read_bytes()) == name.encode()


def test_nothing_anywhere_is_none(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_MIRROR", raising=False)
    monkeypatch.setattr(mnist_mirror, "ROOT", tmp_path / "clone")
    monkeypatch.setattr(mnist_mirror, "RAW", tmp_path / "clone/data/raw")
    _fake_raw(tmp_path / "clone/data/raw", mnist_mirror.NAMES[:3])  # one file missing
    assert mnist_mirror.find_mirror() is None
