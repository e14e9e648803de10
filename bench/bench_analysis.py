"""Jacobian singular-spectrum analysis: building the per-example Jacobian (vmap over jacrev)
and decomposing it (Gram + eigh vs SVD), on the CPU and, when present, a GPU."""
import pytest
import torch
from conftest import requires_gpu, sync

from coreaug_fast import analysis
from coreaug_fast.analysis.spectrum import _decompose

DEVICES = ["cpu", pytest.param("cuda", marks=requires_gpu)]


def _mlp(device, hidden=128, classes=10):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, hidden), torch.nn.ReLU(),
                               torch.nn.Linear(hidden, classes)).to(device)


def _cnn(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, 10)).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("arch,shape,n", [("mlp", (1, 8, 8), 128), ("cnn", (3, 32, 32), 64)])
def test_jacobian(benchmark, device, arch, shape, n):
    model = _mlp(device) if arch == "mlp" else _cnn(device)
    x = torch.rand(n, *shape, device=device)
    P = sum(p.numel() for p in model.parameters())
    benchmark.group = f"analysis-jacobian-{arch}"
    benchmark.extra_info.update(examples=n, rows=n * 10, params=P)

    def run():
        analysis.network_jacobian(model, x, chunk_size=32)
        sync()

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["gram", "svd"])
def test_decompose(benchmark, device, method):
    # the Jacobian of a trained-like MLP on 100 examples: 1000 rows, 9610 columns
    model = _mlp(device)
    x = torch.rand(100, 1, 8, 8, device=device)
    jac = analysis.network_jacobian(model, x)
    benchmark.group = "analysis-decompose"
    benchmark.extra_info.update(rows=jac.shape[0], cols=jac.shape[1])

    def run():
        _decompose(jac, method, vectors=True)
        sync()

    # LAPACK's SVD of this wide matrix takes about a minute on 2 CPU cores: few rounds
    benchmark.pedantic(run, rounds=2, warmup_rounds=0)
