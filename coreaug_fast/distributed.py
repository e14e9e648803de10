"""Coreset selection sharded across the ranks of a torch.distributed process group.

``select_coreset(..., indices=..., group=...)`` lands here. Every rank passes only the rows
it holds, with their global dataset indices; every rank returns the same global
:class:`~coreaug_fast.Coreset`.

How (every step a torch.distributed collective; NCCL for CUDA tensors, gloo on CPU):

1. Agree on the arguments: one ``all_gather`` of a few integers per rank (an error flag,
   widths, dtypes, a hash of fraction/budget/similarity/...), so a bad argument on one rank
   raises ValueError on every rank instead of hanging the others.
2. Count rows per class and rank: ``all_gather`` of a (classes,) int64 vector.
3. Plan, identically on every rank: picks per class k_c (the single-process rule on the
   global counts); one job per class, or m = ceil(n_c / max_rows_per_rank) part jobs and a
   union job for a class larger than ``max_rows_per_rank`` (GreeDi); jobs go to ranks by LPT
   (longest first, to the least loaded rank) on the greedy's cost k_c · n_c².
4. Send each row to the rank of its job: ``all_to_all_single`` with uneven splits. Rows of
   classes with k_c = 0 stay home.
5. Each rank runs the single-process selector once on the rows it received, each job a
   class, rows of a job in ascending global index.
6. GreeDi only: candidates to the union job's rank (``all_to_all_single``), greedy again on
   the union, the chosen rows back to every rank holding a part, each part's rows counted
   by their nearest chosen element, counts summed with ``all_reduce``.
7. ``all_gather`` the (index, gain, weight) of every pick; ``all_to_all_single`` each row's
   assignment back to the rank it came from.

**Canonical order and exactness.** Without GreeDi the result equals, bit for bit (indices,
weights, gains, assignment), ``select_coreset(X[o], y[o], ..., indices=I[o])`` in one
process, where X, y, I are all ranks' rows concatenated and ``o = argsort(I)``: the rows in
ascending global index, i.e. dataset order. Ties go to the lowest global index, whatever the
sharding. (The per-class computation, centring included, sees the same rows in the same order
in both cases.) Stochastic greedy is deterministic given each rank's generator state, but its
samples differ from a single process's.

**assignment** is per rank: for each of *this rank's* input rows, the position in the global
``indices`` of its representative (-1 for classes with no picks).

**Communication.** Per rank, with R its rows, B = bytes per row (16 + the embedding's bytes),
C classes, W ranks and K the coreset size: counts W·C·8 bytes; rows at most R·B out (each row
once, only to its class's rank); assignments R·8 bytes back; results W·max_r(K_r)·16 bytes in.
GreeDi adds, per split class, m·k_c candidate rows and k_c chosen rows per part holder. The
dataset is never gathered on one rank: a rank receives only the rows of the classes (or
class parts) it selects.

**GreeDi** (Mirzasoleiman, Karbasi, Sarkar, Krause, NeurIPS 2013). A class of n_c >
``max_rows_per_rank`` rows is split into m = ceil(n_c / max_rows_per_rank) parts of
ceil or floor(n_c / m) rows (row t of the class in index order, counted across ranks in rank
order, goes to part t mod m); greedy picks k_c from each part, then greedy picks k_c from the
union of the m·k_c candidates. For a monotone submodular F such as facility location the
result satisfies F(S) ≥ (1 − 1/e)² / min(m, k_c) · OPT (their Theorem 4.2), and much better
on data with geometric structure (their Theorem 4.5); on random data the tests measure ≥ 0.99
of centralised greedy. Weights count *all* rows of the class: each row goes to its nearest
chosen element (ties to the earliest), shard by shard, summed with ``all_reduce``. The
reported gains are the second round's, on the union.
"""
from __future__ import annotations

import math
import zlib
from typing import List, Optional

import torch
import torch.distributed as dist

from . import selection as _sel
from .selection import Coreset

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
_HEADER = 16  # bytes per exchanged row before the payload: int64 global index, int64 job


# ------------------------------------------------------------------ small helpers

