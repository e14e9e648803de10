"""`make gpu-check`: build, test and benchmark coreaug_fast on one GPU, in one command.

On a machine with a CUDA GPU, a preinstalled torch and no network, it runs these phases,
each under its own time budget (a phase that would overrun is stopped or skipped and
reported, never allowed to eat the next one's time; the whole run stays within ~10 minutes
on an H100/H200):

1. ``build``: ``pip install --no-build-isolation --no-deps -e .`` against the local torch,
   for the present GPU's architecture only, with every core (MAX_JOBS); then
   ``build_info()`` from a fresh interpreter.
2. ``tests``: the CUDA tests, the GPU-only ones first, then every test parametrised over
   devices with its CUDA case (``gpu_check_plugin`` orders and selects them).
3. ``selector``, ``augment``, ``loss``, ``train``, ``folder``: benchmarks with their peers in
   the same run (see each ``bench_*`` function), each in its own process. The machine has no
   network: peers it lacks (apricot, kornia, Liger) are installed first from the wheels in
   ``.whl/`` (fetched elsewhere by ``make gpu-wheels``), with ``--no-index`` into a private
   folder on PYTHONPATH; without that folder their figures say "skipped".

It writes ``<OUT>/<gpu-name>.json`` (every figure) and ``<OUT>/<gpu-name>.md`` (a short
report: every figure and pass/fail against the GPU targets). Without a GPU it says
so, writes the same two files from an empty result (so the report code keeps working in
CI), and exits 0.

Run: ``python3 bench/gpu_check.py [--out DIR] [--skip-build] [--phases a,b]``; phases can
also run alone (``--phase selector --result FILE``), which is how the driver runs them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from unittest.mock import patch

ROOT = Path(__file__).resolve().parent.parent
# `make gpu-wheels` fills WHEELS; the peers are installed from it into PEER_SITE
WHEELS = ROOT / ".whl"
PEER_SITE = ROOT / "build" / "gpu-check-peers"
BENCH_PHASES = ("selector", "augment", "loss", "train", "folder")
PHASES = ("build", "tests") + BENCH_PHASES
# Seconds per phase. The whole run must end inside the device tool's 10 minutes per command:
# TOTAL_S leaves room for start-up, the peers' install, a phase's GRACE_S past its budget
# (a benchmark checks its deadline between steps) and the report, which is also written after
# every phase, so a run killed anyway keeps every phase it finished.
BUDGET_S = {"build": 195, "tests": 115, "selector": 85, "augment": 40, "loss": 20, "train": 60, "folder": 65}
TOTAL_S = 520
GRACE_S = 20

# The GPU targets (reported, never asserted): name -> (description, check on the result)
TARGETS = {
    "selector_cifar10_ms": ("selection at CIFAR-10 scale (10×5000, d=10, 10%) ≤ 20 ms", lambda v: v <= 20.0),
    "selector_n10k_d1024_ms": ("selection at n=10k, d=1024, k=1000 ≤ 50 ms", lambda v: v <= 50.0),
    "selector_imagenet_ms": ("selection at ImageNet-1k (1000×1300, C=1000, 10%) ≤ 2 s", lambda v: v <= 2000.0),
    "augment_vs_kornia": ("augmentation ≥ 10× kornia", lambda v: v >= 10.0),
    "augment_vs_floor": ("augmentation within 2× of the memory-bandwidth floor", lambda v: v <= 2.0),
    "loss_vs_unfused": ("weighted CE ≥ 1.5× the unfused expression", lambda v: v >= 1.5),
    "train_coreset10_vs_full": ("coreset 10% epoch ≥ 3× faster than full", lambda v: v >= 3.0),
    "folder_full_vs_torchvision": ("folder of JPEGs, full (r=4): ≥ 3× the torchvision pipeline", lambda v: v >= 3.0),
    "folder_coreset10_vs_floor": ("folder of JPEGs, coreset 10%: within 1.5× of the decode floor",
                                  lambda v: v <= 1.5),
}


# ---- timing helpers (used inside the phase processes) ------------------------------------

def _cuda_ms(fn, *, warmup: int = 2, reps: int = 10, budget_s: float = 10.0) -> float:
    """Median milliseconds of ``fn()`` by CUDA events, after ``warmup`` calls; stops
    repeating once ``budget_s`` is spent (at least one timed call)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times, start = [], time.perf_counter()
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def _wall_ms(fn, reps: int = 1) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _peer_ms(out: dict, field: str, module: str, measure) -> "float | None":
    """``out[field]`` = ``measure()`` (ms), or why there is no figure: the peer's package is
    not importable, or it failed (reported; the other figures stand). Returns the figure."""
    if not _importable(module):
        out[field] = f"skipped ({module} not importable)"
        return None
    try:
        out[field] = measure()
        return out[field]
    except Exception as exc:
        out[field] = f"failed: {type(exc).__name__}: {exc}"[:200]
        return None


