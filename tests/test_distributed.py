"""Distributed selection (coreaug_fast.selection.distributed) on 2 gloo ranks spawned from pytest:
exact greedy equals single-process selection bit for bit, GreeDi's objective against
centralised greedy, bad input raising ValueError on every rank."""
import os
import zlib

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import coreaug_fast
from coreaug_fast.train import ddp
from objectives import facility_objective

WORLD = 2

# name -> data and call settings. Shards are uneven (rank 1 holds ~70%), global indices are
# a gapped random permutation (so no rank's rows arrive in index order), class ids have gaps.
CASES = {
    "lazy-distance": dict(kw=dict(fraction=0.3)),
    "naive-distance": dict(kw=dict(fraction=0.3, optimizer="naive")),
    "lazy-sqdistance": dict(kw=dict(budget=7, similarity="sqdistance")),
    "naive-sqdistance": dict(kw=dict(budget=7, similarity="sqdistance", optimizer="naive")),
    "lazy-exp": dict(kw=dict(fraction=0.2, similarity="exp")),
    "factored-distance": dict(factored=True, kw=dict(fraction=0.25)),
    "factored-sqdistance-naive": dict(factored=True, kw=dict(fraction=0.25, similarity="sqdistance",
                                                             optimizer="naive")),
    # class 9 lives on rank 0 only; per-class budgets with a zero (class 3 picks nothing)
    "lonely-class-budgets": dict(lonely=9, kw=dict(budget=[0, 0, 0, 0, 0, 5, 0, 4, 0, 6])),
    "float16": dict(dtype=torch.float16, kw=dict(fraction=0.3)),
    "empty-rank": dict(empty_rank=0, kw=dict(fraction=0.3)),
}
CLASS_IDS = [3, 5, 7, 9]  # classes 0-2, 4, 6, 8 absent


def make_case(name, n=160, d=6):
    spec = CASES[name]
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    x = torch.randn(n, d, generator=g).to(spec.get("dtype", torch.float32))
    emb = (torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)) if spec.get("factored") else x
    labels = torch.tensor(CLASS_IDS)[torch.randint(0, len(CLASS_IDS), (n,), generator=g)]
    gidx = torch.randperm(n, generator=g) * 3 + 11
    shard = (torch.rand(n, generator=g) < 0.7).long()
    if "lonely" in spec:
        shard[labels == spec["lonely"]] = 0
    if "empty_rank" in spec:
        shard[:] = 1 - spec["empty_rank"]
    return emb, labels, gidx, shard, dict(spec["kw"])


def _rows(emb, sel):
    return tuple(e[sel] for e in emb) if isinstance(emb, tuple) else emb[sel]


def single_process(name):
    """The reference: one process, all rows in ascending global index."""
    emb, labels, gidx, _, kw = make_case(name)
    order = torch.argsort(gidx)
    cs = coreaug_fast.select_coreset(_rows(emb, order), labels[order], indices=gidx[order], **kw)
    return cs, gidx[order]


# ------------------------------------------------------------------ the spawned ranks

def _bad_call(name, rank, group):
    emb, labels, gidx, shard, kw = make_case("lazy-distance")
    mine = (shard == rank).nonzero().squeeze(1)
    x, y, i = emb[mine], labels[mine], gidx[mine]
    if name == "bad-no-indices":
        i = None
    elif name == "bad-length-on-rank-1" and rank == 1:
        i = i[:-1]
    elif name == "bad-settings-differ":
        kw = dict(fraction=0.3 if rank == 0 else 0.4)
    elif name == "bad-duplicate-index":
        i, y = i.clone(), y.clone()
        i[0], y[0] = 5000, 3  # the same global index, same class, on both ranks
    return coreaug_fast.select_coreset(x, y, indices=i, group=group, **kw)


