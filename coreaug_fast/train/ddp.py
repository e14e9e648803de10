"""Data-parallel training: ``torchrun --nproc-per-node N --no-python coreaug-train ...``.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) ``train`` starts the process group
(NCCL on CUDA, gloo on CPU), and every rank holds the whole uint8 dataset and a
``DistributedDataParallel`` copy of the model. Per epoch:

The epoch itself comes from :class:`~coreaug_fast.CoresetAugmentation` given the process
group (``group=``); this module starts the group, wraps the model and scales the loss.

* **Sampler.** The epoch's rows (every original plus the weighted strong copies of the
  subset) are shuffled by the shuffle stream, identical on every rank;
  rank r takes rows r, r + W, r + 2W, ... of that order. The order is padded to a multiple
  of W with repeats *of weight 0*, so every rank runs the same number of steps and the
  padding changes nothing.
* **Loss.** Normalised over the global batch: rank r's loss is ``W · Σ_r w·CE / Σ_all w``
  (``--loss-normalize count``: ``/ rows of weight > 0``, the definition of
  :func:`coreaug_fast.loss.mean_divisor`) with one scalar ``all_reduce`` per step, so the
  gradient DDP averages is exactly that of the global batch of W × ``--batch-size`` rows.
  ``--batch-size`` is per rank; the learning rate is not rescaled.
* **Augmentation** draws from a per-rank stream seeded by (augment seed, rank, epoch), so
  ranks augment differently and a resumed run repeats itself.
* **Selection.** Each rank runs the clean forward pass on its own shard (rows r, r + W, ...)
  and ``select_coreset(..., indices=shard, group=WORLD)``: every rank gets the same coreset
  and the same weights without gathering the embeddings (see :mod:`coreaug_fast.selection.distributed`).
  ``random`` uses the shared select stream; ``max-loss`` (and the max-loss overlap figure)
  all-gathers the per-example losses, one float per example.

BatchNorm statistics are per rank (DDP broadcasts rank 0's buffers at each forward).
Rank 0 writes the checkpoint, ``epochs.jsonl`` and ``summary.json``; every rank appends
what it selected (size, SHA-256 of indices and weights) to ``ranks/rank<r>.jsonl``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from ..loss import mean_divisor, weighted_cross_entropy
from .config import UsageError


class Context(NamedTuple):
    rank: int
    world: int
    local_rank: int
    group: object
    device: torch.device


def launched() -> bool:
    """True under torchrun (or any launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup(device_name: str) -> Optional[Context]:
    """Start the process group when launched with several processes (reusing one the
    caller started); None for a single process."""
    if not launched() and not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    if not dist.is_available():
        raise UsageError("torchrun with several processes needs torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if device_name.startswith("cuda:"):
        raise UsageError(f"--device {device_name}: under torchrun rank r uses cuda:LOCAL_RANK; pass --device cuda")
    if device_name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {device_name}: no CUDA device is available")
    if device_name not in ("auto", "cuda", "cpu"):
        raise UsageError(f"--device must be auto, cpu or cuda under torchrun; got {device_name!r}")
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", device_id=device if use_cuda else None)
    return active()


def active() -> Optional[Context]:
    """The context of an already started process group of several ranks, else None."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return None
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and "nccl" in str(dist.get_backend()).lower()
    device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    return Context(dist.get_rank(), dist.get_world_size(), local, dist.group.WORLD, device)


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def batch_loss(logits, targets, weights, normalize: str, ctx: Context) -> torch.Tensor:
    """The weighted loss of the global batch, scaled so DDP's gradient average is its
    gradient: W · Σ_local w·CE / Σ_ranks :func:`~coreaug_fast.loss.mean_divisor` (Σ w, or for
    ``count`` the rows of weight > 0: the padding never counts), the single-process mean's
    divisor over the global batch."""
    s = weighted_cross_entropy(logits, targets, weights, reduction="sum", check=False)
    den = mean_divisor(weights, normalize).float().reshape(1)
    dist.all_reduce(den, group=ctx.group)
    return s * (ctx.world / den.clamp_min(torch.finfo(torch.float32).tiny)[0])


def mean_over_ranks(value: float, ctx: Context) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, group=ctx.group)
    return float(t) / ctx.world


def fingerprint(indices: torch.Tensor, weights: torch.Tensor) -> str:
    h = hashlib.sha256(indices.cpu().long().numpy().tobytes())
    h.update(weights.cpu().float().numpy().tobytes())
    return h.hexdigest()


def record_selection(out: Path, ctx: Context, epoch: int, indices, weights) -> None:
    """Append this rank's selection to ``<out>/ranks/rank<r>.jsonl``."""
    folder = Path(out) / "ranks"
    folder.mkdir(parents=True, exist_ok=True)
    line = {"epoch": epoch, "rank": ctx.rank, "world_size": ctx.world, "subset_size": int(indices.numel()),
            "subset_sha256": fingerprint(indices, weights)}
    with open(folder / f"rank{ctx.rank}.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