# ---- benchmark phases ------------------------------------------------------------------------

def bench_selector(deadline: float, out: dict) -> None:
    """select_coreset on the GPU (Triton) vs this library's CPU op and apricot's CPU lazy
    greedy (if importable), same data and similarity; and the selection step at ImageNet-1k
    shape (:func:`_selector_imagenet`)."""
    import torch

    import coreaug_fast

    g = torch.Generator().manual_seed(0)
    cases = {
        "cifar10": (torch.randn(50000, 10, generator=g), torch.arange(50000) % 10, dict(fraction=0.1)),
        "n10k_d1024": (torch.randn(10000, 1024, generator=g), torch.zeros(10000, dtype=torch.long),
                       dict(budget=1000)),
    }
    gpus = {}
    for name, (x, labels, kw) in cases.items():
        xc, lc = x.cuda(), labels.cuda()
        gpu = gpus[name] = lambda xc=xc, lc=lc, kw=kw: coreaug_fast.select_coreset(  # noqa: E731
            xc, lc, **kw, backend="triton", progress=False)
        t0 = time.perf_counter()
        gpu()  # first call compiles the kernels
        torch.cuda.synchronize()
        out[f"selector_{name}_first_call_s"] = time.perf_counter() - t0
        out[f"selector_{name}_ms"] = _cuda_ms(gpu, warmup=1, reps=5, budget_s=5)
    _selector_imagenet(out, deadline)  # before the CPU peers: its target matters more than their time
    _selector_variants(out, deadline, cases)  # before the CPU peers too: figures no GPU has measured yet
    for name, (x, labels, kw) in cases.items():
        gpu = gpus[name]
        left = deadline - time.time()
        if left > 20:
            cpu = lambda: coreaug_fast.select_coreset(x, labels, **kw, backend="torch", progress=False)  # noqa: E731
            out[f"selector_{name}_cpu_op_ms"] = _wall_ms(cpu)
            # the same picks on both backends (the README's claim), reported not asserted
            a, b = gpu(), cpu()
            out[f"selector_{name}_same_picks"] = bool(torch.equal(a.indices.cpu(), b.indices.cpu()))
        else:
            out[f"selector_{name}_cpu_op_ms"] = f"skipped ({left:.0f} s of budget left)"
        left = deadline - time.time()
        if _importable("apricot") and left < 40:
            out[f"selector_{name}_apricot_ms"] = f"skipped ({left:.0f} s of budget left)"
        else:  # a failure on this stack (apricot's import needs numba and scipy) is a figure
            _peer_ms(out, f"selector_{name}_apricot_ms", "apricot", lambda: _apricot_ms(x, labels, kw))
    for name in cases:
        gpu_ms = out.get(f"selector_{name}_ms")
        for peer in ("cpu_op", "apricot"):
            v = out.get(f"selector_{name}_{peer}_ms")
            if isinstance(v, float) and isinstance(gpu_ms, float):
                out[f"selector_{name}_speedup_vs_{peer}"] = v / gpu_ms


