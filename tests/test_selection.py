"""select_coreset (CPU op and API), select_random, select_max_loss: against the naive
float64 reference, an independent numpy greedy and apricot; properties; edge cases; bad input."""
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import coreaug_fast
from coreaug_fast import selection
from coreaug_fast.selection import engine
from coreaug_fast.reference import facility_location_reference
from coreaug_fast.vocabulary import OPTIMIZERS, SIMILARITIES, code
from objectives import facility_objective

SIMS = ["distance", "sqdistance", "exp"]


def _data(n, d, classes, seed, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    return x.to(device), labels.to(device)


def _numpy_greedy(x, k):
    """An independent naive greedy on one class, in the C-free form: first the row with
    the smallest distance sum, then the largest Σ_i max(0, dmin_i − d_ie)."""
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    chosen = [int(np.argmin(d.sum(0)))]
    dmin = d[chosen[0]].copy()
    for _ in range(1, k):
        gains = np.clip(dmin[None, :] - d, 0, None).sum(1)
        gains[chosen] = -1
        e = int(np.argmax(gains))
        chosen.append(e)
        dmin = np.minimum(dmin, d[e])
    return chosen


# ---------------------------------------------------------------- exactness

@pytest.mark.parametrize("similarity", SIMS)
def test_lazy_matches_naive_bit_for_bit(device, similarity):
    x, labels = _data(600, 6, 3, seed=1, device=device)
    lazy = coreaug_fast.select_coreset(x, labels, 0.2, similarity=similarity, optimizer="lazy")
    naive = coreaug_fast.select_coreset(x, labels, 0.2, similarity=similarity, optimizer="naive")
    assert lazy.indices.device == x.device
    assert torch.equal(lazy.indices, naive.indices)
    assert torch.equal(lazy.gains, naive.gains)
    assert torch.equal(lazy.weights, naive.weights)
    assert torch.equal(lazy.assignment, naive.assignment)


@pytest.mark.parametrize("similarity", SIMS)
@pytest.mark.parametrize("d", [3, 40])  # direct differences and the GEMM path
def test_matches_float64_reference_order(device, similarity, d):
    # small random classes: gains differ by far more than float32 rounding
    x, labels = _data(90, d, 3, seed=d, device=device)
    out = coreaug_fast.select_coreset(x, labels, 0.3, similarity=similarity)
    assert out.indices.device == x.device and out.weights.device == x.device
    ref = facility_location_reference(x, labels, 0.3, similarity=similarity)
    assert torch.equal(out.indices.cpu(), ref.indices)
    assert torch.equal(out.weights.cpu(), ref.weights)
    assert torch.equal(out.assignment.cpu(), ref.assignment)
    assert torch.equal(out.offsets.cpu(), ref.offsets) and torch.equal(out.labels.cpu(), ref.labels)
    torch.testing.assert_close(out.gains.cpu().double(), ref.gains, rtol=2e-5, atol=1e-6 * float(ref.gains.max()))


def test_matches_independent_numpy_greedy():
    x = np.random.default_rng(3).standard_normal((120, 4))
    out = coreaug_fast.select_coreset(torch.tensor(x), torch.zeros(120, dtype=torch.long), budget=25)
    assert out.indices.tolist() == _numpy_greedy(x, 25)


@pytest.mark.parametrize("similarity", SIMS)
def test_objective_matches_reference_on_larger_data(similarity):
    x, labels = _data(1000, 12, 2, seed=5)
    out = coreaug_fast.select_coreset(x, labels, 0.1, similarity=similarity)
    ref = facility_location_reference(x, labels, 0.1, similarity=similarity)
    f_out = facility_objective(x, labels, out.indices, similarity)
    f_ref = facility_objective(x, labels, ref.indices, similarity)
    assert f_out == pytest.approx(f_ref, rel=1e-6)


def test_same_objective_and_gains_as_apricot():
    apricot = pytest.importorskip("apricot")
    x, labels = _data(400, 5, 2, seed=7)
    out = coreaug_fast.select_coreset(x, labels, budget=30, similarity="sqdistance")
    for t, c in enumerate(out.classes.tolist()):
        rows = (labels == c).nonzero().squeeze(1)
        sel = apricot.FacilityLocationSelection(30, metric="euclidean", optimizer="lazy").fit(x[rows].double().numpy())
        ours = out.indices[out.offsets[t]:out.offsets[t + 1]]
        theirs = rows[torch.as_tensor(sel.ranking.astype(np.int64))]
        f_ours = facility_objective(x[rows], labels[rows], ours, "sqdistance")
        f_theirs = facility_objective(x[rows], labels[rows], theirs, "sqdistance")
        assert f_ours == pytest.approx(f_theirs, rel=1e-6)
        np.testing.assert_allclose(out.gains[out.offsets[t]:out.offsets[t + 1]].numpy(), sel.gains, rtol=1e-4)


def test_factored_matches_materialised():
    g = torch.Generator().manual_seed(11)
    n, c, d = 150, 4, 9
    logits = torch.randn(n, c, generator=g) * 3
    labels = torch.randint(0, c, (n,), generator=g)
    emb = coreaug_fast.gradient_embeddings(logits, labels, features=torch.randn(n, d, generator=g))
    fact = coreaug_fast.select_coreset(emb, labels, 0.2)
    dense = coreaug_fast.select_coreset(emb.materialize(), labels, 0.2)
    ref = facility_location_reference(emb, labels, 0.2)
    assert torch.equal(fact.indices, ref.indices)
    assert torch.equal(dense.indices, ref.indices)
    assert torch.equal(fact.weights, dense.weights)
    torch.testing.assert_close(fact.gains, dense.gains, rtol=1e-4, atol=1e-5)
    # a plain (grad, features) pair works too
    assert torch.equal(coreaug_fast.select_coreset((emb.grad, emb.features), labels, 0.2).indices, fact.indices)


@pytest.mark.parametrize("factored", [False, True])
def test_rows_computed_on_demand_match_the_stored_matrix(monkeypatch, factored):
    x, labels = _data(200, 40, 2, seed=13)
    emb = coreaug_fast.FactoredEmbeddings(x[:, :5], x[:, 5:]) if factored else x
    stored = coreaug_fast.select_coreset(emb, labels, 0.1)
    monkeypatch.setattr(engine, "MAX_MATRIX_BYTES", 0)
    streamed = coreaug_fast.select_coreset(emb, labels, 0.1)
    assert torch.equal(stored.indices, streamed.indices)
    assert torch.equal(stored.weights, streamed.weights)
    torch.testing.assert_close(stored.gains, streamed.gains, rtol=1e-5, atol=0)
    for opt in ("naive", "lazy"):  # exactness holds for on-demand rows too
        other = coreaug_fast.select_coreset(emb, labels, 0.1, optimizer=opt)
        assert torch.equal(other.gains, streamed.gains)


def test_many_classes_one_per_thread_equals_one_class_at_a_time():
    x, labels = _data(800, 5, 16, seed=17)
    together = coreaug_fast.select_coreset(x, labels, 0.1)
    for t, c in enumerate(together.classes.tolist()):
        rows = (labels == c).nonzero().squeeze(1)
        alone = coreaug_fast.select_coreset(x[rows], labels[rows], 0.1)
        assert torch.equal(rows[alone.indices], together.indices[together.offsets[t]:together.offsets[t + 1]])
        assert torch.equal(alone.gains, together.gains[together.offsets[t]:together.offsets[t + 1]])


# ---------------------------------------------------------------- properties

@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 60), d=st.integers(1, 5), classes=st.integers(1, 4),
       fraction=st.floats(0.01, 1.0), similarity=st.sampled_from(SIMS),
       optimizer=st.sampled_from(["naive", "lazy"]), seed=st.integers(0, 2**16))
