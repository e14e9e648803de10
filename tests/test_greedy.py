"""The Triton greedy (interpreted on CPU tensors without a GPU) against the CPU op and the
float64 reference: same sequence, lazy bit-identical to naive, stored and on-the-fly costs."""
import os

import pytest
import torch

import coreaug_fast
from coreaug_fast.kernels import greedy
from coreaug_fast.reference import facility_location_reference

from conftest import TRITON_DEVICE
from objectives import facility_objective

SIMS = ["distance", "sqdistance", "exp"]


def _data(n, d, classes, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g).to(TRITON_DEVICE), torch.randint(0, classes, (n,), generator=g).to(TRITON_DEVICE)


def _select(*args, **kwargs):
    return coreaug_fast.select_coreset(*args, backend="triton", **kwargs)


def _assert_same_selection(a, b, gain_rtol=1e-4):
    assert torch.equal(a.indices.cpu(), b.indices.cpu())
    assert torch.equal(a.weights.cpu(), b.weights.cpu())
    assert torch.equal(a.assignment.cpu(), b.assignment.cpu())
    assert torch.equal(a.offsets.cpu(), b.offsets.cpu())
    scale = float(b.gains.abs().max()) if len(b) else 1.0
    torch.testing.assert_close(a.gains.cpu().double(), b.gains.cpu().double(), rtol=gain_rtol, atol=1e-6 * scale)