def _apricot_ms(x, labels, kw) -> float:
    """apricot's lazy greedy over every class (float64 numpy), ms."""
    from apricot import FacilityLocationSelection

    xn = x.numpy().astype("float64")
    ln = labels.numpy()
    per_class = {c: xn[ln == c] for c in sorted(set(ln.tolist()))}

    def apricot_all():
        for rows in per_class.values():
            k = int(kw.get("budget") or -(-len(rows) // 10))
            FacilityLocationSelection(k, metric="euclidean", optimizer="lazy").fit(rows)

    return _wall_ms(apricot_all)


def _selector_imagenet(out: dict, deadline: float) -> None:
    """The selection step at ImageNet-1k shape as CoresetAugmentation runs it: logits
    (1.3M, 1,000) float32 already on the GPU (5.2 GB, random, labels in random order),
    ``gradient_embeddings(..., lazy=True)``, ``select_coreset`` ("distance", lazy greedy,
    10%): milliseconds (target ≤ 2 s), first call, the allocator's peak beyond the logits;
    whether the picks equal those from materialised embeddings; with features (d = 512)."""
    import torch

    import coreaug_fast

    if deadline - time.time() < 30:
        out["selector_imagenet_ms"] = "skipped (time budget)"
        return
    classes, per, c = 1000, 1300, 1000
    n = classes * per
    g = torch.Generator(device="cuda").manual_seed(0)
    labels = (torch.arange(n, device="cuda") % classes)[torch.randperm(n, device="cuda", generator=g)]
    logits = torch.randn(n, c, device="cuda", generator=g)
    picks = {}

    def step(features=None, key="lazy"):
        emb = coreaug_fast.gradient_embeddings(logits, labels, features, lazy=True)
        picks[key] = coreaug_fast.select_coreset(emb, labels, 0.1, backend="triton", progress=False).indices

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    out["selector_imagenet_first_call_s"] = time.perf_counter() - t0
    out["selector_imagenet_ms"] = _cuda_ms(step, warmup=0, reps=3, budget_s=6)
    out["selector_imagenet_peak_extra_gb"] = (torch.cuda.max_memory_allocated() - base) / 1e9
    if deadline - time.time() > 20:
        full = coreaug_fast.gradient_embeddings(logits, labels)  # 5.2 GB more, held for the call
        same = coreaug_fast.select_coreset(full, labels, 0.1, backend="triton", progress=False).indices
        del full
        out["selector_imagenet_same_picks_as_materialised"] = bool(torch.equal(same, picks["lazy"]))
    if deadline - time.time() > 20:
        features = torch.randn(n, 512, device="cuda", generator=g)
        t0 = time.perf_counter()
        step(features, "features")  # first call compiles the factored kernels
        torch.cuda.synchronize()
        out["selector_imagenet_features512_first_call_s"] = time.perf_counter() - t0
        out["selector_imagenet_features512_ms"] = _cuda_ms(lambda: step(features, "features"), warmup=0, reps=2,
                                                           budget_s=6)
    else:
        out["selector_imagenet_features512_ms"] = "skipped (time budget)"


def _selector_variants(out: dict, deadline: float, cases: dict) -> None:
    """Figures for two choices no GPU has measured yet: the warps of the per-class greedy
    program (CIFAR scale: 10 programs on a GPU of 132 SMs), and costs computed on the fly
    (what classes whose cost matrices exceed the memory cap get), against stored matrices."""
    import torch

    import coreaug_fast
    from coreaug_fast.kernels import facility_location
    from coreaug_fast.selection import engine

    x, labels, kw = cases["cifar10"]
    xc, lc = x.cuda(), labels.cuda()
    for warps in (4, 8, 16):  # each a fresh Triton compile, then 6 runs of a few ms
        if deadline - time.time() < 15:
            out[f"selector_cifar10_warps{warps}_ms"] = "skipped (time budget)"
            continue
        with patch.object(facility_location, "GREEDY_WARPS", warps):
            out[f"selector_cifar10_warps{warps}_ms"] = _cuda_ms(
                lambda: coreaug_fast.select_coreset(xc, lc, **kw, backend="triton", progress=False),
                warmup=1, reps=5, budget_s=3)
    # 200 picks, not 1000: a bounded run whatever the on-the-fly speed turns out to be
    x, labels, _ = cases["n10k_d1024"]
    xc, lc = x.cuda(), labels.cuda()
    if deadline - time.time() < 25:
        out["selector_n10k_d1024_k200_on_the_fly_ms"] = "skipped (time budget)"
        return
    picks = {}

    def select(mode):  # the timed calls also keep their picks: no extra run to compare them
        picks[mode] = coreaug_fast.select_coreset(xc, lc, budget=200, backend="triton", progress=False).indices

    out["selector_n10k_d1024_k200_stored_ms"] = _cuda_ms(lambda: select("stored"), warmup=1, reps=3, budget_s=3)
    with patch.object(engine, "MAX_MATRIX_BYTES", 0):  # no matrix fits: every cost is computed on the fly
        out["selector_n10k_d1024_k200_on_the_fly_ms"] = _cuda_ms(lambda: select("fly"), warmup=1, reps=1)
    # stored (tl.dot) and on-the-fly (element-wise) costs may differ in the last bit
    out["selector_n10k_d1024_k200_on_the_fly_same_picks"] = bool(torch.equal(picks["stored"], picks["fly"]))


def _bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth, bytes read + written per second, in GB/s."""
    import torch

    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    ms = _cuda_ms(lambda: dst.copy_(src), warmup=2, reps=10, budget_s=3)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def bench_augment(deadline: float, out: dict) -> None:
    """Augmenter (RandAugment 2 ops + crop/flip + normalise, per-image parameters drawn on
    the GPU) vs torchvision v2 applied to the whole batch at once (one parameter draw per
    batch), kornia's RandAugment (if importable), and the memory-bandwidth floor (read
    uint8, write float32 once); then the same Augmenter and torchvision rows for every other
    policy (AutoAugment ImageNet/CIFAR10/SVHN, TrivialAugmentWide), ``augment_<policy>_*``."""
    import torch

    import coreaug_fast

    out["bandwidth_GBps"] = _bandwidth_gbs()
    gen = torch.Generator(device="cuda").manual_seed(0)
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    for side, n in ((32, 4096), (224, 256)):
        key = f"augment_{side}px_x{n}"
        pad = side // 8
        images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device="cuda")
        aug = coreaug_fast.Augmenter(num_ops=2, magnitude=9, copies=1, padding=pad, mean=mean, std=std)
        ours = _cuda_ms(lambda: aug(images, generator=gen, check=False), budget_s=3)
        out[f"{key}_ms"] = ours
        floor = (images.numel() * (1 + 4)) / (out["bandwidth_GBps"] * 1e9) * 1e3
        out[f"{key}_floor_ms"] = floor
        out[f"{key}_vs_floor"] = ours / floor
        try:
            from torchvision.transforms import v2

            tv = v2.Compose([v2.RandomCrop(side, padding=pad), v2.RandomHorizontalFlip(),
                             v2.RandAugment(num_ops=2, magnitude=9), v2.ToDtype(torch.float32, scale=True),
                             v2.Normalize(mean, std)])
            out[f"{key}_torchvision_batched_ms"] = _cuda_ms(lambda: tv(images), budget_s=5)
            out[f"{key}_speedup_vs_torchvision"] = out[f"{key}_torchvision_batched_ms"] / ours
        except Exception as exc:  # reported, the other figures stand
            out[f"{key}_torchvision_batched_ms"] = f"failed: {type(exc).__name__}: {exc}"[:200]
        if deadline - time.time() < 10:
            out[f"{key}_kornia_ms"] = "skipped (time budget)"
        else:
            def kornia_ms():
                import kornia.augmentation as K
                from kornia.augmentation.auto import RandAugment

                ka = torch.nn.Sequential(K.RandomCrop((side, side), padding=pad), K.RandomHorizontalFlip(),
                                         RandAugment(n=2, m=9),
                                         K.Normalize(torch.tensor(mean), torch.tensor(std))).cuda()
                return _cuda_ms(lambda: ka(images.float() / 255), budget_s=5)

            if _peer_ms(out, f"{key}_kornia_ms", "kornia", kornia_ms) is not None:
                out[f"{key}_speedup_vs_kornia"] = out[f"{key}_kornia_ms"] / ours
        if deadline - time.time() < 5:
            break
    from coreaug_fast.policies import POLICIES
    from coreaug_fast.torchvision_augment import policy_transform

    for policy in POLICIES[1:]:  # RandAugment's rows are the ones above
        for side, n in ((32, 4096), (224, 256)):
            key = f"augment_{policy}_{side}px_x{n}"
            if deadline - time.time() < 4:
                out[f"{key}_ms"] = "skipped (time budget)"
                continue
            pad = side // 8
            images = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, device="cuda")
            aug = coreaug_fast.Augmenter(policy=policy, copies=1, padding=pad, mean=mean, std=std)
            ours = _cuda_ms(lambda: aug(images, generator=gen, check=False), budget_s=1)
            out[f"{key}_ms"] = ours
            try:
                from torchvision.transforms import v2

                tv = v2.Compose([v2.RandomCrop(side, padding=pad), v2.RandomHorizontalFlip(), policy_transform(policy),
                                 v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
                out[f"{key}_torchvision_batched_ms"] = _cuda_ms(lambda: tv(images), budget_s=1)
                out[f"{key}_speedup_vs_torchvision"] = out[f"{key}_torchvision_batched_ms"] / ours
            except Exception as exc:  # reported, the other figures stand
                out[f"{key}_torchvision_batched_ms"] = f"failed: {type(exc).__name__}: {exc}"[:200]
    speedups = [v for k, v in out.items() if k.endswith("speedup_vs_kornia")]
    if speedups:
        out["augment_vs_kornia"] = min(speedups)
    ratios = [v for k, v in out.items() if k.endswith("_vs_floor") and k.startswith("augment_")]
    if ratios:
        out["augment_vs_floor"] = max(ratios)


def bench_loss(deadline: float, out: dict) -> None:
    """weighted_cross_entropy forward + backward vs the unfused expression, and Liger's
    cross-entropy (if importable) times the weights."""
    import torch
    import torch.nn.functional as F

    import coreaug_fast

    for n, c in ((1024, 100), (8192, 1000)):
        key = f"loss_n{n}_c{c}"
        logits = torch.randn(n, c, device="cuda", requires_grad=True)
        targets = torch.randint(0, c, (n,), device="cuda")
        weights = torch.rand(n, device="cuda")

        def fused():
            coreaug_fast.weighted_cross_entropy(logits, targets, weights, reduction="sum", check=False).backward()

        def unfused():
            (F.cross_entropy(logits, targets, reduction="none") * weights).sum().backward()

        out[f"{key}_fused_ms"] = _cuda_ms(fused, budget_s=2)
        out[f"{key}_unfused_ms"] = _cuda_ms(unfused, budget_s=2)
        out[f"{key}_speedup"] = out[f"{key}_unfused_ms"] / out[f"{key}_fused_ms"]
        def liger_ms():
            from liger_kernel.transformers import LigerCrossEntropyLoss

            liger = LigerCrossEntropyLoss(reduction="none")
            return _cuda_ms(lambda: (liger(logits, targets) * weights).sum().backward(), budget_s=2)

        _peer_ms(out, f"{key}_liger_ms", "liger_kernel", liger_ms)
        if deadline - time.time() < 3:
            break
    speedups = [v for k, v in out.items() if k.endswith("_speedup")]
    if speedups:
        out["loss_vs_unfused"] = min(speedups)


def bench_train(deadline: float, out: dict) -> None:
    """One ResNet20 epoch (bfloat16 autocast) on synthetic CIFAR-sized data (50,000 ×
    3×32×32) per method, after one warm-up epoch each: the paper's epoch time (selection +
    augmentation + forward/backward/step, evaluation excluded)."""
    from coreaug_fast.train import TrainConfig, Trainer
    from coreaug_fast.train.data import load_dataset

    base = dict(dataset="synthetic", train_size=50000, image_size=32, model="resnet20", device="cuda",
                amp=True, epochs=2, batch_size=128, copies=4, num_ops=2, select_every=1, quiet=True)
    ds = load_dataset(TrainConfig(**base).resolved()).to("cuda")
    # the two of the target first; then the rest while time is left. Rows per epoch relative to
    # none's 50,000 (n + r·k, plus a selection pass for the coresets) predict each next cost.
    methods = (("coreset10", "coreset", 0.1, 1.4), ("full", "full", 1.0, 5.0), ("none", "none", 1.0, 1.0),
               ("coreset30", "coreset", 0.3, 2.2))
    for i, (label, method, fraction, rows) in enumerate(methods):
        started = time.time()
        try:
            trainer = Trainer(TrainConfig(**base, method=method, fraction=fraction), ds)
            trainer.run_epoch(progress=False)  # warm-up: cuDNN autotuning, kernel compiles
            rec = trainer.run_epoch(progress=False)
            out[f"train_{label}_epoch_s"] = rec["method_s"]
            for part in ("selection_s", "augment_s", "train_s"):
                out[f"train_{label}_{part}"] = rec[part]
            out[f"train_{label}_rows"] = rec["rows"]
        except Exception as exc:
            out[f"train_{label}_epoch_s"] = f"failed: {type(exc).__name__}: {exc}"[:300]
        spent = time.time() - started
        if i + 1 < len(methods) and deadline - time.time() < 1.2 * spent * methods[i + 1][3] / rows:
            out["train_skipped"] = f"stopped after {label}: {methods[i + 1][0]} would overrun the budget"
            break
    full = out.get("train_full_epoch_s")
    for label in ("none", "coreset10", "coreset30"):
        v = out.get(f"train_{label}_epoch_s")
        if isinstance(v, float) and isinstance(full, float):
            out[f"train_{label}_vs_full"] = full / v


def bench_folder(deadline: float, out: dict) -> None:
    """One epoch of float32 batches on the GPU from a folder of 2,000 generated 500x375 JPEGs
    (``folder_pipelines.py``), 8 DataLoader workers: the decode floor, torchvision per image
    and CoresetAugmentation, for full (r = 4) and coreset 10%, AutoAugment (ImageNet);
    ``folder_<pipeline>_ms_per_image`` and the two target ratios."""
    import torchvision

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import folder_pipelines as fp
    from image_data import jpeg_folder

    workers = min(8, os.cpu_count() or 1)
    images = 2000
    folder = torchvision.datasets.ImageFolder(str(jpeg_folder(images, processes=os.cpu_count() or 1)))
    out.update(folder_images=images, folder_workers=workers)
    runs = [("decode_floor", lambda: fp.decode_floor(folder, workers))]
    for setting in fp.SETTINGS:
        key = setting.replace("-", "")
        runs.append((f"coreaug_{key}", lambda s=setting: fp.coreaug_epoch(folder, s, workers, "cuda")))
        runs.append((f"torchvision_{key}", lambda s=setting: fp.torchvision_epoch(folder, s, workers, "cuda")))
    for name, make in runs:
        if deadline - time.time() < 8:
            out[f"folder_{name}_ms_per_image"] = "skipped (time budget)"
            continue
        try:
            epoch = make()
            out[f"folder_{name}_ms_per_image"] = _wall_ms(epoch) / images
        except Exception as exc:  # reported, the other figures stand
            out[f"folder_{name}_ms_per_image"] = f"failed: {type(exc).__name__}: {exc}"[:200]
    get = lambda name: out.get(f"folder_{name}_ms_per_image")  # noqa: E731
    if all(isinstance(get(k), float) for k in ("torchvision_full", "coreaug_full")):
        out["folder_full_vs_torchvision"] = get("torchvision_full") / get("coreaug_full")
    if all(isinstance(get(k), float) for k in ("decode_floor", "coreaug_coreset10")):
        out["folder_coreset10_vs_floor"] = get("coreaug_coreset10") / get("decode_floor")


BENCHES = {"selector": bench_selector, "augment": bench_augment, "loss": bench_loss, "train": bench_train,
           "folder": bench_folder}


# ---- the driver ----------------------------------------------------------------------------

def _run(cmd, timeout: float, env=None, cwd=ROOT) -> dict:
    """Run a command, capturing output; on overrun kill it and say so."""
    start = time.time()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=max(timeout, 1))
        return {"rc": p.returncode, "seconds": time.time() - start, "stdout": p.stdout, "stderr": p.stderr}
    except subprocess.TimeoutExpired as exc:
        text = lambda b: b.decode(errors="replace") if isinstance(b, bytes) else (b or "")  # noqa: E731
        return {"rc": None, "seconds": time.time() - start, "stdout": text(exc.stdout), "stderr": text(exc.stderr),
                "timed_out": True}


def _gpu() -> "dict | None":
    """Name and compute capability of GPU 0, or None without a usable CUDA GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability(0)
    return {"name": torch.cuda.get_device_name(0), "capability": f"{major}.{minor}",
            "torch": torch.__version__, "cuda": torch.version.cuda}


