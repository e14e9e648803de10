"""select_coreset against apricot's lazy FacilityLocationSelection and a CRAIG-style numpy
lazy greedy, on the same data with the same similarity (s = max‖·‖² − ‖·‖², apricot's); and
the selection step of a training run at dataset shapes, time and peak memory.

Groups (peers side by side):
  per-class n=5000 d=10 k=500, per-class n=10000 d=1024 k=1000 (CPU: ours, apricot, numpy;
  GPU: Triton), CIFAR10 scale (10 classes × 5000, d=10, 10%), ImageNet scale (1000 classes ×
  1300, factored grad 1000 ⊗ features 512, 10%). GPU benchmarks skip without a GPU.

  ``step <shape>``: what CoresetAugmentation does once the logits (n, C) float32 of the
  selection pass are held: ``gradient_embeddings(logits, labels, lazy=True)`` then
  ``select_coreset(emb, labels, 0.1)`` ("distance", lazy greedy), at CIFAR-10 (10 × 5,000,
  C = 10), TinyImageNet (200 × 500, C = 200) and ImageNet-1k (1,000 × 1,300, C = 1,000;
  one round on the CPU) shapes, random logits, labels in random order; also with features
  (d = 512) at the two small shapes. Each runs in its own process, which holds the inputs
  and runs the rounds when told to (the timed region is the step alone); ``extra_info``
  holds ``peak_rss_bytes`` (that process's peak resident set, every allocation torch makes
  counted: Linux's VmHWM, its own high-water mark; ru_maxrss elsewhere, which also counts
  what the parent had resident when it forked), ``inputs_bytes`` (logits and features),
  ``rss_before_bytes`` (resident before the first round: interpreter, torch, inputs) and on
  a GPU ``peak_gpu_extra_bytes`` (the caching allocator's peak beyond the inputs).

Run: ``.venv/bin/python -m pytest bench/bench_selection.py --benchmark-only``.
"""
import heapq
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import coreaug_fast
from conftest import requires_gpu, sync

PER_CLASS = {
    "n5000-d10-k500": (5000, 10, 500),
    "n10000-d1024-k1000": (10000, 1024, 1000),
}


def _rows(n, d, seed=0):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def craig_style_lazy_greedy(x: np.ndarray, k: int) -> list:
    """The peer: CRAIG-style facility location in numpy. Similarity matrix
    S = max D − D from squared Euclidean distances, then lazy greedy with a heap of stale
    gains; a gain is Σ_i max(cur_i, S_ie) − Σ_i cur_i."""
    sq = (x * x).sum(1)
    dist = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    sim = dist.max() - dist
    cur = np.zeros(x.shape[0], dtype=sim.dtype)
    cur_sum = 0.0
    heap = [(-float(sim[:, e].sum()), e) for e in range(x.shape[0])]
    heapq.heapify(heap)
    fresh = np.full(x.shape[0], -1)
    chosen = []
    while len(chosen) < k:
        neg, e = heapq.heappop(heap)
        if fresh[e] == len(chosen):
            chosen.append(e)
            cur = np.maximum(cur, sim[:, e])
            cur_sum = float(cur.sum())
            continue
        gain = float(np.maximum(cur, sim[:, e]).sum()) - cur_sum
        fresh[e] = len(chosen)
        heapq.heappush(heap, (-gain, e))
    return chosen


@pytest.mark.parametrize("size", list(PER_CLASS))
def test_coreaug_cpu(benchmark, size):
    n, d, k = PER_CLASS[size]
    x, labels = _rows(n, d), torch.zeros(n, dtype=torch.long)
    benchmark.group = f"per-class {size}"
    benchmark.extra_info.update(n=n, d=d, k=k, similarity="sqdistance", threads=torch.get_num_threads())
    out = benchmark.pedantic(coreaug_fast.select_coreset, args=(x, labels), rounds=5, warmup_rounds=1,
                             kwargs=dict(budget=k, similarity="sqdistance", backend="torch"))
    assert len(out) == k