def _assert_same_up_to_a_near_tie(a, b, x, labels, similarity, rel=1e-5):
    """``a`` and ``b`` (two float32 backends) make the same picks, or the same up to a step
    where their two picks' exact marginal gains (float64, given the common prefix) agree to
    ``rel``: a near-tie that float32 rounding (the GEMM's summation order, which depends on
    the CPU's BLAS kernel) may break either way. The steps after it are not compared."""
    ia, ib = a.indices.cpu(), b.indices.cpu()
    diverge = (ia != ib).nonzero()
    if diverge.numel() == 0:
        _assert_same_selection(a, b)
        return
    p = int(diverge[0])
    assert torch.equal(a.offsets.cpu(), b.offsets.cpu())
    assert int(a.labels[p]) == int(b.labels[p])
    base = facility_objective(x, labels, ia[:p], similarity)
    gain_a = facility_objective(x, labels, ia[: p + 1], similarity) - base
    gain_b = facility_objective(x, labels, torch.cat([ia[:p], ib[p:p + 1]]), similarity) - base
    assert abs(gain_a - gain_b) <= rel * max(abs(gain_a), abs(gain_b)), (p, int(ia[p]), int(ib[p]), gain_a, gain_b)
    torch.testing.assert_close(a.gains[:p].cpu().double(), b.gains[:p].cpu().double(), rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("similarity", SIMS)
def test_triton_lazy_is_naive_bit_for_bit_and_matches_torch(similarity):
    x, labels = _data(100, 4, 3, seed=1)
    lazy = _select(x, labels, 0.2, similarity=similarity)
    naive = _select(x, labels, 0.2, similarity=similarity, optimizer="naive")
    assert torch.equal(lazy.indices, naive.indices) and torch.equal(lazy.gains, naive.gains)
    assert torch.equal(lazy.assignment, naive.assignment)
    cpu = coreaug_fast.select_coreset(x.cpu(), labels.cpu(), 0.2, similarity=similarity, backend="torch")
    _assert_same_up_to_a_near_tie(lazy, cpu, x, labels, similarity)


def test_triton_matches_float64_reference_wide_rows():
    x, labels = _data(60, 40, 2, seed=2)
    out = _select(x, labels, 0.25)
    _assert_same_selection(out, facility_location_reference(x.cpu(), labels.cpu(), 0.25), gain_rtol=2e-5)


def test_triton_factored_matches_materialised():
    g = torch.Generator().manual_seed(3)
    n, c = 70, 3
    logits = (3 * torch.randn(n, c, generator=g)).to(TRITON_DEVICE)
    labels = torch.randint(0, c, (n,), generator=g).to(TRITON_DEVICE)
    emb = coreaug_fast.gradient_embeddings(logits.cpu(), labels.cpu(), features=torch.randn(n, 6, generator=g))
    emb = coreaug_fast.FactoredEmbeddings(emb.grad.to(TRITON_DEVICE), emb.features.to(TRITON_DEVICE))
    fact = _select(emb, labels, 0.2)
    _assert_same_selection(fact, _select(emb.materialize(), labels, 0.2))
    _assert_same_selection(fact, facility_location_reference(emb, labels.cpu(), 0.2), gain_rtol=2e-5)


@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("optimizer", ["lazy", "naive"])
def test_costs_on_the_fly_match_stored_matrices(factored, optimizer):
    x, labels = _data(50, 20, 2, seed=4)
    plan = coreaug_fast.engine.ClassGroups(labels, 0.2, None)
    xs = x[plan.perm].contiguous()
    a, h = (xs[:, :4].contiguous(), xs[:, 4:].contiguous()) if factored else (xs, None)
    args = (a, h, plan.offsets, plan.budgets, plan.total)
    stored = greedy.facility_location(*args, optimizer=optimizer, stored=True)
    fly = greedy.facility_location(*args, optimizer=optimizer, stored=False)
    assert torch.equal(stored[0], fly[0]) and torch.equal(stored[2], fly[2])
    torch.testing.assert_close(stored[1], fly[1], rtol=1e-5, atol=1e-5)
    lazy_fly = greedy.facility_location(*args, optimizer="lazy", stored=False)
    naive_fly = greedy.facility_location(*args, optimizer="naive", stored=False)
    assert torch.equal(lazy_fly[1], naive_fly[1])  # exactness holds for costs computed on the fly


def test_triton_edge_cases():
    x, _ = _data(14, 3, 1, seed=5)
    x[9] = x[8]  # a duplicate
    labels = torch.tensor([4, 1, 1, 1, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6]).to(TRITON_DEVICE)  # classes 0, 2, 3, 5 absent
    budget = torch.zeros(7, dtype=torch.long)
    budget[1], budget[4], budget[6] = 0, 1, 100  # budget 0, a class of one, budget above the class size
    out = _select(x, labels, budget=budget)
    ref = coreaug_fast.select_coreset(x.cpu(), labels.cpu(), budget=budget, backend="torch")
    _assert_same_selection(out, ref)
    assert out.classes.tolist() == [1, 4, 6] and out.offsets.tolist() == [0, 0, 1, 11]
    assert torch.all(out.assignment[1:4] == -1)
    same = _select(torch.ones(5, 2).to(TRITON_DEVICE), torch.zeros(5, dtype=torch.long).to(TRITON_DEVICE), budget=3)
    assert same.indices.tolist() == [0, 1, 2] and same.weights.tolist() == [5.0, 0.0, 0.0]


def test_triton_backend_runs_stochastic_in_the_cpu_op():
    x, labels = _data(80, 3, 2, seed=6)
    kw = dict(optimizer="stochastic", epsilon=0.2)
    a = _select(x, labels, 0.1, generator=torch.Generator().manual_seed(0), **kw)
    b = coreaug_fast.select_coreset(x.cpu(), labels.cpu(), 0.1, generator=torch.Generator().manual_seed(0),
                                    backend="torch", **kw)
    assert torch.equal(a.indices.cpu(), b.indices)


def test_launcher_rejects_stochastic():
    with pytest.raises(ValueError, match="naive' or 'lazy'"):
        greedy.facility_location(torch.zeros(2, 2), None, torch.tensor([0, 2]), torch.tensor([1]), 1,
                                 optimizer="stochastic")


_COMPILE_FOR_SM90 = r"""
import os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from coreaug_fast.kernels import distances, greedy
f, i, l = "*fp32", "*i32", "*i64"
target = GPUTarget("cuda", 90, 32)
NUM_WARPS = distances.CLASS_COST_WARPS
def compile(fn, sig, num_warps=4, **const):
    sig.update({k: "constexpr" for k in const})
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=target,
                   options={"num_warps": num_warps})
compile(greedy._greedy_kernel, dict(COST=f, XA=f, XH=f, XN=f, U=f, UB=f, CAND=i, CLASS=l, OUT_ROWS=l,
        OUT_GAINS=f, ASSIGN=l, T0="i32", T1="i32", DA="i32", DH="i32", inv_dim="fp32"),
        SIM=0, STORED=True, FACTORED=True, OPT=1, BC=16, BI=256, BS=1024, BLOCK_D=32)
compile(greedy._greedy_kernel, dict(COST=f, XA=f, XH=f, XN=f, U=f, UB=f, CAND=i, CLASS=l, OUT_ROWS=l,
        OUT_GAINS=f, ASSIGN=l, T0="i32", T1="i32", DA="i32", DH="i32", inv_dim="fp32"),
        SIM=2, STORED=False, FACTORED=True, OPT=0, BC=16, BI=64, BS=1024, BLOCK_D=32)
compile(greedy._refresh_kernel, dict(COST=f, XA=f, XH=f, XN=f, U=f, UB=f, CLASS=l, TILE_CLASS=i, TILE_START=i,
        DA="i32", DH="i32", inv_dim="fp32", slack_per_chunk="fp32"),
        SIM=2, STORED=False, FACTORED=False, BC=16, BI=64, BLOCK_D=32)
compile(distances._class_cost_kernel, dict(XA=f, XH=f, XN=f, COST=f, CMAX=f, TILE_CLASS=i, TILE_I=i, TILE_J=i,
        ROW_OFF=i, MAT_OFF=l, NPAD=i, DA="i32", DH="i32", inv_dim="fp32"),
        SIM=0, FACTORED=True, STORE=True, WANT_MAX=True, BLOCK=64, BLOCK_D=32, num_warps=NUM_WARPS)
compile(distances._sq_distance_kernel, dict(XA=f, XH=f, YA=f, YH=f, XN=f, YN=f, OUT=f, M="i32", N="i32",
        DA="i32", DH="i32", s_xa="i32", s_xh="i32", s_ya="i32", s_yh="i32", s_om="i32"),
        FACTORED=False, ZERO_DIAGONAL=True, BLOCK_M=64, BLOCK_N=64, BLOCK_D=32)
print("compiled")
"""


def test_kernels_compile_for_an_h100():
    """The interpreter does not type-check loop-carried values or lower layouts: compile the
    main kernels for sm_90 ahead of time (ptxas ships with triton; no GPU needed)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], capture_output=True, text=True, env=env, timeout=300)
    if "ptxas" in run.stderr and "not found" in run.stderr:
        pytest.skip("no ptxas for an ahead-of-time compile")
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]