def test_coreset_properties(n, d, classes, fraction, similarity, optimizer, seed):
    x, labels = _data(n, d, classes, seed)
    x = torch.round(x * 2) / 2  # coarse values: duplicates and ties are common
    out = coreaug_fast.select_coreset(x, labels, fraction, similarity=similarity, optimizer=optimizer)
    assert out.indices.dtype == torch.int64 and out.weights.dtype == torch.float32
    assert out.gains.dtype == torch.float32 and out.assignment.shape == (n,)
    assert out.indices.unique().numel() == out.indices.numel()
    assert torch.equal(out.labels, labels[out.indices])
    assert torch.equal(out.classes, labels.unique())
    for t, c in enumerate(out.classes.tolist()):
        lo, hi = int(out.offsets[t]), int(out.offsets[t + 1])
        n_c = int((labels == c).sum())
        assert hi - lo == min(n_c, math.ceil(Fraction(str(fraction)) * n_c))
        assert float(out.weights[lo:hi].sum()) == n_c
        gains = out.gains[lo:hi]
        assert torch.all(gains[1:] <= gains[:-1]), gains
        assert torch.all(gains >= 0)
        members = (labels == c).nonzero().squeeze(1)
        rep = out.assignment[members]
        assert torch.all((rep >= lo) & (rep < hi))
        # every row's representative is among its closest chosen
        dist = torch.cdist(x[members].double(), x[out.indices[lo:hi]].double())
        got = dist.gather(1, (rep - lo)[:, None]).squeeze(1)
        torch.testing.assert_close(got, dist.min(1).values, rtol=1e-5, atol=1e-5)
    # a chosen row represents itself, unless an earlier pick duplicates it
    assert torch.all(out.assignment[out.indices] <= torch.arange(len(out)))