def _comm_device(group, data_device: torch.device) -> torch.device:
    backend = str(dist.get_backend(group)).lower()
    if "nccl" in backend and data_device.type == "cuda":
        return data_device
    if "nccl" in backend and "gloo" not in backend:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_into(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    """``out`` (world·r, ...) = the ranks' ``inp`` (r, ...) concatenated in rank order
    (``all_gather_single``, named ``all_gather_into_tensor`` before torch 2.14)."""
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, inp.contiguous(), group=group)


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """(n, ...) tensor -> (n, bytes per row) uint8 view of a contiguous copy."""
    t = t.contiguous()
    per_row = math.prod(t.shape[1:]) * t.element_size()
    return t.view(torch.uint8).reshape(t.shape[0], per_row)


def _from_bytes(b: torch.Tensor, dtype: torch.dtype, width: Optional[int]) -> torch.Tensor:
    out = b.contiguous().reshape(-1).view(dtype)  # flat first: a 1-row slice keeps its odd stride
    return out.reshape(b.shape[0]) if width is None else out.reshape(b.shape[0], width)


def _exchange(rows: torch.Tensor, dest: torch.Tensor, world: int, group, dev: torch.device):
    """Send row i of ``rows`` (n, w) uint8 to rank ``dest[i]``. Returns (received rows, the
    send order, send counts, receive counts); rows arrive grouped by source rank."""
    order = torch.argsort(dest, stable=True)
    send_counts = torch.bincount(dest, minlength=world).to(dev)
    recv_counts = torch.empty_like(send_counts)
    dist.all_to_all_single(recv_counts, send_counts, group=group)
    sc, rc = send_counts.tolist(), recv_counts.tolist()
    recv = torch.empty((sum(rc), rows.shape[1]), dtype=torch.uint8, device=dev)
    dist.all_to_all_single(recv, rows[order].to(dev), output_split_sizes=rc, input_split_sizes=sc, group=group)
    return recv, order, sc, rc


def _send_back(values: torch.Tensor, sc: List[int], rc: List[int], group, dev) -> torch.Tensor:
    """The reverse of an :func:`_exchange`: one int64 per received row, back to its sender,
    in the sender's send order."""
    out = torch.empty(sum(sc), dtype=torch.long, device=dev)
    dist.all_to_all_single(out, values.to(dev).contiguous(), output_split_sizes=sc, input_split_sizes=rc,
                           group=group)
    return out


class _Job:
    __slots__ = ("cls", "kind", "part", "rows", "k", "cost", "owner")

    def __init__(self, cls, kind, part, rows, k):
        self.cls, self.kind, self.part, self.rows, self.k = cls, kind, part, rows, k
        self.cost = float(k) * float(rows) ** 2
        self.owner = -1


def _lpt(jobs: List[_Job], world: int) -> None:
    """Longest processing time first: each job, largest cost first (ties: lower class,
    then part), to the least loaded rank (ties: lowest rank). Same answer on every rank."""
    load = [0.0] * world
    for j in sorted(jobs, key=lambda j: (-j.cost, j.cls, j.part)):
        r = min(range(world), key=lambda i: (load[i], i))
        j.owner = r
        load[r] += j.cost


def _arg_hash(fraction, budget, similarity, optimizer, epsilon, max_rows_per_rank) -> int:
    if isinstance(budget, torch.Tensor):
        budget = budget.tolist()
    text = repr((None if fraction is None else float(fraction), budget, similarity, optimizer, float(epsilon),
                 max_rows_per_rank))
    return zlib.crc32(text.encode())


# ------------------------------------------------------------------ validation

def _check_local(embeddings, labels, indices, fraction, budget, similarity, optimizer, epsilon, backend,
                 generator, max_rows_per_rank):
    """The single-process checks, plus indices (required, >= 0, unique on this rank)."""
    if indices is None:
        raise ValueError("select_coreset(group=...) needs indices=: each row's global dataset index "
                         "(ranks order and identify rows by it)")
    x, h, device, budget = _sel._check_arguments(embeddings, labels, indices, fraction, budget, similarity,
                                                 optimizer, epsilon, backend, generator)
    if indices.numel():
        if int(indices.min()) < 0:
            raise ValueError(f"indices has value {int(indices.min())}, expected global indices >= 0")
        if torch.unique(indices).numel() != indices.numel():
            raise ValueError("indices has repeated values; each row needs its own global index")
    if max_rows_per_rank is not None and (isinstance(max_rows_per_rank, bool) or
                                          not isinstance(max_rows_per_rank, int) or max_rows_per_rank < 1):
        raise ValueError(f"max_rows_per_rank must be None or an int >= 1, got {max_rows_per_rank!r}")
    _sel._resolve_backend(backend, device)
    return x, h, device, budget


