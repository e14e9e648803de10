"""Which rows one epoch trains on, with what loss weight, in which order, on which rank.

An epoch is a list of rows; each row is a dataset index, whether it is a strong
(RandAugment'ed) copy or the weakly augmented (crop + flip) original, and its loss weight:

* ``none``: every example once, weight 1.
* ``full``: every example once, plus ``copies`` strong copies of every example, weight 1.
* ``random`` / ``max-loss`` / ``coreset``: every example once (weight 1), plus ``copies``
  strong copies of each selected example j with weight rho_j = w_j / r, where w_j is the
  selector's weight after :func:`scale_weights` (gamma_j for the coreset, 1 for the baselines).
* ``subset_only`` (paper Sec. 5.2): the originals are the selected examples alone, with
  weight w_j (the weighted coreset), and the copies as above.
* ``aug_mode="inplace"`` (paper App. D.6): an example's strong copies replace its weak row
  instead of being appended to it.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import numpy as np
import torch

STREAMS = ("init", "shuffle", "augment", "select")


class EpochRows(NamedTuple):
    index: torch.Tensor   # int64 (E,), dataset row
    strong: torch.Tensor  # bool (E,), strong copy (True) or weakly augmented original
    weight: torch.Tensor  # float32 (E,), loss weight


def stream_seeds(seed: int) -> dict:
    """Independent seeds for each random stream of a run (:data:`STREAMS`), derived from ``seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(c.generate_state(1, dtype=np.uint64)[0] >> 1) for name, c in zip(STREAMS, children)}


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The augmentation seed of one rank in one epoch (ranks augment differently, and a
    resumed run repeats itself)."""
    return int(np.random.SeedSequence([seed, rank, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


def scale_weights(weights: torch.Tensor, how: str) -> torch.Tensor:
    """The selector's weights w_j as the loss uses them: ``gamma`` as returned, ``normalized``
    divided by their mean over the subset, ``uniform`` all 1."""
    if how == "uniform":
        return torch.ones_like(weights)
    if how == "normalized" and weights.numel():
        return weights / weights.mean()
    return weights


def epoch_rows(n: int, method: str, *, subset: Optional[torch.Tensor] = None,
               subset_weights: Optional[torch.Tensor] = None, copies: int = 4,
               aug_mode: str = "append", subset_only: bool = False) -> EpochRows:
    """The rows of one epoch over a training set of ``n`` examples (CPU tensors), originals
    first, then the copies copy-major (row ``n' + c·k + i`` is copy c of ``subset[i]``).

    ``subset`` (int64, (k,)) and ``subset_weights`` (float, (k,), already scaled) are the
    current selection, required for the subset methods; ``full`` uses every example.
    """
    if method == "none":
        return EpochRows(torch.arange(n), torch.zeros(n, dtype=torch.bool), torch.ones(n))
    if method == "full":
        subset, subset_weights = torch.arange(n), torch.full((n,), float(copies))
    elif subset is None or subset_weights is None:
        raise ValueError(f"method {method!r} needs the selected subset and its weights")
    subset, subset_weights = subset.cpu().long(), subset_weights.cpu().float()

    if subset_only:
        weak_idx, weak_w = subset, subset_weights
    else:
        weak_idx, weak_w = torch.arange(n), torch.ones(n)
    if aug_mode == "inplace" and copies > 0:
        replaced = torch.zeros(n, dtype=torch.bool)
        replaced[subset] = True
        keep = ~replaced[weak_idx]
        weak_idx, weak_w = weak_idx[keep], weak_w[keep]

    strong_idx = subset.repeat(copies)
    strong_w = (subset_weights / max(copies, 1)).repeat(copies)
    return EpochRows(
        torch.cat([weak_idx, strong_idx]),
        torch.cat([torch.zeros(weak_idx.numel(), dtype=torch.bool), torch.ones(strong_idx.numel(), dtype=torch.bool)]),
        torch.cat([weak_w, strong_w]).float(),
    )


def shard(rows: EpochRows, rank: int, world: int, *, blocks: bool = False) -> EpochRows:
    """Rank ``rank``'s rows of a shuffled epoch, after padding with repeats of weight 0 to a
    multiple of ``world`` (so every rank runs the same number of steps and the padding changes
    nothing): every ``world``-th row from ``rank``, or with ``blocks`` one contiguous block per
    rank, which keeps a grouped epoch's examples (:func:`shuffle`) whole on one rank (only the
    examples at the W - 1 block boundaries are read by two ranks)."""
    index, strong, weight = rows
    n = index.numel()
    pad = (-n) % world
    if pad:
        take = torch.arange(pad) % max(n, 1)
        index, strong = torch.cat([index, index[take]]), torch.cat([strong, strong[take]])
        weight = torch.cat([weight, torch.zeros(pad, dtype=weight.dtype)])
    per = index.numel() // world
    sl = slice(rank * per, (rank + 1) * per) if blocks else slice(rank, None, world)
    return EpochRows(index[sl], strong[sl], weight[sl])


def weak_first(rows: EpochRows, batch_size: int) -> "tuple[EpochRows, List[int]]":
    """Reorder each batch of ``batch_size`` consecutive rows so its weak rows come first
    (stable), and count them: a batch is then two contiguous slices, with no masking (and no
    data-dependent shape) inside the training loop. Returns (rows, weak rows per batch)."""
    n = rows.index.numel()
    batch = torch.arange(n) // batch_size
    order = torch.argsort(batch * 2 + rows.strong.long(), stable=True)
    rows = EpochRows(*(t[order] for t in rows))
    nb = -(-n // batch_size)
    weak = torch.bincount(batch[~rows.strong], minlength=nb)
    return rows, weak.tolist()


def shuffle(rows: EpochRows, generator: torch.Generator, num_examples: Optional[int] = None) -> EpochRows:
    """The epoch's rows in random order.

    ``num_examples=None``: a uniform permutation of the rows. Given the number of examples N:
    the examples in random order, each example's rows (its original and its copies) kept next
    to each other, so a batch reads each of its source images once (for data read from disk,
    where decoding is the cost). One ``randperm`` either way.
    """
    if num_examples is None:
        perm = torch.randperm(rows.index.numel(), generator=generator)
    else:
        position = torch.empty(num_examples, dtype=torch.long)
        position[torch.randperm(num_examples, generator=generator)] = torch.arange(num_examples)
        perm = torch.argsort(position[rows.index], stable=True)
    return EpochRows(*(t[perm] for t in rows))


def mix_windows(rows: EpochRows, window: int, generator: torch.Generator) -> EpochRows:
    """Shuffle the rows uniformly within each run of ``window`` consecutive rows (the last run
    may be shorter), keeping the runs in place: after a grouped :func:`shuffle`, an example's
    rows spread over the batches of one window (each of its images read once per window)
    instead of sharing one batch. One ``rand`` of the epoch's length."""
    n = rows.index.numel()
    key = (torch.arange(n) // window).double() + torch.rand(n, generator=generator, dtype=torch.float64)
    order = torch.argsort(key, stable=True)
    return EpochRows(*(t[order] for t in rows))


def order(rows: EpochRows, num_examples: int, generator: torch.Generator, *, group_batches: int, batch_size: int,
          rank: int = 0, world: int = 1) -> EpochRows:
    """An epoch's rows in the order rank ``rank`` of ``world`` trains on them: shuffled
    (``group_batches`` 0: uniformly; k >= 1: by example, :func:`shuffle`), the rank's share
    (:func:`shard`: with k >= 1 one block, so an example stays on one rank), then for k > 1
    mixed within windows of k batches (:func:`mix_windows`; after sharding, so a rank's
    windows are its own batches). Every draw is from ``generator``."""
    grouped = group_batches > 0
    rows = shuffle(rows, generator, num_examples if grouped else None)
    if world > 1:
        rows = shard(rows, rank, world, blocks=grouped)
    if group_batches > 1:
        rows = mix_windows(rows, group_batches * batch_size, generator)
    return rows


def rank_rows(n: int, method: str, generator: torch.Generator, *, subset: Optional[torch.Tensor] = None,
              subset_weights: Optional[torch.Tensor] = None, copies: int = 4, aug_mode: str = "append",
              subset_only: bool = False, group_batches: int = 0, batch_size: int = 1, rank: int = 0,
              world: int = 1) -> "tuple[EpochRows, int]":
    """Rank ``rank``'s rows of one epoch (:func:`epoch_rows`) in training order (:func:`order`),
    and the number of rows of the epoch over all ranks; refused first if the row tables would
    not fit in memory (:func:`check_rows_fit`)."""
    chosen = n if method == "full" else 0 if subset is None else subset.numel()
    check_rows_fit(n, copies * chosen)
    rows = epoch_rows(n, method, subset=subset, subset_weights=subset_weights, copies=copies, aug_mode=aug_mode,
                      subset_only=subset_only)
    total = rows.index.numel()
    return order(rows, n, generator, group_batches=group_batches, batch_size=batch_size, rank=rank,
                 world=world), total


#: Bytes of the epoch's row tables per row (index, flag, weight, and the copies made while
#: shuffling, sharding and ordering them), for the memory check before they are built.
ROW_BYTES = 64


def _available_bytes() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_rows_fit(originals: int, copies: int) -> None:
    """Refuse an epoch whose row tables alone would not fit in memory (``copies`` too large for
    the data), with a message, instead of the OOM killer."""
    rows = originals + copies
    need = rows * ROW_BYTES
    avail = _available_bytes()
    if avail is not None and need > avail:
        raise ValueError(f"copies: an epoch of {rows:,} rows ({originals:,} originals + {copies:,} strong copies) "
                         f"needs about {need / 2**30:.1f} GiB for its row tables, more than the "
                         f"{avail / 2**30:.1f} GiB of memory available; lower copies")