def test_duplicate_points_are_chosen_once():
    base = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [5.0, 30.0]])
    x = base.repeat(3, 1)  # every point three times
    out = coreaug_fast.select_coreset(x, torch.zeros(15, dtype=torch.long), budget=5)
    assert sorted((out.indices % 5).tolist()) == [0, 1, 2, 3, 4]
    assert out.weights.tolist() == [3.0] * 5
    # once all distinct points are in, gains are 0 and ties go to the lowest rows
    more = coreaug_fast.select_coreset(x, torch.zeros(15, dtype=torch.long), budget=7)
    assert more.gains[5:].tolist() == [0.0, 0.0]
    rest = sorted(set(range(15)) - set(more.indices[:5].tolist()))
    assert more.indices[5:].tolist() == rest[:2]


def test_duplicates_on_the_gemm_path_are_exact_duplicates():
    x, _ = _data(30, 48, 1, seed=61)  # wide rows: distances by the GEMM expansion
    x = torch.cat([x, x[:10]])  # rows 30..39 repeat rows 0..9
    out = coreaug_fast.select_coreset(x, torch.zeros(40, dtype=torch.long), budget=30)
    assert sorted(out.indices.tolist()) == list(range(30))  # one of each distinct row
    assert out.weights.sum() == 40 and sorted(out.weights.tolist())[-10:] == [2.0] * 10


def test_identical_rows_tie_to_the_lowest_rows():
    x = torch.ones(6, 3)
    out = coreaug_fast.select_coreset(x, torch.zeros(6, dtype=torch.long), budget=3)
    assert out.indices.tolist() == [0, 1, 2]
    assert out.gains.tolist() == [0.0, 0.0, 0.0]
    assert out.weights.tolist() == [6.0, 0.0, 0.0]  # the earliest pick represents its ties


def test_class_of_one_budget_zero_and_budget_above_class_size(device):
    x, _ = _data(10, 3, 1, seed=19, device=device)
    labels = torch.tensor([0, 1, 1, 1, 2, 2, 2, 2, 2, 2], device=device)
    out = coreaug_fast.select_coreset(x, labels, budget=[1, 0, 100])
    out = coreaug_fast.Coreset(**{f: getattr(out, f).cpu() for f in out.__dataclass_fields__})
    x, labels = x.cpu(), labels.cpu()
    assert out.offsets.tolist() == [0, 1, 1, 7]
    assert out.indices[0] == 0 and out.weights[0] == 1 and out.gains[0] == 0
    assert torch.all(out.assignment[1:4] == -1)  # a class with no picks
    assert sorted(out.indices[1:].tolist()) == list(range(4, 10))
    assert out.weights[1:].tolist() == [1.0] * 6
    # with every row chosen, F(V) = Σ_i s(i, i) = n_c · C, C the largest distance in the class
    c = torch.cdist(x[4:].double(), x[4:].double()).max()
    assert float(out.gains[1:].double().sum()) == pytest.approx(6 * float(c), rel=1e-5)
    zero = coreaug_fast.select_coreset(x, labels, budget=0)
    assert len(zero) == 0 and torch.all(zero.assignment == -1) and zero.offsets.tolist() == [0, 0, 0, 0]


def test_classes_absent_from_labels_and_per_class_budgets():
    x, _ = _data(12, 2, 1, seed=23)
    labels = torch.tensor([7, 7, 7, 2, 2, 9, 9, 9, 9, 9, 9, 9])
    budget = torch.zeros(10, dtype=torch.long)
    budget[2], budget[7], budget[9] = 1, 2, 3
    out = coreaug_fast.select_coreset(x, labels, budget=budget)
    assert out.classes.tolist() == [2, 7, 9]
    assert out.labels.tolist() == [2, 7, 7, 9, 9, 9]
    assert out.offsets.tolist() == [0, 1, 3, 6]
    assert set(out.indices[:1].tolist()) <= {3, 4} and set(out.indices[1:3].tolist()) <= {0, 1, 2}


