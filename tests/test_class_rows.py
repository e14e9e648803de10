"""Selection in runs of classes (coreaug_fast.selection.class_rows, engine.runs) and from lazy
embeddings: the compiled class_rows_ op against the torch composite it replaces, bit for
bit; every run size, the lazy path and the composite path pick what one run over
materialised embeddings picks (indices, gains, weights, assignment identical); the memory
a lazy selection adds, measured in a subprocess."""
import json
import subprocess
import sys

import pytest
import torch

import coreaug_fast
from coreaug_fast.selection import class_rows, engine
from conftest import TRITON_DEVICE

FIELDS = ("indices", "weights", "gains", "assignment", "labels", "classes", "offsets")


def _same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert torch.equal(x.cpu(), y.cpu()), f


def _logits(n, c, classes, seed, device="cpu", dtype=torch.float32, d=None):
    """Logits with duplicate rows (rows 0..9 again at the end) and labels in random order."""
    g = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(n, c, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    logits = torch.cat([logits, logits[:10]])
    labels = torch.cat([labels, labels[:10]])
    feats = None if d is None else torch.cat([f := torch.randn(n, d, generator=g), f[:10]])
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    return to(logits.to(dtype)), to(labels), to(feats)


# ---------------------------------------------------------------- the op and its twin

def _composite(source, targets, rows, counts, centre, scale):
    """The torch path: take, centred, unit_scaled (what CUDA tensors run)."""
    xs = (torch.ops.coreaug.gradient_embeddings(source[rows], targets[rows]) if targets is not None
          else source[rows].float().contiguous())
    if centre:
        offsets = torch.zeros(counts.numel() + 1, dtype=torch.long)
        torch.cumsum(counts, 0, out=offsets[1:])
        xs = class_rows.centred(xs, offsets)
    if not scale:
        return xs, torch.ones(counts.numel())
    return class_rows.unit_scaled(xs, counts)


@pytest.mark.parametrize("lazy", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("size", [1.0, 1e-30, 1e-40, 1e30, 0.0])
def test_op_matches_the_torch_composite_bit_for_bit(lazy, dtype, size):
    """Sizes: unit, tiny (float32 squares underflow), subnormal, huge, an all-zero source."""
    if dtype == torch.float16 and size > 6e4:
        pytest.skip("beyond float16's range")
    g = torch.Generator().manual_seed(3)
    n, d = 300, 37
    wide = torch.randn(n, d + 5, generator=g) * size
    source = wide.to(dtype)[:, 2:d + 2]  # a row stride of d + 5: read through it, not copied
    targets = torch.randint(0, d, (n,), generator=g) if lazy else None
    counts = torch.tensor([1, 40, 0, 97, 12])
    rows = torch.randperm(n, generator=g)[:int(counts.sum())]
    for centre in (False, True):
        for scale in (False, True):
            out = torch.full((rows.numel(), d), float("nan"))
            factors = torch.ops.coreaug.class_rows_(out, source, targets, rows, counts, centre, scale)
            want, want_factors = _composite(source, targets, rows, counts, centre, scale)
            assert torch.equal(out, want)
            present = counts > 0  # an empty class's factor is unused
            assert torch.equal(factors[present], want_factors[present])


def test_op_checks_its_arguments():
    op = torch.ops.coreaug.class_rows_
    x, rows, counts = torch.randn(6, 3), torch.arange(6), torch.tensor([2, 4])
    with pytest.raises(RuntimeError, match="counts sum to 5"):
        op(torch.empty(6, 3), x, None, rows, torch.tensor([2, 3]), True, True)
    with pytest.raises(RuntimeError, match=r"rows\[5\] = 6 is outside \[0, 6\)"):
        op(torch.empty(6, 3), x, None, torch.tensor([0, 1, 2, 3, 4, 6]), counts, True, True)
    with pytest.raises(RuntimeError, match=r"targets\[1\] = 3 is outside \[0, 3\)"):
        op(torch.empty(6, 3), x, torch.tensor([0, 3, 0, 0, 0, 0]), rows, counts, True, True)
    with pytest.raises(RuntimeError, match="stride"):
        op(torch.empty(3, 6), x.t(), None, torch.arange(3), torch.tensor([3]), True, True)
    with pytest.raises(RuntimeError, match="out must be"):
        op(torch.empty(5, 3), x, None, rows, counts, True, True)


def test_opcheck():
    x, rows, counts = torch.randn(20, 4), torch.randperm(20), torch.tensor([5, 15])
    t = torch.randint(0, 4, (20,))
    torch.library.opcheck(torch.ops.coreaug.class_rows_.default, (torch.empty(20, 4), x, t, rows, counts, True, True))


# ---------------------------------------------------------------- the same picks

@pytest.mark.parametrize("similarity", ["distance", "sqdistance", "exp"])
@pytest.mark.parametrize("optimizer", ["lazy", "naive", "stochastic"])
@pytest.mark.parametrize("d", [None, 6])
def test_lazy_embeddings_select_as_materialised_ones(similarity, optimizer, d):
    """Rows computed a run at a time from the logits: the picks of the whole (n, C)
    embeddings, bit for bit, ties and duplicate rows included. C = 48: the GEMM path."""
    logits, labels, feats = _logits(500, 48, 9, seed=1, d=d)
    kw = dict(similarity=similarity, optimizer=optimizer)
    full = coreaug_fast.select_coreset(coreaug_fast.gradient_embeddings(logits, labels, feats), labels, 0.1,
                                       generator=torch.Generator().manual_seed(4), **kw)
    lazy = coreaug_fast.gradient_embeddings(logits, labels, feats, lazy=True)
    _same(coreaug_fast.select_coreset(lazy, labels, 0.1, generator=torch.Generator().manual_seed(4), **kw), full)


@pytest.mark.parametrize("run_bytes", [1, 3000, 40000])
@pytest.mark.parametrize("kind", ["direct", "gemm", "factored", "lazy", "float16"])
def test_runs_of_any_size_pick_what_one_run_picks(monkeypatch, run_bytes, kind):
    """CHUNK_BYTES 1: every class alone (the CPU op's threads inside the class); larger:
    several classes per run (one class per thread); the default: one run."""
    logits, labels, feats = _logits(700, 40, 12, seed=2, d=5 if kind == "factored" else None)
    emb = {"direct": logits[:, :3], "gemm": logits, "float16": logits.half(),
           "factored": coreaug_fast.FactoredEmbeddings(logits, feats),
           "lazy": coreaug_fast.gradient_embeddings(logits, labels, lazy=True)}[kind]
    one = coreaug_fast.select_coreset(emb, labels, 0.15)
    assert len(engine.runs(engine.ClassGroups(labels, 0.15, None), 40, "torch", engine.CHUNK_BYTES, False)) == 1
    sto = dict(optimizer="stochastic", generator=torch.Generator().manual_seed(6))
    one_sto = coreaug_fast.select_coreset(emb, labels, 0.15, **sto)
    monkeypatch.setattr(engine, "CHUNK_BYTES", run_bytes)
    _same(coreaug_fast.select_coreset(emb, labels, 0.15), one)
    _same(coreaug_fast.select_coreset(emb, labels, 0.15, progress=True), one)
    sto["generator"].manual_seed(6)
    _same(coreaug_fast.select_coreset(emb, labels, 0.15, **sto), one_sto)


def test_runs_are_whole_classes_within_the_limit():
    labels = torch.repeat_interleave(torch.arange(6), torch.tensor([5, 1, 7, 2, 2, 9]))
    groups = engine.ClassGroups(labels, 0.5, None)
    # 4 floats a row, 16 bytes: classes of 80, 16, 112, 32, 32, 144 bytes
    assert engine.runs(groups, 4, "torch", 100, False) == [(0, 2), (2, 3), (3, 5), (5, 6)]
    assert engine.runs(groups, 4, "torch", 1, False) == [(i, i + 1) for i in range(6)]
    assert engine.runs(groups, 4, "torch", 1 << 20, False) == [(0, 6)]
    assert engine.runs(groups, 4, "torch", 300, False) == [(0, 5), (5, 6)]
    # with Triton the stored cost matrices count too (rows padded to 16 floats): 400, 80,
    # 560, 160, 160, 720 bytes
    assert engine.runs(groups, 4, "triton", 300, False) == [(i, i + 1) for i in range(6)]
    assert engine.runs(engine.ClassGroups(labels[:0], 0.5, None), 4, "torch", 100, False) == [(0, 0)]


@pytest.mark.parametrize("factored", [False, True])
def test_the_composite_path_picks_what_the_op_path_picks(monkeypatch, factored):
    """CUDA tensors take the torch composite; here on the CPU, forced."""
    logits, labels, feats = _logits(400, 30, 7, seed=5, d=4 if factored else None)
    lazy = coreaug_fast.gradient_embeddings(logits, labels, feats, lazy=True)
    for emb in (lazy, lazy.materialize()):
        op = coreaug_fast.select_coreset(emb, labels, 0.2)
        monkeypatch.setattr(class_rows, "_unit_columns", lambda t: False)
        _same(coreaug_fast.select_coreset(emb, labels, 0.2), op)
        monkeypatch.undo()


def test_select_does_not_change_its_inputs():
    logits, labels, feats = _logits(300, 20, 4, seed=6, d=3)
    for emb in (logits, coreaug_fast.FactoredEmbeddings(logits, feats),
                coreaug_fast.gradient_embeddings(logits, labels, feats, lazy=True)):
        before = (logits.clone(), feats.clone())
        coreaug_fast.select_coreset(emb, labels, 0.2)
        assert torch.equal(logits, before[0]) and torch.equal(feats, before[1])


@pytest.mark.triton
@pytest.mark.parametrize("factored", [False, True])
def test_triton_backend_runs_lazy_embeddings_in_runs(monkeypatch, factored):
    logits, labels, feats = _logits(200, 24, 5, seed=7, device=TRITON_DEVICE, d=3 if factored else None)
    full = coreaug_fast.select_coreset(coreaug_fast.gradient_embeddings(logits, labels, feats), labels, 0.1,
                                       backend="triton")
    lazy = coreaug_fast.gradient_embeddings(logits, labels, feats, lazy=True)
    _same(coreaug_fast.select_coreset(lazy, labels, 0.1, backend="triton"), full)
    # one class a launch (on a GPU the runs' limit is otherwise at least its matrix budget)
    monkeypatch.setattr(engine, "run_bytes", lambda backend, device: 1)
    _same(coreaug_fast.select_coreset(lazy, labels, 0.1, backend="triton"), full)


def test_lazy_embeddings_on_every_device(device):
    logits, labels, _ = _logits(300, 16, 5, seed=8, device=device)
    lazy = coreaug_fast.gradient_embeddings(logits, labels, lazy=True)
    out = coreaug_fast.select_coreset(lazy, labels, 0.1, backend="torch")
    assert out.indices.device == logits.device
    _same(out, coreaug_fast.select_coreset(lazy.materialize(), labels, 0.1, backend="torch"))


def test_lazy_logits_must_be_finite():
    logits, labels, _ = _logits(50, 4, 2, seed=9)
    logits[3, 1] = float("-inf")  # refused up front, lazy or not: the logits name the problem
    for lazy in (False, True):
        with pytest.raises(ValueError, match="^logits contains NaN or inf"):
            coreaug_fast.gradient_embeddings(logits, labels, lazy=lazy)


# ---------------------------------------------------------------- memory

_MEMORY_SCRIPT = r"""
import json, sys, torch, coreaug_fast
from coreaug_fast.selection import engine
torch.set_num_threads(1)
engine.CHUNK_BYTES = 4 << 20
def peak():
    # VmHWM, this process's own high-water mark: ru_maxrss would also count what the
    # parent (pytest) had resident when it forked this process
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
n, c, classes = 60000, 500, 400
g = torch.Generator().manual_seed(0)
logits = torch.randn(n, c, generator=g)
labels = torch.randint(0, classes, (n,), generator=g)
small = coreaug_fast.gradient_embeddings(logits[:3000], labels[:3000] % 20, lazy=True)
coreaug_fast.select_coreset(small, labels[:3000] % 20, 0.1)  # first-call set-up, not counted
before = peak()
coreaug_fast.select_coreset(coreaug_fast.gradient_embeddings(logits, labels, lazy=True), labels, 0.1)
lazy = peak() - before
before = peak()
coreaug_fast.select_coreset(coreaug_fast.gradient_embeddings(logits, labels), labels, 0.1)
print(json.dumps({"logits": logits.numel() * 4, "lazy": lazy, "materialised": peak() - before}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_lazy_selection_adds_far_less_than_the_logits():
    """Peak RSS (a subprocess, so torch's allocations count) that a lazy selection adds
    over its 120 MB of logits, against a selection over materialised embeddings: the
    latter holds one (n, C) copy, so the measurement can see one."""
    run = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    m = json.loads(run.stdout.strip().splitlines()[-1])
    assert m["materialised"] > 0.9 * m["logits"]
    assert m["lazy"] < 0.25 * m["logits"], m