def _check_group(group):
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("group= needs an initialised torch.distributed (dist.init_process_group)")
    if not isinstance(group, dist.ProcessGroup):
        raise ValueError(f"group must be a torch.distributed ProcessGroup, got {type(group).__name__}")
    if dist.get_rank(group) < 0:
        raise ValueError("this process is not a member of group")


def _agree(group, dev, world, error: Optional[Exception], meta: List[int]) -> torch.Tensor:
    """All-gather [ok] + meta; raise ValueError on every rank if any rank failed its checks
    or the ranks disagree on the settings. Returns the (world, len) table."""
    row = torch.tensor([[0 if error is None else 1] + meta], dtype=torch.long, device=dev)
    table = torch.empty(world, row.shape[1], dtype=torch.long, device=dev)
    all_gather_into(table, row, group)
    table = table.cpu()
    if error is not None:
        raise error
    bad = table[:, 0].nonzero().squeeze(1).tolist()
    if bad:
        raise ValueError(f"select_coreset(group=...): rank(s) {bad} of the group rejected their arguments "
                         "(the error is raised there)")
    names = ["embedding width", "features width", "embeddings dtype", "features dtype",
             "fraction/budget/similarity/optimizer/epsilon/max_rows_per_rank"]
    for col, name in enumerate(names, start=1):
        if (table[:, col] != table[0, col]).any():
            raise ValueError(f"select_coreset(group=...): the ranks disagree on the {name}; "
                             f"every rank must pass the same settings and embedding layout")
    return table


# ------------------------------------------------------------------ the selection