def test_fraction_rounds_up_per_class():
    x, _ = _data(23, 2, 1, seed=29)
    labels = torch.tensor([0] * 10 + [1] * 13)
    out = coreaug_fast.select_coreset(x, labels, 0.15)
    assert out.offsets.tolist() == [0, 2, 4]  # ceil(1.5) = 2, ceil(1.95) = 2


def test_indices_argument_maps_rows_to_dataset_ids():
    x, labels = _data(50, 3, 2, seed=31)
    ids = torch.arange(1000, 1050)
    plain = coreaug_fast.select_coreset(x, labels, 0.2)
    mapped = coreaug_fast.select_coreset(x, labels, 0.2, indices=ids)
    assert torch.equal(mapped.indices, plain.indices + 1000)
    assert torch.equal(mapped.assignment, plain.assignment)


def test_low_precision_and_non_contiguous_inputs():
    x, labels = _data(80, 6, 2, seed=37)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        xl = x.to(dtype)
        out = coreaug_fast.select_coreset(xl, labels, 0.2)
        ref = coreaug_fast.select_coreset(xl.float(), labels, 0.2)
        assert torch.equal(out.indices, ref.indices)
    wide = torch.cat([x, x], 1)[:, ::2]  # strided view of x
    assert not wide.is_contiguous()
    assert torch.equal(coreaug_fast.select_coreset(wide, labels[:], 0.2).indices,
                       coreaug_fast.select_coreset(wide.contiguous(), labels, 0.2).indices)
    assert torch.equal(coreaug_fast.select_coreset(x, labels.int(), 0.2).indices,
                       coreaug_fast.select_coreset(x, labels, 0.2).indices)


def test_torch_backend_returns_on_the_input_device(device):
    x, labels = _data(60, 4, 2, seed=67, device=device)
    out = coreaug_fast.select_coreset(x, labels, 0.2, backend="torch")
    assert out.indices.device == x.device and out.assignment.device == x.device
    assert torch.equal(out.indices.cpu(), coreaug_fast.select_coreset(x.cpu(), labels.cpu(), 0.2).indices)


def test_far_from_origin_rows_are_centred():
    x, labels = _data(60, 50, 2, seed=41)
    out = coreaug_fast.select_coreset(x + 1e4, labels, 0.2)
    assert torch.equal(out.indices, coreaug_fast.select_coreset(x, labels, 0.2).indices)


# ---------------------------------------------------------------- stochastic greedy

def test_stochastic_greedy_is_deterministic_under_a_generator():
    x, labels = _data(500, 4, 2, seed=43)

    def run(seed):
        return coreaug_fast.select_coreset(x, labels, 0.1, optimizer="stochastic", epsilon=0.1,
                                           generator=torch.Generator().manual_seed(seed))

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.indices, b.indices) and torch.equal(a.gains, b.gains)
    assert not torch.equal(a.indices, c.indices)
    assert a.indices.unique().numel() == len(a)
    assert torch.equal(a.weights.sum().reshape(1), torch.tensor([500.0]))
    lazy = coreaug_fast.select_coreset(x, labels, 0.1)
    # (1 − 1/e − ε) in expectation; in practice stochastic greedy lands close to greedy
    assert facility_objective(x, labels, a.indices) >= 0.95 * facility_objective(x, labels, lazy.indices)


def test_stochastic_samples_do_not_depend_on_progress_chunks():
    x, labels = _data(400, 3, 8, seed=47)
    kw = dict(optimizer="stochastic", generator=None)
    torch.manual_seed(5)
    a = coreaug_fast.select_coreset(x, labels, 0.2, progress=False, **kw)
    torch.manual_seed(5)
    b = coreaug_fast.select_coreset(x, labels, 0.2, progress=True, **kw)
    assert torch.equal(a.indices, b.indices)


def test_progress_bar(capsys):
    x, labels = _data(300, 3, 6, seed=53)
    out = coreaug_fast.select_coreset(x, labels, 0.1, progress=True)
    assert torch.equal(out.indices, coreaug_fast.select_coreset(x, labels, 0.1).indices)
    assert "coreset" in capsys.readouterr().err


# ---------------------------------------------------------------- baselines