def install_peer_wheels(result: dict, wheels: Path = WHEELS, site: Path = PEER_SITE) -> None:
    """Install every wheel in ``wheels`` (no index, no dependency resolution: the folder holds
    exactly what this machine lacks) into the private folder ``site``, emptied first, and put
    it first on PYTHONPATH, which the phases' processes inherit. Without wheels it does
    nothing; a failed install is reported and the peers are skipped as before."""
    files = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not files:
        result["peer_wheels"] = {"installed": [], "why": f"no wheels in {wheels} (make gpu-wheels fetches them)"}
        return
    shutil.rmtree(site, ignore_errors=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
           "--no-cache-dir", "--upgrade", "--target", str(site), *map(str, files)]
    print(f"== peers: installing {len(files)} wheels from {wheels} into {site}", flush=True)
    r = _run(cmd, 120)
    ok = r["rc"] == 0
    result["peer_wheels"] = {"installed": [f.name for f in files] if ok else [], "seconds": round(r["seconds"], 1),
                             "why": None if ok else (r["stdout"] + r["stderr"])[-2000:]}
    if ok:
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    else:
        print(result["peer_wheels"]["why"], flush=True)


def phase_build(budget: float, result: dict) -> bool:
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=result["gpu"]["capability"], COREAUG_CUDA="1",
               MAX_JOBS=str(os.cpu_count() or 1))
    cmd = [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "--no-index", "-e", "."]
    print(f"== build: {' '.join(cmd)} (arch {env['TORCH_CUDA_ARCH_LIST']}, MAX_JOBS={env['MAX_JOBS']})", flush=True)
    r = _run(cmd, budget, env=env)
    ok = r["rc"] == 0
    result["build"] = {"ok": ok, "seconds": round(r["seconds"], 1),
                       "why": None if ok else ("timed out" if r.get("timed_out") else f"exit {r['rc']}"),
                       "log_tail": None if ok else (r["stdout"] + r["stderr"])[-3000:]}
    if not ok:
        print(result["build"]["log_tail"], flush=True)
    return ok