def select_coreset_sharded(embeddings, labels: torch.Tensor, fraction=None, *, budget=None,
                           similarity: str = "distance", optimizer: str = "lazy", epsilon: float = 0.01,
                           backend: str = "auto", generator: Optional[torch.Generator] = None,
                           indices: Optional[torch.Tensor] = None, group=None,
                           max_rows_per_rank: Optional[int] = None, progress: Optional[bool] = None) -> Coreset:
    """:func:`coreaug_fast.select_coreset` over a process group; see the module docstring.

    Collective: every rank of ``group`` must call it, with the same settings. Arguments as
    :func:`~coreaug_fast.select_coreset`, except:

    Args:
        indices: (n_r,) int64 global dataset index of each of this rank's rows (required;
            unique across the group).
        group: a ``torch.distributed.ProcessGroup`` (e.g. ``dist.group.WORLD``).
        max_rows_per_rank: classes with more rows run GreeDi (approximate); None (default):
            every class is selected exactly on one rank.

    Returns:
        The same global :class:`~coreaug_fast.Coreset` on every rank (on the device of this
        rank's embeddings), with ``assignment`` for this rank's rows.
    """
    _check_group(group)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    data_dev = embeddings[0].device if isinstance(embeddings, tuple) and embeddings and \
        isinstance(embeddings[0], torch.Tensor) else getattr(embeddings, "device", torch.device("cpu"))
    dev = _comm_device(group, data_dev)
    error, meta = None, [0] * 7
    try:
        x, h, device, budget = _check_local(embeddings, labels, indices, fraction, budget, similarity, optimizer,
                                            epsilon, backend, generator, max_rows_per_rank)
        meta = [x.shape[1], -1 if h is None else h.shape[1], _DTYPES.index(x.dtype) if x.dtype in _DTYPES else 9,
                -1 if h is None else (_DTYPES.index(h.dtype) if h.dtype in _DTYPES else 9),
                _arg_hash(fraction, budget, similarity, optimizer, epsilon, max_rows_per_rank),
                int(labels.max()) + 1 if labels.numel() else 0, labels.numel()]
    except ValueError as e:
        error = e
    table = _agree(group, dev, world, error, meta)
    classes_total = int(table[:, 6].max())
    if not isinstance(budget, int) and budget is not None and budget.numel() < classes_total:
        raise ValueError(f"budget has {budget.numel()} entries but the group's labels have class {classes_total - 1}")

    # --- 2. counts per rank and class
    local_counts = torch.bincount(labels.long(), minlength=classes_total).to(dev)
    counts = torch.empty(world, classes_total, dtype=torch.long, device=dev)
    all_gather_into(counts, local_counts.view(1, -1), group)
    counts = counts.cpu()
    n_c = counts.sum(0).tolist()

    # --- 3. the plan (same on every rank)
    if fraction is not None:
        k_c = [min(n, math.ceil(fraction * n)) for n in n_c]
    elif isinstance(budget, int):
        k_c = [min(n, budget) for n in n_c]
    else:
        per = budget.cpu().long().tolist()
        k_c = [min(n, per[c]) for c, n in enumerate(n_c)]
    present = [c for c in range(classes_total) if n_c[c] > 0]
    goff, pos = {}, 0
    for c in present:
        goff[c] = pos
        pos += k_c[c]
    total = pos
    jobs: List[_Job] = []
    class_job = [-1] * classes_total      # exact job of a class
    part_base = [-1] * classes_total      # first part job of a GreeDi class (parts are consecutive)
    parts_of = [0] * classes_total        # m for a GreeDi class, 0 otherwise
    union_job = [-1] * classes_total
    for c in present:
        if k_c[c] == 0:
            continue
        if max_rows_per_rank is None or n_c[c] <= max_rows_per_rank:
            class_job[c] = len(jobs)
            jobs.append(_Job(c, "exact", 0, n_c[c], k_c[c]))
        else:
            m = -(-n_c[c] // max_rows_per_rank)
            parts_of[c], part_base[c] = m, len(jobs)
            sizes = [(n_c[c] - p + m - 1) // m for p in range(m)]
            for p in range(m):
                jobs.append(_Job(c, "part", p, sizes[p], k_c[c]))
            union_job[c] = len(jobs)
            jobs.append(_Job(c, "union", m, sum(min(k_c[c], s) for s in sizes), k_c[c]))
    _lpt(jobs, world)
    owner = torch.tensor([j.owner for j in jobs], dtype=torch.long)
    greedi = [c for c in present if parts_of[c]]

    # --- 4. rows to their job's rank
    n_local = labels.numel()
    lab = labels.long().cpu()
    idx_local = indices.long().cpu()
    o = torch.argsort(idx_local, stable=True)
    o = o[torch.argsort(lab[o], stable=True)]              # by class, then global index
    lab_o = lab[o]
    starts = torch.zeros(classes_total + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(lab_o, minlength=classes_total), 0, out=starts[1:])
    within = torch.arange(n_local) - starts[lab_o]         # position in this rank's part of the class
    prefix = torch.cumsum(counts, 0) - counts               # rows of class c on lower ranks
    t_global = prefix[rank][lab_o] + within
    cj = torch.tensor(class_job, dtype=torch.long)[lab_o]
    m_t = torch.tensor(parts_of, dtype=torch.long)[lab_o]
    pb = torch.tensor(part_base, dtype=torch.long)[lab_o]
    job_of = torch.where(m_t > 0, pb + t_global % m_t.clamp_min(1), cj)
    send = job_of >= 0
    rows_sent = o[send]                                    # positions in this rank's input
    job_sent = job_of[send]
    xs = x[rows_sent.to(x.device)]
    payload = [_bytes(idx_local[rows_sent].view(-1, 1)), _bytes(job_sent.view(-1, 1)), _bytes(xs).cpu()]
    if h is not None:
        payload.append(_bytes(h[rows_sent.to(h.device)]).cpu())
    packed = torch.cat(payload, 1) if rows_sent.numel() else torch.empty(0, _row_width(x, h), dtype=torch.uint8)
    recv, send_order, sc, rc = _exchange(packed, owner[job_sent], world, group, dev)

    # --- 5. round one: every received job is a class of one single-process call
    sel = _select_received(recv, x, h, k_of_job=[j.k for j in jobs], device=device, similarity=similarity,
                           optimizer=optimizer, epsilon=epsilon, backend=backend, generator=generator,
                           progress=progress, group=group, dev=dev)
    r_idx, r_job, r_pay, order_r, cs, job_ids = sel
    # per received row (in received order): global position of its representative
    assign_recv = torch.full((recv.shape[0],), -1, dtype=torch.long)
    finals = {}   # class -> (indices, gains, weights) owned by this rank
    cands = []    # (union job, global index, payload rows) of GreeDi candidates
    for t, jid in enumerate(job_ids):
        job = jobs[jid]
        lo, hi = int(cs.offsets[t]), int(cs.offsets[t + 1])
        picked = cs.indices[lo:hi].cpu()                   # positions in the sorted received rows
        if job.kind == "exact":
            r0, r1 = _segment(r_job[order_r], jid)
            a = cs.assignment[r0:r1].cpu() - lo + goff[job.cls]
            assign_recv[order_r[r0:r1]] = a
            finals[job.cls] = (r_idx[order_r][picked], cs.gains[lo:hi].cpu(), cs.weights[lo:hi].cpu())
        else:
            rows = order_r[picked]
            cands.append((union_job[job.cls], r_idx[rows], r_pay[rows]))

    if greedi:
        weights_g, assign_recv = _greedi(cands, jobs, union_job, part_base, parts_of, greedi, goff, total, finals,
                                         r_idx, r_job, r_pay, order_r, assign_recv, x, h, device, world, group,
                                         dev, similarity=similarity, optimizer=optimizer, epsilon=epsilon,
                                         backend=backend, generator=generator, progress=progress)

    # --- 7. results to every rank, assignments home
    final_owner = {c: jobs[class_job[c] if class_job[c] >= 0 else union_job[c]].owner
                   for c in present if k_c[c] > 0}
    mine = [c for c in present if final_owner.get(c) == rank]
    per_rank = [sum(k_c[c] for c in present if final_owner.get(c) == r) for r in range(world)]
    width = max(per_rank) if per_rank else 0
    block = torch.zeros(width, 16, dtype=torch.uint8)
    if mine:
        ii = torch.cat([finals[c][0] for c in mine]).long()
        gg = torch.cat([finals[c][1] for c in mine]).float()
        ww = torch.cat([torch.zeros(k_c[c]) if finals[c][2] is None else finals[c][2] for c in mine]).float()
        block[:ii.numel()] = torch.cat([_bytes(ii.view(-1, 1)), _bytes(gg.view(-1, 1)), _bytes(ww.view(-1, 1))], 1)
    gathered = torch.empty(world * width, 16, dtype=torch.uint8, device=dev)
    if width:
        all_gather_into(gathered, block.to(dev), group)
    gathered = gathered.cpu().view(world, width, 16)
    out_idx = torch.empty(total, dtype=torch.long)
    out_gain = torch.empty(total, dtype=torch.float32)
    out_w = torch.empty(total, dtype=torch.float32)
    cursor = [0] * world
    for c in present:
        k = k_c[c]
        if k == 0:
            continue
        r = final_owner[c]
        rows = gathered[r, cursor[r]:cursor[r] + k]
        cursor[r] += k
        out_idx[goff[c]:goff[c] + k] = _from_bytes(rows[:, :8], torch.long, None)
        out_gain[goff[c]:goff[c] + k] = _from_bytes(rows[:, 8:12], torch.float32, None)
        out_w[goff[c]:goff[c] + k] = _from_bytes(rows[:, 12:16], torch.float32, None)
    for c in greedi:
        out_w[goff[c]:goff[c] + k_c[c]] = weights_g[goff[c]:goff[c] + k_c[c]]

    back = _send_back(assign_recv, sc, rc, group, dev).cpu()
    assignment = torch.full((n_local,), -1, dtype=torch.long)
    assignment[rows_sent[send_order]] = back
    cls_t = torch.tensor(present, dtype=labels.dtype)
    k_t = torch.tensor([k_c[c] for c in present], dtype=torch.long)
    return Coreset(
        indices=out_idx.to(device),
        weights=out_w.to(device),
        gains=out_gain.to(device),
        assignment=assignment.to(device),
        labels=torch.repeat_interleave(cls_t, k_t).to(device),
        classes=cls_t.to(device),
        offsets=torch.cat([k_t.new_zeros(1), torch.cumsum(k_t, 0)]).to(device),
    )


def _row_width(x, h) -> int:
    w = _HEADER + x.shape[1] * x.element_size()
    return w + (0 if h is None else h.shape[1] * h.element_size())


def _segment(sorted_keys: torch.Tensor, key: int):
    lo = int(torch.searchsorted(sorted_keys, key))
    hi = int(torch.searchsorted(sorted_keys, key, right=True))
    return lo, hi


def _unpack(recv: torch.Tensor, x, h):
    """(global index, job, payload) of exchanged rows, on the CPU."""
    recv = recv.cpu()
    return (_from_bytes(recv[:, :8], torch.long, None), _from_bytes(recv[:, 8:16], torch.long, None),
            recv[:, _HEADER:])


def _embeddings_of(payload: torch.Tensor, x, h, device):
    wx = x.shape[1] * x.element_size()
    a = _from_bytes(payload[:, :wx], x.dtype, x.shape[1]).to(device)
    if h is None:
        return a
    return a, _from_bytes(payload[:, wx:], h.dtype, h.shape[1]).to(device)


def _select_received(recv, x, h, *, k_of_job, device, similarity, optimizer, epsilon, backend, generator,
                     progress, group, dev, check_duplicates=True):
    """Single-process selection on received rows, each job one class, rows of a job in
    ascending global index (the canonical order). Collective (the duplicate check)."""
    r_idx, r_job, r_pay = _unpack(recv, x, h)
    order_r = torch.argsort(r_idx, stable=True)
    order_r = order_r[torch.argsort(r_job[order_r], stable=True)]
    js, ix = r_job[order_r], r_idx[order_r]
    if check_duplicates:
        dup = torch.zeros(1, dtype=torch.long, device=dev)
        if js.numel() > 1:
            dup += int(((js[1:] == js[:-1]) & (ix[1:] == ix[:-1])).any())
        dist.all_reduce(dup, group=group)
        if int(dup):
            raise ValueError("select_coreset(group=...): a global index appears on more than one rank "
                             "within one class; each row needs its own index")
    job_ids, pseudo = torch.unique(js, sorted=True, return_inverse=True)
    job_ids = job_ids.tolist()
    cs = None
    if job_ids:
        emb = _embeddings_of(r_pay[order_r], x, h, device)
        bud = torch.tensor([k_of_job[j] for j in job_ids], dtype=torch.long)
        cs = _sel.select_coreset(emb, pseudo.to(device), budget=bud, similarity=similarity, optimizer=optimizer,
                                 epsilon=epsilon, backend=backend, generator=generator, progress=progress)
    return r_idx, r_job, r_pay, order_r, cs, job_ids


def _sqdist_to(p_emb, s_emb) -> torch.Tensor:
    """(n, k) float32 squared distances from rows to chosen rows (plain or factored)."""
    if isinstance(p_emb, tuple):
        a, hh = p_emb[0].float(), p_emb[1].float()
        sa, sh = s_emb[0].float(), s_emb[1].float()
        na = (a * a).sum(1) * (hh * hh).sum(1)
        ns = (sa * sa).sum(1) * (sh * sh).sum(1)
        d = na[:, None] + ns[None, :] - 2 * (a @ sa.T) * (hh @ sh.T)
    else:
        centre = s_emb.float().mean(0, keepdim=True)  # any offset keeps distances; this one cancels less
        a, s = p_emb.float() - centre, s_emb.float() - centre
        d = (a * a).sum(1)[:, None] + (s * s).sum(1)[None, :] - 2 * (a @ s.T)
    return d.clamp_min_(0)


def _greedi(cands, jobs, union_job, part_base, parts_of, greedi, goff, total, finals, r_idx, r_job, r_pay,
            order_r, assign_recv, x, h, device, world, group, dev, **select_kw):
    """GreeDi's second round, the chosen rows back to the part holders, nearest-chosen
    counts. Fills ``finals`` for the union jobs this rank owns; returns (weights of every
    coreset slot, summed over ranks; assign_recv updated for the part rows)."""
    owner = torch.tensor([j.owner for j in jobs], dtype=torch.long)
    # candidates -> union rank
    if cands:
        uj = torch.cat([torch.full((c[1].numel(),), c[0], dtype=torch.long) for c in cands])
        packed = torch.cat([torch.cat([_bytes(c[1].view(-1, 1)), _bytes(torch.full((c[1].numel(), 1), c[0],
                                                                                    dtype=torch.long)), c[2]], 1)
                            for c in cands])
    else:
        uj = torch.empty(0, dtype=torch.long)
        packed = torch.empty(0, _row_width(x, h), dtype=torch.uint8)
    recv, _, _, _ = _exchange(packed, owner[uj], world, group, dev)
    u_idx, u_job, u_pay, u_order, cs, job_ids = _select_received(
        recv, x, h, k_of_job=[j.k for j in jobs], device=device, group=group, dev=dev, check_duplicates=False,
        **select_kw)
    # chosen rows (with their position in S) -> every rank holding a part of the class
    out_rows, out_dest = [], []
    for t, jid in enumerate(job_ids):
        c = jobs[jid].cls
        lo, hi = int(cs.offsets[t]), int(cs.offsets[t + 1])
        picked = u_order[cs.indices[lo:hi].cpu()]
        finals[c] = (u_idx[picked], cs.gains[lo:hi].cpu(), None)
        holders = sorted({jobs[part_base[c] + p].owner for p in range(parts_of[c])})
        slot = torch.arange(hi - lo, dtype=torch.long) + goff[c]
        rows = torch.cat([_bytes(u_idx[picked].view(-1, 1)), _bytes(slot.view(-1, 1)), u_pay[picked]], 1)
        for r in holders:
            out_rows.append(rows)
            out_dest.append(torch.full((rows.shape[0],), r, dtype=torch.long))
    packed = torch.cat(out_rows) if out_rows else torch.empty(0, _row_width(x, h), dtype=torch.uint8)
    dest = torch.cat(out_dest) if out_dest else torch.empty(0, dtype=torch.long)
    recv, _, _, _ = _exchange(packed, dest, world, group, dev)
    s_idx, s_slot, s_pay = _unpack(recv, x, h)
    # nearest chosen element for every part row held here
    counts = torch.zeros(total, dtype=torch.float64)
    js = r_job[order_r]
    for jid in sorted(set(js.tolist())):
        job = jobs[jid]
        if job.kind != "part":
            continue
        c = job.cls
        mine = ((s_slot >= goff[c]) & (s_slot < goff[c] + job.k)).nonzero().squeeze(1)
        mine = mine[torch.argsort(s_slot[mine])]
        s_emb = _embeddings_of(s_pay[mine], x, h, device)
        r0, r1 = _segment(js, jid)
        rows = order_r[r0:r1]
        k_here = mine.numel()
        s_sorted, s_perm = torch.sort(s_idx[mine])
        r_here = r_idx[rows]
        at = torch.searchsorted(s_sorted, r_here).clamp_max(max(k_here - 1, 0))
        hit = s_sorted[at] == r_here if k_here else torch.zeros_like(r_here, dtype=torch.bool)
        self_pos = torch.where(hit, s_perm[at], -1)
        near = torch.empty(rows.numel(), dtype=torch.long)
        for b0 in range(0, rows.numel(), 4096):
            b = rows[b0:b0 + 4096]
            d = _sqdist_to(_embeddings_of(r_pay[b], x, h, device), s_emb).cpu()
            sp = self_pos[b0:b0 + 4096]
            own = (sp >= 0).nonzero().squeeze(1)
            d[own, sp[own]] = 0.0  # a chosen row is its own representative (unless an earlier pick is identical)
            near[b0:b0 + b.numel()] = torch.argmin(d, 1) if k_here else -1
        assign_recv[rows] = near + goff[c]
        counts += torch.bincount(near + goff[c], minlength=total).double()
    counts = counts.to(dev)
    dist.all_reduce(counts, group=group)
    return counts.cpu().float(), assign_recv