@pytest.mark.parametrize("size", list(PER_CLASS))
def test_apricot_lazy(benchmark, size):
    apricot = pytest.importorskip("apricot")
    n, d, k = PER_CLASS[size]
    x = _rows(n, d).numpy()
    benchmark.group = f"per-class {size}"
    benchmark.extra_info.update(n=n, d=d, k=k, similarity="sqdistance")

    def run():
        return apricot.FacilityLocationSelection(k, metric="euclidean", optimizer="lazy").fit(x)

    sel = benchmark.pedantic(run, rounds=3, warmup_rounds=1)  # the warm-up round compiles numba
    ours = coreaug_fast.select_coreset(torch.from_numpy(x), torch.zeros(n, dtype=torch.long), budget=k,
                                       similarity="sqdistance")
    np.testing.assert_allclose(ours.gains.numpy(), sel.gains, rtol=1e-3)


@pytest.mark.parametrize("size", list(PER_CLASS))
def test_craig_style_numpy_lazy(benchmark, size):
    n, d, k = PER_CLASS[size]
    x = _rows(n, d).numpy()
    benchmark.group = f"per-class {size}"
    benchmark.extra_info.update(n=n, d=d, k=k, similarity="sqdistance")
    chosen = benchmark.pedantic(craig_style_lazy_greedy, args=(x, k), rounds=3, warmup_rounds=0)
    assert len(set(chosen)) == k


@requires_gpu
@pytest.mark.parametrize("size", list(PER_CLASS))
def test_coreaug_triton(benchmark, size):
    n, d, k = PER_CLASS[size]
    x, labels = _rows(n, d).cuda(), torch.zeros(n, dtype=torch.long, device="cuda")
    benchmark.group = f"per-class {size}"
    benchmark.extra_info.update(n=n, d=d, k=k, similarity="sqdistance", device=torch.cuda.get_device_name())

    def run():
        out = coreaug_fast.select_coreset(x, labels, budget=k, similarity="sqdistance", backend="triton")
        sync()
        return out

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)


def _cifar10_scale(device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50000, 10, generator=g)
    labels = torch.arange(50000) % 10
    return x.to(device), labels.to(device)


@requires_gpu
@pytest.mark.parametrize("similarity", ["distance", "sqdistance"])
def test_cifar10_scale_triton(benchmark, similarity):
    x, labels = _cifar10_scale("cuda")
    benchmark.group = "CIFAR10 scale: 10 x 5000, d=10, 10%"
    benchmark.extra_info.update(similarity=similarity, device=torch.cuda.get_device_name())

    def run():
        out = coreaug_fast.select_coreset(x, labels, 0.1, similarity=similarity, backend="triton")
        sync()
        return out

    benchmark.pedantic(run, rounds=10, warmup_rounds=2)


def test_cifar10_scale_cpu(benchmark):
    x, labels = _cifar10_scale("cpu")
    benchmark.group = "CIFAR10 scale: 10 x 5000, d=10, 10%"
    benchmark.extra_info.update(similarity="distance", threads=torch.get_num_threads())
    benchmark.pedantic(coreaug_fast.select_coreset, args=(x, labels, 0.1), kwargs=dict(backend="torch"),
                       rounds=3, warmup_rounds=0)


@requires_gpu
def test_imagenet_scale_factored_triton(benchmark):
    g = torch.Generator(device="cuda").manual_seed(2)
    n, classes = 1300 * 1000, 1000
    labels = torch.arange(n, device="cuda") % classes
    logits = torch.randn(n, classes, device="cuda", generator=g)
    features = torch.randn(n, 512, device="cuda", generator=g)
    emb = coreaug_fast.gradient_embeddings(logits, labels, features=features)
    benchmark.group = "ImageNet scale: 1000 x 1300, factored 1000 x 512, 10%"
    benchmark.extra_info.update(device=torch.cuda.get_device_name())

    def run():
        out = coreaug_fast.select_coreset(emb, labels, 0.1, backend="triton")
        sync()
        return out

    benchmark.pedantic(run, rounds=3, warmup_rounds=1)


# ---------------------------------------------------------------- the selection step at dataset shapes