def test_select_random():
    labels = torch.tensor([3] * 10 + [0] * 5 + [3] * 4)
    a = coreaug_fast.select_random(labels, 0.5, generator=torch.Generator().manual_seed(0))
    b = coreaug_fast.select_random(labels, 0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.indices, b.indices)
    assert a.classes.tolist() == [0, 3] and a.offsets.tolist() == [0, 3, 10]
    assert torch.equal(labels[a.indices], a.labels) and a.labels.tolist() == [0] * 3 + [3] * 7
    assert a.indices.unique().numel() == 10 and torch.all(a.weights == 1) and torch.all(a.gains == 0)
    assert torch.equal(a.assignment[a.indices], torch.arange(10))
    assert int((a.assignment == -1).sum()) == 9
    seen = set()
    for s in range(20):
        seen.update(coreaug_fast.select_random(labels, 0.2, generator=torch.Generator().manual_seed(s)).indices.tolist())
    assert seen == set(range(19))  # every row can be drawn


def test_select_max_loss():
    labels = torch.tensor([1, 0, 1, 0, 1, 1])
    losses = torch.tensor([0.5, 2.0, 3.0, 1.0, 3.0, 0.1])
    out = coreaug_fast.select_max_loss(losses, labels, 0.5)
    assert out.indices.tolist() == [1, 2, 4]  # class 0: row 1; class 1: ties 2 and 4, lowest first
    assert out.gains.tolist() == [2.0, 3.0, 3.0] and out.weights.tolist() == [1.0, 1.0, 1.0]
    assert out.offsets.tolist() == [0, 1, 3]


# ---------------------------------------------------------------- bad input

X = torch.zeros(4, 2)
L = torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize("args,kwargs,match", [
    ((X.masked_fill(torch.eye(4, 2, dtype=torch.bool), float("nan")), L, 0.5), {}, "embeddings contains NaN"),
    ((X.masked_fill(torch.eye(4, 2, dtype=torch.bool), float("inf")), L, 0.5), {}, "embeddings contains NaN or inf"),
    ((coreaug_fast.FactoredEmbeddings(X, X.masked_fill(torch.eye(4, 2, dtype=torch.bool), float("nan"))), L, 0.5),
     {}, "embeddings.features contains NaN"),
    ((X, torch.tensor([0, -1, 0, 0]), 0.5), {}, "labels has value -1"),
    ((X, L.float(), 0.5), {}, "labels must be an integer"),
    ((X, torch.zeros(5, dtype=torch.long), 0.5), {}, "labels has 5 rows, expected 4"),
    ((X, L, 0.0), {}, r"fraction must be a number in \(0, 1\]"),
    ((X, L, 1.5), {}, r"fraction must be a number in \(0, 1\]"),
    ((X, L), {}, "exactly one of fraction and budget"),
    ((X, L, 0.5), {"budget": 2}, "exactly one of fraction and budget"),
    ((X, L), {"budget": -1}, "budget must be >= 0"),
    ((X, L), {"budget": 1.5}, "budget must be an int"),
    ((X, torch.tensor([0, 0, 3, 3])), {"budget": [1, 1]}, "budget has 2 entries but labels has class 3"),
    ((X, L, 0.5), {"similarity": "cosine"}, "similarity must be one of"),
    ((X, L, 0.5), {"optimizer": "fast"}, "optimizer must be one of"),
    ((X, L, 0.5), {"backend": "cuda"}, "backend must be one of"),
    ((X, L, 0.5), {"epsilon": 0}, "epsilon must be a number"),
    ((X, L, 0.5), {"indices": torch.arange(3)}, "indices has 3 rows"),
    ((X, L, 0.5), {"indices": torch.arange(4.0)}, "indices must be an integer"),
    ((X, L.to("meta"), 0.5), {}, "tensors must be on one device"),
    ((torch.zeros(4), L, 0.5), {}, "embeddings must have 2 dimensions"),
    ((X.long(), L, 0.5), {}, "embeddings must be a floating"),
    (([[0.0]], L, 0.5), {}, "embeddings must be a torch.Tensor"),
    (((X, torch.zeros(3, 2)), L, 0.5), {}, "embeddings.features has 3 rows"),
])
def test_bad_input_raises_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        coreaug_fast.select_coreset(*args, **kwargs)


def test_group_needs_initialised_torch_distributed():
    # the distributed path itself is tested in test_distributed.py
    with pytest.raises(ValueError, match="torch.distributed"):
        coreaug_fast.select_coreset(X, L, 0.5, indices=torch.arange(4), group=object())
    with pytest.raises(ValueError, match="max_rows_per_rank"):
        coreaug_fast.select_coreset(X, L, 0.5, max_rows_per_rank=2)