def _worker(rank, init, out, names, greedi):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD)
    group = dist.group.WORLD
    try:
        for name in names:
            if name.startswith("bad-"):
                try:
                    _bad_call(name, rank, group)
                    res = {"error": None}
                except ValueError as e:
                    res = {"error": str(e)}
            else:
                emb, labels, gidx, shard, kw = make_case(name)
                mine = (shard == rank).nonzero().squeeze(1)
                cs = coreaug_fast.select_coreset(_rows(emb, mine), labels[mine], indices=gidx[mine], group=group, **kw)
                res = {"coreset": cs, "indices": gidx[mine]}
            torch.save(res, os.path.join(out, f"{name}-{rank}.pt"))
        for name, (kw, max_rows) in greedi.items():
            emb, labels, gidx = greedi_data(name)
            mine = torch.arange(rank, labels.shape[0], WORLD)
            cs = coreaug_fast.select_coreset(_rows(emb, mine), labels[mine], indices=gidx[mine], group=group,
                                             max_rows_per_rank=max_rows, **kw)
            torch.save({"coreset": cs, "indices": gidx[mine]}, os.path.join(out, f"{name}-{rank}.pt"))
        ctx = ddp.active()
        for how in ("weights", "count"):
            logits, targets, weights = loss_data()
            rows = torch.arange(rank, logits.shape[0], WORLD)
            part = logits[rows].clone().requires_grad_()
            ddp.batch_loss(part, targets[rows], weights[rows], how, ctx).backward()
            torch.save({"rows": rows, "grad": part.grad / WORLD},  # DDP averages over ranks
                       os.path.join(out, f"loss-{how}-{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


BAD = ["bad-no-indices", "bad-length-on-rank-1", "bad-settings-differ", "bad-duplicate-index"]
GREEDI = {
    "greedi-distance": (dict(fraction=0.05), 150),
    "greedi-sqdistance": (dict(fraction=0.05, similarity="sqdistance"), 150),
    "greedi-exp-lazy": (dict(fraction=0.05, similarity="exp"), 150),
    "greedi-factored": (dict(fraction=0.05), 150),
}


def greedi_data(name, n=900, d=8):
    """Classes of 450 and 400 rows (3 GreeDi parts each at 150 rows per part) and one of 50
    (not split); plain rows, or factored (grad (n, 4), features (n, 3)) ones."""
    g = torch.Generator().manual_seed(7)
    emb = (torch.randn(n, 4, generator=g), torch.randn(n, 3, generator=g)) if "factored" in name \
        else torch.randn(n, d, generator=g)
    labels = torch.cat([torch.zeros(450), torch.ones(400), torch.full((50,), 2.0)]).long()
    labels = labels[torch.randperm(n, generator=g)]
    return emb, labels, torch.arange(n)


def _dense(emb):
    """Rows as one (n, D) float64 matrix (grad ⊗ features materialised)."""
    if isinstance(emb, tuple):
        return (emb[0].double()[:, :, None] * emb[1].double()[:, None, :]).flatten(1)
    return emb.double()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Spawn the 2 ranks once; every case writes each rank's result to a file."""
    tmp = tmp_path_factory.mktemp("dist")
    mp.start_processes(_worker, args=(f"file://{tmp}/init", str(tmp), list(CASES) + BAD, GREEDI),
                       nprocs=WORLD, join=True, start_method="spawn")

    def load(name):
        return [torch.load(tmp / f"{name}-{r}.pt", weights_only=False) for r in range(WORLD)]
    return load


def loss_data(n=37, c=5):
    """A global batch with zero weights (as DDP padding has) and odd size."""
    g = torch.Generator().manual_seed(3)
    weights = torch.rand(n, generator=g) * 3
    weights[[4, 9]] = 0.0
    return torch.randn(n, c, generator=g), torch.randint(0, c, (n,), generator=g), weights


# ------------------------------------------------------------------ exactness

@pytest.mark.parametrize("name", list(CASES))
def test_distributed_equals_single_process(ranks, name):
    ref, ref_idx = single_process(name)
    for res in ranks(name):
        cs = res["coreset"]
        for field in ("indices", "weights", "gains", "labels", "classes", "offsets"):
            assert torch.equal(getattr(cs, field), getattr(ref, field)), field
        # assignment: per rank, for its own rows, as the single process assigned them
        where = torch.searchsorted(ref_idx, res["indices"])
        assert torch.equal(cs.assignment, ref.assignment[where])


def test_cases_are_not_trivial():
    ref, _ = single_process("lonely-class-budgets")
    assert ref.classes.tolist() == CLASS_IDS and len(ref) == 5 + 4 + 6  # class 3 gets no picks
    emb, labels, gidx, shard, _ = make_case("lonely-class-budgets")
    assert (shard[labels == 9] == 0).all() and (shard == 1).sum() > (shard == 0).sum()


@pytest.mark.parametrize("name", BAD)
def test_bad_input_raises_on_every_rank(ranks, name):
    errors = [r["error"] for r in ranks(name)]
    assert all(e is not None for e in errors), errors
    if name == "bad-no-indices":
        assert all("needs indices=" in e for e in errors)
    if name == "bad-length-on-rank-1":
        assert "indices has" in errors[1] and "rank(s) [1]" in errors[0]
    if name == "bad-settings-differ":
        assert all("disagree" in e for e in errors)
    if name == "bad-duplicate-index":
        assert all("more than one rank" in e for e in errors)


# ------------------------------------------------------------------ GreeDi


@pytest.mark.parametrize("name", list(GREEDI))
def test_greedi_objective_close_to_centralised(ranks, name):
    kw, _ = GREEDI[name]
    emb, labels, gidx = greedi_data(name)
    x = _dense(emb)
    central = coreaug_fast.select_coreset(emb, labels, indices=gidx, **kw)
    res = ranks(name)
    cs = res[0]["coreset"]
    for r in res[1:]:
        for field in ("indices", "weights", "gains"):
            assert torch.equal(r["coreset"].__dict__[field], cs.__dict__[field])
    sim = kw.get("similarity", "distance")
    ratio = (facility_objective(x, labels, cs.indices, sim)
             / facility_objective(x, labels, central.indices, sim))
    print(f"{name}: GreeDi / centralised objective = {ratio:.4f}")
    assert ratio >= 0.9
    assert torch.equal(cs.offsets, central.offsets) and torch.equal(cs.labels, central.labels)
    # the small class (50 rows) was not split: exact
    t = (central.classes == 2).nonzero().item()
    lo, hi = int(central.offsets[t]), int(central.offsets[t + 1])
    assert torch.equal(cs.indices[lo:hi], central.indices[lo:hi])
    assert torch.equal(cs.weights[lo:hi], central.weights[lo:hi])


@pytest.mark.parametrize("name", list(GREEDI))
def test_greedi_weights_count_every_row(ranks, name):
    """γ_j = rows of the class (on every rank) whose nearest chosen element is j, and each
    rank's assignment points there."""
    emb, labels, gidx = greedi_data(name)
    x = _dense(emb)
    res = ranks(name)
    cs = res[0]["coreset"]
    assign = torch.empty(x.shape[0], dtype=torch.long)
    for r in res:
        assign[r["indices"]] = r["coreset"].assignment
    for t, c in enumerate(cs.classes.tolist()):
        lo, hi = int(cs.offsets[t]), int(cs.offsets[t + 1])
        rows = (labels == c).nonzero().squeeze(1)
        d = torch.cdist(x[rows], x[cs.indices[lo:hi]])
        nearest = d.argmin(1) + lo
        assert (assign[rows] == nearest).float().mean() > 0.99  # float32 vs float64 near-ties
        assert torch.equal(torch.bincount(assign[rows] - lo, minlength=hi - lo).float(), cs.weights[lo:hi])
    assert float(cs.weights.sum()) == x.shape[0]


# ------------------------------------------------------------------ DDP training

@pytest.mark.parametrize("how", ["weights", "count"])
def test_ddp_batch_loss_gives_the_global_batch_gradient(ranks, how):
    """Rank-local losses whose DDP-averaged gradient is the gradient of the global batch's
    weighted mean (``count``: over the rows with weight > 0, as padding has weight 0)."""
    logits, targets, weights = loss_data()
    full = logits.clone().requires_grad_()
    if how == "weights":
        coreaug_fast.weighted_cross_entropy(full, targets, weights).backward()
    else:
        (coreaug_fast.weighted_cross_entropy(full, targets, weights, reduction="sum") / (weights > 0).sum()).backward()
    for res in ranks(f"loss-{how}"):
        torch.testing.assert_close(res["grad"], full.grad[res["rows"]], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------ failures end every rank

FAILURES = ["checks", "selection", "greedi-counts"]


def _inject(where):
    """Make this rank's next selection raise RuntimeError at ``where``; returns the undo."""
    from coreaug_fast.selection import distributed, engine

    module, name = {"checks": (engine, "check_arguments"), "selection": (engine, "select_local"),
                    "greedi-counts": (distributed, "_nearest_chosen")}[where]
    original = getattr(module, name)

    def boom(*args, **kwargs):
        raise RuntimeError(f"injected at {where}")

    setattr(module, name, boom)
    return lambda: setattr(module, name, original)


def _failing_worker(rank, init, out):
    import datetime

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=120))
    try:
        for where in FAILURES:
            undo = _inject(where) if rank == 1 else (lambda: None)
            emb, labels, gidx = greedi_data("greedi-distance")
            mine = torch.arange(rank, labels.shape[0], WORLD)
            try:
                coreaug_fast.select_coreset(emb[mine], labels[mine], 0.05, indices=gidx[mine], group=dist.group.WORLD,
                                            max_rows_per_rank=150)
                res = None
            except Exception as e:  # noqa: BLE001 - the test records whatever each rank raised
                res = f"{type(e).__name__}: {e}"
            undo()
            torch.save(res, os.path.join(out, f"fail-{where}-{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_failure_on_one_rank_ends_every_rank_with_an_error(tmp_path):
    """An injected RuntimeError on rank 1 (in its argument checks, before the agreement
    step; in its local selection; in GreeDi's weight counting) ends both ranks with an
    error, and the group stays usable for the next call. A hang fails after 240 s."""
    import time

    ctx = mp.start_processes(_failing_worker, args=(f"file://{tmp_path}/init", str(tmp_path)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=max(1.0, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail("a rank hung after another rank failed")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    for where in FAILURES:
        errors = [torch.load(tmp_path / f"fail-{where}-{r}.pt", weights_only=False) for r in range(WORLD)]
        assert errors[1] == f"RuntimeError: injected at {where}"
        assert errors[0] is not None and errors[0].startswith("RuntimeError: select_coreset(group=...): rank(s) [1]")


def test_greedi_distances_apply_the_duplicate_threshold():
    """GreeDi's nearest-chosen distances treat duplicates as every other path does: a row
    and its copy are at distance 0 exactly, whatever the expansion's rounding."""
    from coreaug_fast.selection.distributed import _sqdist_to

    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 24, generator=g) * 3 + 50
    d = _sqdist_to(x, x)
    assert torch.all(d.diagonal() == 0)
    a, h = torch.randn(256, 5, generator=g), torch.randn(256, 7, generator=g) * 10
    d = _sqdist_to((a, h), (a, h))
    assert torch.all(d.diagonal() == 0)
    assert torch.all(d + torch.eye(256) * 1e30 > 0)  # distinct rows stay apart


def test_sharded_plan_uses_the_exact_fraction_rule():
    """The sharded path's picks per class come from the same rule as one process's:
    7% of 100 rows is 7 (math.ceil(0.07 * 100) is 8)."""
    from coreaug_fast.selection.distributed import _ShardPlan

    counts = torch.tensor([[60, 30, 0], [40, 20, 0]])  # classes of 100 and 50 rows, one absent
    plan = _ShardPlan(counts, 0.07, None, None, WORLD)
    assert plan.k_c == [7, 4, 0] and plan.total == 11 and plan.present == [0, 1]
    plan = _ShardPlan(counts, None, 5, 30, WORLD)  # GreeDi: 100 rows -> 4 parts, 50 rows -> 2
    assert plan.greedi == [0, 1] and plan.parts_of[:2] == [4, 2]
    assert [j.kind for j in plan.jobs].count("union") == 2
