"""weighted_cross_entropy: forward + backward of the fused op against the unfused
``(F.cross_entropy(x, y, reduction="none") * w).sum()``, time and peak memory.

Each group (``wce-<device>-<dtype>-N<n>-C<c>``) holds the two side by side. Peak memory is
in ``extra_info``: ``peak_extra_bytes``, the most memory held at once beyond the inputs
during one step, and ``peak_extra_nc``, the same in units of one N×C logits-sized buffer
(the gradient itself is 1; the issue's target is no more than that). On the GPU it is read
from the caching allocator; on the CPU from the profiler's memory timeline.

GPU: N = 256…65536, C = 10, 100, 1000 (skipped without a GPU). CPU: N up to 16384, so
that a CPU run stays within minutes.
"""
import pytest
import torch
import torch.nn.functional as F

import coreaug_fast
from conftest import requires_gpu, sync

GPU_CASES = [(n, c) for n in (256, 1024, 4096, 16384, 65536) for c in (10, 100, 1000)]
CPU_CASES = [(n, c) for n in (256, 4096, 16384) for c in (10, 100, 1000)]


def _inputs(n, c, device, dtype):
    g = torch.Generator().manual_seed(0)
    x = (3 * torch.randn(n, c, generator=g)).to(device=device, dtype=dtype).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g).to(device)
    w = (torch.rand(n, generator=g) * 2).to(device)
    return x, y, w


def _step(impl, x, y, w):
    if impl == "fused":
        loss = coreaug_fast.weighted_cross_entropy(x, y, w, reduction="sum")
    else:
        loss = (F.cross_entropy(x, y, reduction="none") * w).sum()
    loss.backward()
    x.grad = None
    sync()


def _peak_extra_bytes(impl, x, y, w):
    """Most bytes held at once beyond the inputs during one step, or None if unmeasurable."""
    _step(impl, x, y, w)  # warm-up: allocator caches, lazy initialisation
    if x.is_cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _step(impl, x, y, w)
        return torch.cuda.max_memory_allocated() - base
    try:
        from torch.profiler import ProfilerActivity, profile
        from torch.profiler._memory_profiler import MemoryProfileTimeline

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                     with_stack=True) as prof:
            _step(impl, x, y, w)
        _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    except Exception:  # a private profiler API: report nothing rather than fail the benchmark
        return None
    # the timeline counts every tensor the step touches, the inputs included
    inputs = sum(t.numel() * t.element_size() for t in (x, y, w))
    return max(sum(s) for s in sizes) - inputs if sizes else None


def _run(benchmark, impl, n, c, device, dtype):
    x, y, w = _inputs(n, c, device, dtype)
    peak = _peak_extra_bytes(impl, x, y, w)
    benchmark.group = f"wce-{device}-{str(dtype).split('.')[-1]}-N{n}-C{c}"
    benchmark.extra_info.update({
        "impl": impl, "n": n, "c": c, "device": device, "dtype": str(dtype),
        "peak_extra_bytes": peak,
        "peak_extra_nc": None if peak is None else round(peak / (n * c * x.element_size()), 3),
        "threads": torch.get_num_threads(),
    })
    benchmark(_step, impl, x, y, w)


@pytest.mark.parametrize("impl", ["fused", "unfused"])
@pytest.mark.parametrize("n,c", CPU_CASES)
def test_weighted_ce_cpu(benchmark, impl, n, c):
    _run(benchmark, impl, n, c, "cpu", torch.float32)


@requires_gpu
@pytest.mark.parametrize("impl", ["fused", "unfused"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n,c", GPU_CASES)
def test_weighted_ce_gpu(benchmark, impl, n, c, dtype):
    _run(benchmark, impl, n, c, "cuda", dtype)

