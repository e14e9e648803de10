"""The Triton pairwise-distance kernel (interpreted on CPU tensors without a GPU)
against float64 torch.cdist, plain and factored."""
import pytest
import torch

import coreaug_fast
from coreaug_fast.reference import pairwise_distances_reference
from kernels_import import distances

from conftest import TRITON_DEVICE

pytestmark = pytest.mark.triton


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


@pytest.mark.parametrize("similarity", [distances.DISTANCE, distances.SQDISTANCE, distances.EXP])
def test_class_cost_matrices_match_float64_cdist_per_class(similarity):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(75, 6, generator=g).to(TRITON_DEVICE)
    offsets = torch.tensor([0, 1, 34, 34, 75])  # a class of one, an empty class
    costs, mat_off, npad, cmax = distances.class_cost_matrices(x, offsets, similarity)
    for c in range(4):
        lo, hi = int(offsets[c]), int(offsets[c + 1])
        n = hi - lo
        if n == 0:
            continue
        assert int(npad[c]) % 16 == 0 and int(npad[c]) >= n
        k = costs[int(mat_off[c]):int(mat_off[c]) + n * int(npad[c])].view(n, int(npad[c]))[:, :n]
        d = pairwise_distances_reference(x[lo:hi])
        ref = {distances.DISTANCE: d, distances.SQDISTANCE: d * d, distances.EXP: -torch.exp(-d / 6)}[similarity]
        torch.testing.assert_close(k.double(), ref, rtol=1e-5, atol=2e-6)
        assert torch.equal(k, k.T)  # exactly symmetric
        assert torch.all(k.diagonal() == (-1.0 if similarity == distances.EXP else 0.0))
        expect = 0.0 if similarity == distances.EXP else float(ref.max())
        assert float(cmax[c]) == pytest.approx(expect, rel=1e-5, abs=1e-6)
    _, _, _, cmax_only = distances.class_cost_matrices(x, offsets, similarity, store=False)
    assert torch.equal(cmax_only, cmax)


def test_class_cost_matrices_factored_and_duplicates():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(40, 3, generator=g).to(TRITON_DEVICE)
    h = torch.randn(40, 9, generator=g).to(TRITON_DEVICE)
    a[7], h[7] = a[3], h[3]  # a duplicate row: its distance must be exactly 0
    emb = coreaug_fast.FactoredEmbeddings(a, h)
    offsets = torch.tensor([0, 40])
    costs, _, npad, _ = distances.class_cost_matrices(emb, offsets, distances.SQDISTANCE)
    k = costs.view(40, int(npad[0]))[:, :40]
    torch.testing.assert_close(k.double(), pairwise_distances_reference(emb, squared=True), rtol=1e-5, atol=1e-3)
    assert k[3, 7] == 0 and k[7, 3] == 0