def _build_info() -> dict:
    r = _run([sys.executable, "-c", "import coreaug_fast, json; print(json.dumps(coreaug_fast.build_info()))"], 120)
    try:
        return json.loads(r["stdout"].strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (r["stdout"] + r["stderr"])[-2000:]}


def phase_tests(budget: float, result: dict, out_dir: Path) -> None:
    if not _importable("pytest"):
        result["tests"] = {"skipped": "pytest not importable"}
        return
    record = out_dir / ".gpu-check-tests.json"
    env = dict(os.environ, GPU_CHECK_RECORD=str(record), GPU_CHECK_BUDGET_S=str(max(budget - 15, 10)),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "bench"), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, "-m", "pytest", "tests", "-q", "-p", "gpu_check_plugin", "-p", "no:cacheprovider",
           "-o", "addopts="]
    print(f"== tests: {' '.join(cmd)}", flush=True)
    r = _run(cmd, budget, env=env)
    try:
        summary = json.loads(record.read_text())
        record.unlink()
    except (OSError, ValueError):
        summary = {}
    summary.update(seconds=round(r["seconds"], 1), rc=r["rc"], timed_out=bool(r.get("timed_out")))
    if r["rc"] not in (0, 5) or summary.get("failed"):
        summary["output_tail"] = (r["stdout"] + r["stderr"])[-4000:]
    result["tests"] = summary
    print(f"   {summary.get('passed', 0)} passed, {len(summary.get('failed', []))} failed, "
          f"{summary.get('skipped', 0)} skipped in {summary['seconds']} s", flush=True)