def test_group_must_be_a_process_group():
    """'world' (or any non-group) is named as a bad group, not reported as a missing
    process group."""
    for bad in ("world", 0):
        with pytest.raises(ValueError, match=r"^group must be a torch.distributed ProcessGroup \(e.g. dist.group.WORLD\)"
                                              r" or None, got (str 'world'|int 0)"):
            coreaug_fast.select_coreset(X, L, 0.5, indices=torch.arange(4), group=bad)


def test_meta_tensors_are_named_before_any_value_is_read():
    for call, name in [(lambda: coreaug_fast.select_coreset(X.to("meta"), L.to("meta"), 0.5), "embeddings"),
                       (lambda: coreaug_fast.select_coreset((X.to("meta"), X.to("meta")), L.to("meta"), 0.5),
                        "embeddings"),
                       (lambda: coreaug_fast.select_random(L.to("meta"), 0.5), "labels"),
                       (lambda: coreaug_fast.select_max_loss(X[:, 0].to("meta"), L.to("meta"), 0.5), "losses")]:
        with pytest.raises(ValueError, match=f"^{name} is on the meta device"):
            call()


def test_per_class_budgets_beyond_int64_mean_every_row():
    """A per-class list may hold Python ints too large for int64, as the single int may
    (2**70 = every row): capped at the class size, like any budget."""
    x, labels = _data(30, 3, 2, seed=4)
    every = coreaug_fast.select_coreset(x, labels, budget=[2**70, 1])
    same = coreaug_fast.select_coreset(x, labels, budget=[int((labels == 0).sum()), 1])
    assert torch.equal(every.indices, same.indices) and torch.equal(every.weights, same.weights)
    assert torch.equal(coreaug_fast.select_coreset(x, labels, budget=(np.uint64(2**64 - 1), 1)).indices,
                       every.indices)
    with pytest.raises(ValueError, match="budget has value -1, expected >= 0"):
        coreaug_fast.select_coreset(x, labels, budget=[2**70, -1])


def test_baselines_bad_input():
    with pytest.raises(ValueError, match="fraction"):
        coreaug_fast.select_random(L, 0)
    with pytest.raises(ValueError, match="labels has value -2"):
        coreaug_fast.select_random(torch.tensor([0, -2]), 0.5)
    with pytest.raises(ValueError, match="losses contains NaN"):
        coreaug_fast.select_max_loss(torch.tensor([0.0, float("nan")]), torch.tensor([0, 0]), 0.5)
    with pytest.raises(ValueError, match="labels has 3 rows, expected 2"):
        coreaug_fast.select_max_loss(torch.zeros(2), torch.zeros(3, dtype=torch.long), 0.5)


def test_raw_op_checks_its_arguments():
    op = torch.ops.coreaug.facility_location
    x = torch.zeros(4, 2)
    dist, lazy = code(SIMILARITIES, "distance"), code(OPTIMIZERS, "lazy")
    with pytest.raises(RuntimeError, match="budgets"):
        op(x, None, torch.tensor([0, 4]), torch.tensor([5]), 5, dist, lazy, 0.01, 0, 1 << 30)
    with pytest.raises(RuntimeError, match="offsets"):
        op(x, None, torch.tensor([0, 3]), torch.tensor([1]), 1, dist, lazy, 0.01, 0, 1 << 30)
    with pytest.raises(RuntimeError, match=r"similarity must be a code in \[0, 3\) .*SIMILARITIES\), got 3"):
        op(x, None, torch.tensor([0, 4]), torch.tensor([1]), 1, len(SIMILARITIES), lazy, 0.01, 0, 1 << 30)
    with pytest.raises(RuntimeError, match=r"optimizer must be a code in \[0, 3\) .*OPTIMIZERS\), got -1"):
        op(x, None, torch.tensor([0, 4]), torch.tensor([1]), 1, dist, -1, 0.01, 0, 1 << 30)


@pytest.mark.parametrize("factored", [False, True])
def test_opcheck(factored):
    x, _ = _data(30, 4, 1, seed=59)
    h = torch.randn(30, 3) if factored else None
    args = (x, h, torch.tensor([0, 12, 30]), torch.tensor([3, 4]), 7, code(SIMILARITIES, "distance"),
            code(OPTIMIZERS, "lazy"), 0.01, 0, 1 << 30)
    torch.library.opcheck(torch.ops.coreaug.facility_location.default, args)


# ---------------------------------------------------------------- picks per class

