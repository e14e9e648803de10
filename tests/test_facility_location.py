"""The Triton greedy (interpreted on CPU tensors without a GPU) against the CPU op and the
float64 reference: same sequence, lazy bit-identical to naive, stored and on-the-fly costs."""
import os

import pytest
import torch
import triton
import triton.language as tl

import coreaug_fast
from coreaug_fast.kernels import distances
from coreaug_fast.kernels import facility_location as triton_fl
from coreaug_fast.reference import facility_location_reference

from conftest import HAS_GPU, TRITON_DEVICE
from objectives import facility_objective

pytestmark = pytest.mark.triton
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
    plan = coreaug_fast.selection.engine.ClassGroups(labels, 0.2, None)
    xs = x[plan.perm].contiguous()
    a, h = (xs[:, :4].contiguous(), xs[:, 4:].contiguous()) if factored else (xs, None)
    args = (a, h, plan.offsets, plan.budgets, plan.total)
    stored = triton_fl.facility_location(*args, optimizer=optimizer, stored=True)
    fly = triton_fl.facility_location(*args, optimizer=optimizer, stored=False)
    assert torch.equal(stored[0], fly[0]) and torch.equal(stored[2], fly[2])
    torch.testing.assert_close(stored[1], fly[1], rtol=1e-5, atol=1e-5)
    lazy_fly = triton_fl.facility_location(*args, optimizer="lazy", stored=False)
    naive_fly = triton_fl.facility_location(*args, optimizer="naive", stored=False)
    assert torch.equal(lazy_fly[1], naive_fly[1])  # exactness holds for costs computed on the fly


@triton.jit
def _tile_and_row_gains(COST, XTA, XTH, XN, NT, U, CAND, TILE_OUT, ROW_OUT, LAYOUT, n, DA, DH, inv_dim,
                        SIM: tl.constexpr, STORED: tl.constexpr, FACTORED: tl.constexpr,
                        BC: tl.constexpr, BI: tl.constexpr):
    # the matrix's start and row stride, loaded as the greedy kernel loads them (not constants)
    MAT0 = tl.load(LAYOUT)
    NPAD = tl.load(LAYOUT + 1)
    lanes = tl.arange(0, BC)
    cand = tl.load(CAND + lanes)
    g = triton_fl._gains(COST, MAT0, NPAD, XTA, XTH, XN, NT, U, 0, n, cand, cand >= 0, DA, DH, inv_dim,
                      SIM, STORED, FACTORED, BC, BI)
    tl.store(TILE_OUT + lanes, g)
    for j in range(BC):
        e = tl.load(CAND + j)
        g_row = triton_fl._gains(COST, MAT0, NPAD, XTA, XTH, XN, NT, U, 0, n, e, e >= 0, DA, DH, inv_dim,
                              SIM, STORED, FACTORED, 0, BI)  # BC 0: the one row e
        tl.store(ROW_OUT + j, g_row)