def phase_bench(name: str, budget: float, result: dict, out_dir: Path) -> None:
    tmp = out_dir / f".gpu-check-{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--result", str(tmp),
           "--budget", str(budget)]
    print(f"== {name} (budget {budget:.0f} s)", flush=True)
    r = _run(cmd, budget + GRACE_S)
    try:
        figures = json.loads(tmp.read_text())
        tmp.unlink()
    except (OSError, ValueError):
        figures = {}
    if r["rc"] != 0:
        figures["error"] = ("timed out" if r.get("timed_out") else f"exit {r['rc']}") + ": " + \
            (r["stdout"] + r["stderr"])[-2000:]
    figures["seconds"] = round(r["seconds"], 1)
    result["benchmarks"][name] = figures


class _SavedFigures(dict):
    """A phase's figures, written to its result file as each one lands: a phase the driver
    kills at its time budget still reports every figure it measured."""

    def __init__(self, path: str):
        super().__init__()
        self.path = Path(path)
        self.path.write_text("{}")

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self.path.write_text(json.dumps(self, indent=1, default=str))


def run_phase(name: str, result_path: str, budget: float) -> int:
    """One benchmark phase in this process (the driver's child)."""
    BENCHES[name](time.time() + budget, _SavedFigures(result_path))
    return 0