def test_picks_for_fraction_is_exact_decimal_arithmetic():
    # fractions written with three decimals, against integer arithmetic on i/1000
    ns = [1, 2, 3, 7, 25, 50, 99, 100, 101, 999, 1000, 12345]
    for i in range(1, 1001):
        f = i / 1000
        for n in ns:
            assert selection.picks_for_fraction(f, n) == min(n, -(-i * n // 1000)), (f, n)
    # the cases, where math.ceil(fraction * n) gives 8
    for f, n in [(0.07, 100), (0.14, 50), (0.28, 25)]:
        assert math.ceil(f * n) == 8
        assert selection.picks_for_fraction(f, n) == 7 == math.ceil(Fraction(str(f)) * n)
    assert selection.picks_for_fraction(np.float32(0.07), 100) == 7
    assert selection.picks_for_fraction(np.float64(0.07), 100) == 7
    assert selection.picks_for_fraction(Fraction(1, 3), 10) == 4
    assert selection.picks_for_fraction(1, 10) == 10 and selection.picks_for_fraction(1e-9, 10) == 1


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(1e-9, 1.0), st.integers(1, 10**6).map(lambda i: i / 10**6),
                 st.fractions(Fraction(1, 10**6), Fraction(1)), st.floats(1e-6, 1.0).map(np.float32)),
       st.integers(0, 10**7))
def test_the_twin_restates_the_picks_rule(fraction, n):
    """The float64 twin restates the fraction → k rule rather than import it from the path it
    judges: the two must agree on every fraction a caller may pass."""
    from coreaug_fast.reference.facility_location import picks_reference

    assert picks_reference(fraction, n) == selection.picks_for_fraction(fraction, n)


def test_every_selector_uses_the_exact_rule():
    n = 100
    x, _ = _data(n, 3, 1, seed=71)
    labels = torch.zeros(n, dtype=torch.long)
    assert len(coreaug_fast.select_coreset(x, labels, 0.07)) == 7
    assert len(coreaug_fast.select_random(labels, 0.07)) == 7
    assert len(coreaug_fast.select_max_loss(torch.rand(n), labels, 0.07)) == 7
    assert len(facility_location_reference(x, labels, 0.07)) == 7
    two = torch.tensor([0] * 50 + [1] * 25)
    assert coreaug_fast.select_random(two, 0.14).offsets.tolist() == [0, 7, 11]
    assert coreaug_fast.select_random(two, 0.28).offsets.tolist() == [0, 14, 21]


# ---------------------------------------------------------------- silent wrong results ----------

@pytest.mark.parametrize("x", [
    torch.randn(40, 3, generator=torch.Generator().manual_seed(0)) * 1e20,            # squares overflow
    torch.randn(40, 3, generator=torch.Generator().manual_seed(0)).double() * 1e300,  # inf once float32
])
def test_embeddings_too_large_for_float32_raise(x):
    with pytest.raises(ValueError, match="too large for float32 distances"):
        coreaug_fast.select_coreset(x, torch.zeros(40, dtype=torch.long), budget=4)
    fine = coreaug_fast.select_coreset(x.double() / 1e290 if x.dtype == torch.float64 else x / 1e20,
                                       torch.zeros(40, dtype=torch.long), budget=4)
    assert torch.all(fine.weights > 0)


def test_factored_embeddings_too_large_raise():
    a, h = torch.randn(20, 3) * 1e10, torch.randn(20, 4) * 1e10
    with pytest.raises(ValueError, match="too large for float32 distances"):
        coreaug_fast.select_coreset((a, h), torch.zeros(20, dtype=torch.long), budget=2)


def test_repeated_indices_raise():
    x, labels = _data(6, 2, 1, seed=73)
    with pytest.raises(ValueError, match="indices has repeated values"):
        coreaug_fast.select_coreset(x, labels, budget=2, indices=torch.tensor([5, 6, 7, 5, 8, 9]))


def test_ties_go_to_the_lowest_row_among_equal_computed_gains():
    """What the README promises: equal *computed* gains go to the lowest row. The issue's
    example has equal exact gains that float32 rounding of the centred rows splits."""
    labels = torch.zeros(5, dtype=torch.long)
    x = torch.tensor([[-0.5], [-0.75], [0.0], [0.75], [0.0]])
    out = coreaug_fast.select_coreset(x, labels, budget=2, similarity="sqdistance")
    ref = facility_location_reference(x, labels, budget=2, similarity="sqdistance")
    assert ref.indices.tolist() == [2, 0] and ref.gains[1] == 0.75  # exact tie of rows 0 and 1
    assert out.indices.tolist() == [2, 1]  # rounding put row 1 ahead (documented)
    # shifted so that the class mean (0) and every centred value are exact: the tie holds
    y = torch.tensor([[-0.5], [-0.75], [0.0], [0.75], [0.5]])
    for opt in ("lazy", "naive"):
        out = coreaug_fast.select_coreset(y, labels, budget=2, similarity="sqdistance", optimizer=opt)
        ref = facility_location_reference(y, labels, budget=2, similarity="sqdistance")
        assert out.indices.tolist() == ref.indices.tolist()
        assert out.gains.double().tolist() == ref.gains.tolist()