# name -> (classes, rows per class, logits C)
SHAPES = {"cifar10": (10, 5000, 10), "tinyimagenet": (200, 500, 200), "imagenet1k": (1000, 1300, 1000)}


class _StepProcess:
    """A process (this file, run as a script) that builds one shape's inputs, then runs the
    selection step each time :meth:`step` is called, and reports its peak memory at the end."""

    def __init__(self, shape: str, device: str, features: int):
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), shape, device, str(features)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._expect("ready")

    def _expect(self, word):
        line = self.proc.stdout.readline().strip()
        if line != word:
            self.proc.kill()
            raise RuntimeError(f"selection step process: expected {word!r}, got {line!r} (exit {self.proc.poll()})")

    def step(self):
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        self._expect("done")

    def report(self) -> dict:
        self.proc.stdin.write("report\n")
        self.proc.stdin.flush()
        out = json.loads(self.proc.stdout.readline())
        self.proc.wait(timeout=60)
        return out


def _step_bench(benchmark, shape, device, features, rounds):
    classes, per, c = SHAPES[shape]
    worker = _StepProcess(shape, device, features)
    benchmark.group = f"step {shape}: {classes} x {per}, C={c}, 10%"
    try:
        benchmark.pedantic(worker.step, rounds=rounds, warmup_rounds=0)
    finally:
        info = worker.report()
    benchmark.extra_info.update(classes=classes, rows_per_class=per, logits=c, features=features,
                                device=device, similarity="distance", optimizer="lazy", **info)


@pytest.mark.parametrize("features", [0, 512])
@pytest.mark.parametrize("shape", ["cifar10", "tinyimagenet"])
def test_selection_step_cpu(benchmark, shape, features):
    _step_bench(benchmark, shape, "cpu", features, rounds=3)


def test_selection_step_cpu_imagenet1k(benchmark):
    """5.2 GB of logits, ~1/2 minute a round on 2 cores: one round."""
    _step_bench(benchmark, "imagenet1k", "cpu", 0, rounds=1)


@requires_gpu
@pytest.mark.parametrize("features", [0, 512])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_selection_step_gpu(benchmark, shape, features):
    _step_bench(benchmark, shape, "cuda", features, rounds=3)


def _resident() -> "tuple[int, int]":
    """(resident bytes now, this process's peak resident bytes)."""
    try:
        with open("/proc/self/status") as f:
            kb = {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in f) if k in ("VmRSS", "VmHWM")}
        return kb["VmRSS"] * 1024, kb["VmHWM"] * 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak *= 1 if sys.platform == "darwin" else 1024
        return peak, peak


def _serve_step(shape: str, device: str, features: int) -> None:
    """The step process: inputs first (on ``device``), then "go" -> one step -> "done", and
    "report" -> the memory figures as one JSON line."""
    classes, per, c = SHAPES[shape]
    n = classes * per
    g = torch.Generator(device=device).manual_seed(0)
    labels = torch.arange(n, device=device) % classes
    labels = labels[torch.randperm(n, generator=g, device=device)]
    logits = torch.randn(n, c, generator=g, device=device)
    feats = torch.randn(n, features, generator=g, device=device) if features else None

    def step():
        emb = coreaug_fast.gradient_embeddings(logits, labels, feats, lazy=True)
        out = coreaug_fast.select_coreset(emb, labels, 0.1, progress=False)
        sync()
        return out

    rss_before = _resident()[0]
    gpu_before = torch.cuda.memory_allocated() if device == "cuda" else 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    picks = 0
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "go":
            picks = len(step())
            print("done", flush=True)
        elif line.strip() == "report":
            break
    info = {"picks": picks, "rss_before_bytes": rss_before,
            "peak_rss_bytes": _resident()[1],
            "inputs_bytes": (logits.numel() + (feats.numel() if features else 0)) * 4,
            "threads": torch.get_num_threads()}
    if device == "cuda":
        info["peak_gpu_extra_bytes"] = torch.cuda.max_memory_allocated() - gpu_before
    print(json.dumps(info), flush=True)


if __name__ == "__main__":
    _serve_step(sys.argv[1], sys.argv[2], int(sys.argv[3]))