def evaluate(result: dict) -> list:
    """(target description, value, passed) for every target whose figure was measured."""
    flat: dict = {}
    for figures in result.get("benchmarks", {}).values():
        flat.update(figures)
    if "train_coreset10_vs_full" not in flat and isinstance(flat.get("train_coreset10_epoch_s"), float) \
            and isinstance(flat.get("train_full_epoch_s"), float):
        flat["train_coreset10_vs_full"] = flat["train_full_epoch_s"] / flat["train_coreset10_epoch_s"]
    rows = []
    for key, (text, ok) in TARGETS.items():
        v = flat.get(key)
        rows.append((text, v, ok(v) if isinstance(v, (int, float)) else None))
    return rows


def _fmt(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_markdown(result: dict) -> str:
    gpu = result.get("gpu") or {}
    lines = [f"# gpu-check: {gpu.get('name', 'no GPU')}", "",
             f"{result.get('started', '')} · torch {gpu.get('torch', '?')} · CUDA {gpu.get('cuda', '?')} · "
             f"capability {gpu.get('capability', '?')} · {result.get('wall_s', 0):.0f} s wall", ""]
    if result.get("note"):
        lines += [result["note"], ""]
    lines += ["## Targets", "", "| target | figure | result |", "|---|---|---|"]
    for text, v, ok in evaluate(result):
        lines.append(f"| {text} | {_fmt(v) if v is not None else '—'} | "
                     f"{'PASS' if ok else 'FAIL' if ok is False else 'not measured'} |")
    b = result.get("build")
    if b:
        lines += ["", "## Build", "", f"{'ok' if b['ok'] else 'FAILED (' + str(b['why']) + ')'} in {b['seconds']} s"]
    if result.get("build_info"):
        lines += ["", "```", json.dumps(result["build_info"], indent=1), "```"]
    t = result.get("tests")
    if t:
        lines += ["", "## Tests", ""]
        if "skipped" in t and isinstance(t["skipped"], str):
            lines.append(f"skipped: {t['skipped']}")
        else:
            lines.append(f"{t.get('passed', 0)} passed, {len(t.get('failed', []))} failed, "
                         f"{t.get('skipped', 0)} skipped, {t.get('deselected', 0)} CPU-only deselected, "
                         f"in {t.get('seconds', 0)} s" + (" (stopped at the time budget)" if t.get("stopped") else ""))
            lines += [f"- FAILED {f}" for f in t.get("failed", [])]
    for name, figures in result.get("benchmarks", {}).items():
        lines += ["", f"## {name}", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in figures.items() if k != "error"]
        if figures.get("error"):
            lines += ["", "```", str(figures["error"])[-1500:], "```"]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_dir: Path) -> "tuple[Path, Path]":
    out_dir.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", (result.get("gpu") or {}).get("name", "no-gpu")).strip("-") or "gpu"
    js, md = out_dir / f"{name}.json", out_dir / f"{name}.md"
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md.write_text(render_markdown(result))
    return js, md


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.environ.get("OUT") or None,
                   help="report folder (default: $OUT, else bench/results/; without a GPU build/gpu-check/)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}")
    p.add_argument("--skip-build", action="store_true", help="use the installed build")
    p.add_argument("--phase", choices=BENCH_PHASES, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        return run_phase(args.phase, args.result, args.budget)
    phases = [s for s in args.phases.split(",") if s]
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phase(s) {unknown}; choose from {list(PHASES)}")
    if args.skip_build and "build" in phases:
        phases.remove("build")

    start = time.time()
    result = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "host": platform.node(),
              "python": platform.python_version(), "gpu": _gpu(), "benchmarks": {}}
    if result["gpu"] is None:
        out_dir = Path(args.out) if args.out else ROOT / "build" / "gpu-check"
        result["note"] = "No CUDA GPU here: nothing was built, tested or timed (this report checks the plumbing)."
        result["wall_s"] = time.time() - start
        js, md = write_report(result, out_dir)
        print(f"gpu-check: no CUDA GPU on this machine; nothing to check. Wrote the empty report {js} and {md}.")
        return 0
    out_dir = Path(args.out) if args.out else ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"gpu-check on {result['gpu']['name']} (capability {result['gpu']['capability']}, "
          f"torch {result['gpu']['torch']}), reports into {out_dir}", flush=True)

    def budget(name: str) -> float:
        # the phase's own budget, or less when the whole run's would overrun
        later = sum(BUDGET_S[q] for q in phases[phases.index(name) + 1:])
        return max(5.0, min(BUDGET_S[name], TOTAL_S - (time.time() - start) - later * 0.5))

    def checkpoint() -> "tuple[Path, Path]":
        result["wall_s"] = time.time() - start
        return write_report(result, out_dir)

    built = True
    if "build" in phases:
        built = phase_build(budget("build"), result)
    result["build_info"] = _build_info()
    print("== build_info():", json.dumps(result["build_info"]), flush=True)
    checkpoint()
    if not built or not result["build_info"].get("extension"):
        result["note"] = "The build failed or the extension does not load: tests and benchmarks skipped."
    else:
        if "tests" in phases:
            phase_tests(budget("tests"), result, out_dir)
            checkpoint()
        if any(name in phases for name in BENCH_PHASES):
            install_peer_wheels(result)
        for name in BENCH_PHASES:
            if name in phases:
                phase_bench(name, budget(name), result, out_dir)
                checkpoint()
    js, md = checkpoint()
    print(render_markdown(result))
    print(f"gpu-check: wrote {js} and {md} in {result['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