# ---------------------------------------------------------------- unclear messages ----------

def test_numpy_and_huge_integer_budgets():
    x, labels = _data(30, 2, 2, seed=79)
    three = coreaug_fast.select_coreset(x, labels, budget=3)
    assert torch.equal(coreaug_fast.select_coreset(x, labels, budget=np.int64(3)).indices, three.indices)
    assert torch.equal(coreaug_fast.select_coreset(x, labels, budget=torch.tensor(3)).indices, three.indices)
    everything = coreaug_fast.select_coreset(x, labels, budget=2**70)
    assert len(everything) == 30
    with pytest.raises(ValueError, match="budget must be >= 0, got -1"):
        coreaug_fast.select_coreset(x, labels, budget=np.int64(-1))


@pytest.mark.parametrize("generator,match", [
    (0, "generator must be a torch.Generator or None, got int 0"),
    ("cpu", "generator must be a torch.Generator or None, got str 'cpu'"),
])
def test_bad_generators(generator, match):
    x, labels = _data(10, 2, 1, seed=83)
    with pytest.raises(ValueError, match=match):
        coreaug_fast.select_coreset(x, labels, 0.5, optimizer="stochastic", generator=generator)
    with pytest.raises(ValueError, match=match):
        coreaug_fast.select_random(labels, 0.5, generator=generator)


def test_bad_max_matrix_bytes_environment_does_not_break_import():
    env = dict(os.environ, COREAUG_MAX_MATRIX_BYTES="abc")
    code = "import coreaug_fast, coreaug_fast.selection.engine as e; print(e.MAX_MATRIX_BYTES)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(2 << 30)
    assert "COREAUG_MAX_MATRIX_BYTES='abc' is not an integer >= 0" in run.stderr


def test_selection_reads_the_engines_live_tunables(monkeypatch):
    """selection.MAX_MATRIX_BYTES / PROGRESS_WORK are the engine's values at call time, not a
    copy taken at import that a caller could change to no effect."""
    from coreaug_fast import selection
    from coreaug_fast.selection import engine

    monkeypatch.setattr(engine, "MAX_MATRIX_BYTES", 12345)
    monkeypatch.setattr(engine, "PROGRESS_WORK", 6.0)
    assert selection.MAX_MATRIX_BYTES == 12345 and selection.PROGRESS_WORK == 6.0
    with pytest.raises(AttributeError, match="no attribute 'NOT_THERE'"):
        selection.NOT_THERE


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.triton)])
@pytest.mark.parametrize("similarity, scale", [("distance", 1e-30), ("distance", 1e15), ("sqdistance", 1e-15)])
@pytest.mark.parametrize("factored", [False, True])
def test_tiny_or_huge_embeddings_select_as_unit_ones(backend, similarity, scale, factored):
    """Rows of size 1e-30 have float32 squared norms of 0: unscaled, every row would be a
    duplicate of every other (picks in row order, gains 0). Each class is brought to unit size
    by a power of two, so the picks are those of the unit rows and the gains scale exactly."""
    from conftest import TRITON_DEVICE

    device = TRITON_DEVICE if backend == "triton" else "cpu"
    g = torch.Generator().manual_seed(11)
    x, labels = torch.randn(90, 5, generator=g), torch.randint(0, 3, (90,), generator=g)
    feats = torch.randn(90, 3, generator=g)

    def rows(s):
        return (coreaug_fast.FactoredEmbeddings((x * s).to(device), feats.to(device)) if factored
                else (x * s).to(device))

    unit = coreaug_fast.select_coreset(rows(1.0), labels.to(device), 0.1, similarity=similarity, backend=backend)
    small = coreaug_fast.select_coreset(rows(scale), labels.to(device), 0.1, similarity=similarity, backend=backend)
    assert torch.equal(small.indices, unit.indices) and torch.equal(small.weights, unit.weights)
    power = 1 if similarity == "distance" else 2
    torch.testing.assert_close(small.gains.double().cpu(), unit.gains.double().cpu() * scale ** power,
                               rtol=1e-6, atol=0.0)