@pytest.mark.parametrize("stored", [True, False])
@pytest.mark.parametrize("factored", [False, True])
@pytest.mark.parametrize("similarity", SIMS)
def test_one_row_gain_has_the_bits_of_its_lane_in_a_tile(stored, factored, similarity):
    """The lazy greedy evaluates its top row alone and the naive sweep evaluates it as a lane
    of 16: the two must agree bit for bit, on every row chunk (several of them here)."""
    bc, bi, _ = triton_fl._greedy_block_sizes(torch.device(TRITON_DEVICE), stored)
    n = 2 * bi + 5
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 9, generator=g)
    a, h = (x[:, :3].contiguous(), x[:, 3:].contiguous()) if factored else (x, None)
    a, h = a.to(TRITON_DEVICE), (h.to(TRITON_DEVICE) if factored else None)
    sim = SIMS.index(similarity)
    emb = (a, h) if factored else a
    offsets = torch.tensor([0, n])
    costs, mat_off, npad, cmax = distances.class_cost_matrices(emb, offsets, sim)
    # a mid-greedy state: levels between 0 and the start level
    level = 0.0 if similarity == "exp" else float(cmax[0])
    u = (level - torch.rand(n, generator=g) * (abs(level) + 1)).to(TRITON_DEVICE)
    cand = torch.randperm(n, generator=g)[:bc].int().to(TRITON_DEVICE)
    xn = distances._sq_norms(a, h)
    xta = a.t().contiguous()
    xth = h.t().contiguous() if factored else xta
    dim = a.shape[1] * (h.shape[1] if factored else 1)
    tile, row = (torch.empty(bc, device=TRITON_DEVICE) for _ in range(2))
    layout = torch.stack([mat_off[0], npad[0].long()]).to(TRITON_DEVICE)
    _tile_and_row_gains[(1,)](costs if stored else xn, xta, xth, xn, n, u, cand, tile, row, layout, n,
                              a.shape[1], h.shape[1] if factored else 0, 1.0 / dim,
                              SIM=sim, STORED=stored, FACTORED=factored, BC=bc, BI=bi)
    assert torch.equal(tile, row)
    if stored:  # and they are the gains: float64 from the same costs
        k = costs[:n * int(npad[0])].view(n, -1)[:, :n].double().cpu()
        want = (u.double().cpu()[None, :] - k[cand.long().cpu()]).clamp(min=0).sum(1)
        torch.testing.assert_close(tile.double().cpu(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fly", [False, True])
def test_classes_larger_than_every_block(fly, monkeypatch):
    """Classes longer than the row chunk, the candidate tile and the bound scan of the
    device's block sizes, and rows wider than a dot chunk: the multi-chunk paths, with lazy
    bit-identical to naive and the picks of the CPU op."""
    if fly:
        monkeypatch.setattr(coreaug_fast.selection.engine, "MAX_MATRIX_BYTES", 0)  # costs on the fly
    device = torch.device(TRITON_DEVICE)
    _, bi, bs = triton_fl._greedy_block_sizes(device, not fly)
    _, block_d = distances._tile_sizes(device)
    sizes = [bs + bi + 5, bi + 3]
    g = torch.Generator().manual_seed(8)
    # on the fly, 5 columns: one pass of the four multiply-add chains and a remainder
    x = torch.randn(sum(sizes), 5 if fly else 2 * block_d + 3, generator=g)
    labels = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])[torch.randperm(sum(sizes), generator=g)]
    x, labels = x.to(TRITON_DEVICE), labels.to(TRITON_DEVICE)
    lazy = _select(x, labels, 0.1)
    naive = _select(x, labels, 0.1, optimizer="naive")
    assert torch.equal(lazy.indices, naive.indices) and torch.equal(lazy.gains, naive.gains)
    assert torch.equal(lazy.assignment, naive.assignment)
    cpu = coreaug_fast.select_coreset(x.cpu(), labels.cpu(), 0.1, backend="torch")
    _assert_same_up_to_a_near_tie(lazy, cpu, x, labels, "distance")


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
        triton_fl.facility_location(torch.zeros(2, 2), None, torch.tensor([0, 2]), torch.tensor([1]), 1,
                                 optimizer="stochastic")


_COMPILE_FOR_SM90 = r"""
import os
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from coreaug_fast.kernels import distances
from coreaug_fast.kernels import facility_location as triton_fl
f, i, l = "*fp32", "*i32", "*i64"
target = GPUTarget("cuda", 90, 32)
NUM_WARPS = distances.CLASS_COST_WARPS
def compile(fn, sig, num_warps=4, **const):
    sig.update({k: "constexpr" for k in const})
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const), target=target,
                   options={"num_warps": num_warps})
GREEDY = dict(COST=f, XTA=f, XTH=f, XN=f, NT="i32", U=f, UB=f, CLASS=l, OUT_ROWS=l, OUT_GAINS=f, ASSIGN=l,
              T0="i32", T1="i32", DA="i32", DH="i32", inv_dim="fp32")
DISTANCE, EXP = distances.DISTANCE.value, distances.EXP.value
compile(triton_fl._lazy_greedy_kernel, dict(GREEDY, CAND=i), SIM=DISTANCE, STORED=True, FACTORED=True,
        BC=16, BI=256, BS=1024)
compile(triton_fl._naive_greedy_kernel, dict(GREEDY), SIM=EXP, STORED=False, FACTORED=True, BC=16, BI=64)
compile(triton_fl._lazy_greedy_kernel, dict(GREEDY, CAND=i), num_warps=16, SIM=DISTANCE, STORED=False,
        FACTORED=False, BC=16, BI=64, BS=1024)
compile(triton_fl._refresh_kernel, dict(COST=f, XTA=f, XTH=f, XN=f, NT="i32", U=f, UB=f, CLASS=l, TILE_CLASS=i,
        TILE_START=i, DA="i32", DH="i32", inv_dim="fp32", slack_per_chunk="fp32"),
        SIM=EXP, STORED=False, FACTORED=False, BC=16, BI=64)
compile(distances._class_cost_kernel, dict(XA=f, XH=f, XN=f, COST=f, CMAX=f, TILE_CLASS=i, TILE_I=i, TILE_J=i,
        ROW_OFF=i, MAT_OFF=l, NPAD=i, DA="i32", DH="i32", inv_dim="fp32"),
        SIM=DISTANCE, FACTORED=True, STORE=True, WANT_MAX=True, BLOCK=64, BLOCK_D=32, num_warps=NUM_WARPS)
compile(distances._sq_distance_kernel, dict(XA=f, XH=f, YA=f, YH=f, XN=f, YN=f, OUT=f, M="i32", N="i32",
        DA="i32", DH="i32", s_xa="i32", s_xh="i32", s_ya="i32", s_yh="i32", s_om="i32"),
        FACTORED=False, ZERO_DIAGONAL=True, BLOCK_M=64, BLOCK_N=64, BLOCK_D=32)
print("compiled")
"""


@pytest.mark.skipif(HAS_GPU, reason="the kernels compile for the real device here")
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
