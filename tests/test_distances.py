"""The Triton pairwise-distance kernel (interpreted on CPU tensors without a GPU)
against float64 torch.cdist, plain and factored."""
import pytest
import torch

import coreaug_fast
from coreaug_fast.reference import pairwise_distances_reference
from kernels_import import distances

from conftest import TRITON_DEVICE


@pytest.mark.parametrize("m,n,d", [(1, 1, 1), (5, 37, 3), (40, 17, 70)])
def test_plain_matches_float64_cdist(m, n, d):
    g = torch.Generator().manual_seed(m * 100 + n)
    x = torch.randn(m, d, generator=g).to(TRITON_DEVICE)
    y = torch.randn(n, d, generator=g).to(TRITON_DEVICE)
    out = distances.pairwise_sq_distances(x, y)
    ref = pairwise_distances_reference(x, y, squared=True)
    assert out.dtype == torch.float32 and out.shape == (m, n)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-4)


def test_self_distances_have_exact_zero_diagonal_and_are_nonnegative():
    x = torch.randn(33, 8, generator=torch.Generator().manual_seed(1)).to(TRITON_DEVICE) + 100.0
    x[5] = x[4]  # a duplicate row: distance exactly 0 after clamping
    out = distances.pairwise_sq_distances(x)
    assert torch.all(out.diagonal() == 0)
    assert torch.all(out >= 0)
    torch.testing.assert_close(out.double(), pairwise_distances_reference(x, squared=True), rtol=1e-4, atol=0.05)


def test_factored_matches_materialised():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(21, 4, generator=g).to(TRITON_DEVICE)
    h = torch.randn(21, 19, generator=g).to(TRITON_DEVICE)
    emb = coreaug_fast.FactoredEmbeddings(a, h)
    out = distances.pairwise_sq_distances(emb)
    ref = pairwise_distances_reference(emb, squared=True)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(out, distances.pairwise_sq_distances(emb.materialize()), rtol=1e-4, atol=1e-3)


def test_mixing_plain_and_factored_is_an_error():
    x = torch.randn(3, 4).to(TRITON_DEVICE)
    with pytest.raises(ValueError, match="both be plain or both be factored"):
        distances.pairwise_sq_distances(x, coreaug_fast.FactoredEmbeddings(x, x))
