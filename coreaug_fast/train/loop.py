"""The reference training loop: select (every R epochs) -> augment -> weighted SGD.

Data flows one way: uint8 dataset on the device -> clean forward pass -> gradient
embeddings -> per-class selection -> the epoch's rows (originals + weighted strong copies)
-> batches gathered by index and augmented -> model -> weighted cross-entropy.

``Trainer`` runs one epoch at a time and is what a user copies into their own loop;
``train`` adds checkpoints, logs and the summary around it.
"""
from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from . import _api, ddp
from .batches import BatchMaker
from .config import SUBSET_METHODS, TrainConfig, UsageError, run_name
from .data import Dataset, load_dataset
from .models import build_model
from .plan import epoch_rows
from .report import RunLog, summarize
from .schedule import WarmupDecay
from .selection import select
from .timing import PhaseTimer

STREAMS = ("init", "shuffle", "augment", "select")


def stream_seeds(seed: int) -> dict:
    """Independent seeds for each random stream of a run, derived from ``--seed``."""
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: int(c.generate_state(1, dtype=np.uint64)[0] >> 1) for name, c in zip(STREAMS, children)}


def scale_weights(weights: torch.Tensor, how: str) -> torch.Tensor:
    """The selector's weights as used for the loss (see ``config.SUBSET_WEIGHTS``)."""
    if how == "uniform":
        return torch.ones_like(weights)
    if how == "normalized" and weights.numel():
        return weights / weights.mean()
    return weights


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device must be auto, cpu or cuda[:N]; got {name!r}") from None


class Trainer:
    """One run's model, optimiser, schedule, random streams and selection state.

    Args:
        cfg: the run's configuration (resolved here).
        dataset: optional pre-loaded :class:`Dataset` (CPU or device); loaded from ``cfg``
            otherwise.
    """

    def __init__(self, cfg: TrainConfig, dataset: Optional[Dataset] = None):
        self.cfg = cfg = cfg.resolved()
        self.ddp = ddp.active()  # a process group of several ranks: data-parallel (see ddp.py)
        self.device = self.ddp.device if self.ddp else resolve_device(cfg.device)
        self.ds = (dataset or load_dataset(cfg)).to(self.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        seeds = stream_seeds(cfg.seed)
        with torch.random.fork_rng(devices=[]):  # model init must not depend on, or disturb, the global stream
            torch.manual_seed(seeds["init"])
            self.model = build_model(cfg.model, self.ds.num_classes, self.ds.image_shape)
        self.model.to(self.device)
        self.net = ddp.wrap(self.model, self.ddp) if self.ddp else self.model  # what training steps call
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.schedule = WarmupDecay(self.optimizer, base_lr=cfg.lr, epochs=cfg.epochs,
                                    warmup_epochs=cfg.warmup_epochs, decay=cfg.lr_decay)
        self.generators = {k: torch.Generator().manual_seed(seeds[k]) for k in ("shuffle", "augment", "select")}
        self.batches = BatchMaker(self.ds, num_ops=cfg.num_ops, magnitude=cfg.magnitude)
        n = self.ds.train_y.numel()
        self.epoch = 0
        self.subset: Optional[torch.Tensor] = None
        self.subset_weights: Optional[torch.Tensor] = None
        self.maxloss_intersection: Optional[float] = None
        self.ever_selected = torch.zeros(n, dtype=torch.bool)
        self.records: list = []
        self.elapsed_s = 0.0

    # -- one epoch ---------------------------------------------------------------------
    def run_epoch(self, progress: bool = True) -> dict:
        """Select if due, train one epoch, evaluate; returns the epoch's record."""
        cfg, e = self.cfg, self.epoch
        t0 = time.perf_counter()
        selected, selection_s, metrics_s = False, 0.0, 0.0
        if cfg.method in SUBSET_METHODS and e % cfg.select_every == 0:
            how = dict(fraction=cfg.fraction, embedding=cfg.embedding, generator=self.generators["select"],
                       batch_size=cfg.batch_size, amp=self.amp)
            s = (ddp.select(cfg.method, self.model, self.batches, ctx=self.ddp, **how) if self.ddp
                 else select(cfg.method, self.model, self.batches, **how))
            self.subset, self.maxloss_intersection = s.indices, s.maxloss_intersection
            self.subset_weights = scale_weights(s.weights, cfg.subset_weights)
            self.ever_selected[s.indices] = True
            selected, selection_s, metrics_s = True, s.selection_s, s.metrics_s
        elif cfg.method == "full":
            self.ever_selected[:] = True
        rows = epoch_rows(self.ds.train_y.numel(), cfg.method, subset=self.subset,
                          subset_weights=self.subset_weights, copies=cfg.copies,
                          aug_mode=cfg.aug_mode, subset_only=cfg.subset_only)
        train_loss, times = self.train_rows(rows, progress=progress)
        t1 = time.perf_counter()
        acc = self.evaluate()
        eval_s = time.perf_counter() - t1
        self.epoch += 1
        rec = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "test_acc": acc,
            "lr": self.schedule.last_lr,
            "selection_s": selection_s,
            "augment_s": times.get("augment", 0.0),
            "train_s": times.get("train", 0.0),
            "eval_s": eval_s,
            "metrics_s": metrics_s,
            "epoch_s": time.perf_counter() - t0,
            "rows": int(rows.index.numel()),
            "selected": selected,
            "subset_size": None if self.subset is None else int(self.subset.numel()),
            "fraction_never_selected": (None if cfg.method == "none"
                                        else 1.0 - float(self.ever_selected.float().mean())),
            "maxloss_intersection": self.maxloss_intersection,
        }
        rec["method_s"] = rec["selection_s"] + rec["augment_s"] + rec["train_s"]
        self.records.append(rec)
        return rec

    def train_rows(self, rows, progress: bool = True):
        """One pass of weighted SGD over ``rows`` (a :class:`plan.EpochRows`) in shuffled
        batches. Returns (mean training loss, {"augment": s, "train": s})."""
        cfg, dev, e = self.cfg, self.device, self.epoch
        perm = torch.randperm(rows.index.numel(), generator=self.generators["shuffle"])
        index, strong, weight = rows.index[perm], rows.strong[perm], rows.weight[perm]
        if self.ddp:
            index, strong, weight = ddp.shard(index, strong, weight, self.ddp)
            ddp.reseed_augment(self.generators["augment"], cfg.seed, e, self.ddp)
        nb = math.ceil(index.numel() / cfg.batch_size)
        timer = PhaseTimer(dev)
        loss_sum = torch.zeros((), device=dev)
        self.model.train()
        bar = tqdm(range(nb), desc=f"{cfg.method} {e + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not progress, dynamic_ncols=True)
        for b in bar:
            sl = slice(b * cfg.batch_size, (b + 1) * cfg.batch_size)
            bi, bs, bw = index[sl], strong[sl], weight[sl]
            t = timer.start()
            weak_i, strong_i = bi[~bs], bi[bs]
            parts = []
            if weak_i.numel():
                parts.append(self.batches.weak(weak_i.to(dev), self.generators["augment"]))
            if strong_i.numel():
                parts.append(self.batches.strong(strong_i.to(dev), self.generators["augment"]))
            x = torch.cat(parts) if len(parts) > 1 else parts[0]
            order = torch.cat([weak_i, strong_i]).to(dev)
            y = self.ds.train_y[order]
            w = torch.cat([bw[~bs], bw[bs]]).to(dev)
            timer.stop("augment", t)
            t = timer.start()
            self.schedule.set(e + (b + 1) / nb)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.amp):
                logits = self.net(x)
            if self.ddp:
                loss = ddp.batch_loss(logits, y, w, cfg.loss_normalize, self.ddp)
            else:
                loss = _api.weighted_cross_entropy(logits, y, w, reduction="mean", normalize=cfg.loss_normalize)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * bi.numel()
            timer.stop("train", t)
        mean_loss = float(loss_sum) / max(index.numel(), 1)
        if self.ddp:
            mean_loss = ddp.mean_over_ranks(mean_loss, self.ddp)
        return mean_loss, timer.totals()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 test accuracy in percent (model in eval mode, no augmentation)."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        for x, y in zip(self.ds.test_x.split(1024), self.ds.test_y.split(1024)):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred = self.model(self.batches.clean(x)).argmax(1)
            correct += (pred == y).sum()
        self.model.train()
        return 100.0 * float(correct) / max(self.ds.test_y.numel(), 1)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "selection": {"subset": self.subset, "weights": self.subset_weights,
                          "maxloss_intersection": self.maxloss_intersection,
                          "ever_selected": self.ever_selected},
            "records": self.records,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict) -> None:
        saved = TrainConfig(**state["config"]).training_keys()
        diff = sorted(k for k, v in self.cfg.training_keys().items() if saved.get(k) != v)
        if diff:
            raise UsageError("--resume: the checkpoint was written with different settings: " +
                             ", ".join(f"{k} ({saved.get(k)!r} there, {getattr(self.cfg, k)!r} here)" for k in diff))
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        for k, g in self.generators.items():
            g.set_state(state["generators"][k])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        sel = state["selection"]
        self.subset, self.subset_weights = sel["subset"], sel["weights"]
        self.maxloss_intersection, self.ever_selected = sel["maxloss_intersection"], sel["ever_selected"]
        self.records, self.elapsed_s = list(state["records"]), state["elapsed_s"]

    def save(self, path: Path) -> None:
        """Write atomically, so an interrupted save never leaves a broken checkpoint."""
        tmp = Path(str(path) + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load(self, path: Path) -> None:
        if not Path(path).is_file():
            raise UsageError(f"--resume: no checkpoint at {path}")
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=False))


def default_out(cfg: TrainConfig) -> str:
    return os.path.join("runs", f"{cfg.dataset}-{run_name(cfg)}")


def train(cfg: TrainConfig, dataset: Optional[Dataset] = None, *, epoch_lines: bool = True) -> dict:
    """Run (or resume) training as configured; write ``epochs.jsonl``, ``summary.json`` and
    ``checkpoint.pt`` under ``cfg.out`` and return the summary dict.

    ``--stop-after N`` ends this invocation after N epochs, leaving a checkpoint to resume.
    """
    cfg = cfg.resolved()
    started_group = ddp.launched() and not (torch.distributed.is_available() and torch.distributed.is_initialized())
    ctx = ddp.setup(cfg.device)
    try:
        return _train(cfg, dataset, ctx, epoch_lines)
    finally:
        if started_group:
            torch.distributed.destroy_process_group()


def _train(cfg: TrainConfig, dataset, ctx, epoch_lines: bool) -> dict:
    main = ctx is None or ctx.rank == 0  # the rank that writes checkpoints, logs and lines
    out = Path(cfg.out or default_out(cfg))
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.pt"
    trainer = Trainer(cfg, dataset)
    if cfg.resume:
        trainer.load(ckpt if cfg.resume == "auto" else Path(cfg.resume))
    log = RunLog(out, trainer.records) if main else None
    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, trainer.epoch + cfg.stop_after)
    started, before = time.perf_counter(), trainer.elapsed_s
    while trainer.epoch < stop:
        rec = trainer.run_epoch(progress=not cfg.quiet)
        trainer.elapsed_s = before + time.perf_counter() - started
        if ctx is not None and rec["selected"]:
            ddp.record_selection(out, ctx, rec["epoch"], trainer.subset, trainer.subset_weights)
        if not main:
            continue
        trainer.save(ckpt)
        log.append(rec)
        if epoch_lines and not cfg.quiet:
            tqdm.write(_epoch_line(cfg, rec))
    summary = summarize(cfg, trainer.records, trainer.elapsed_s, complete=trainer.epoch >= cfg.epochs,
                        implementation=_api.IMPLEMENTATION, device=trainer.device)
    if ctx is not None:
        summary["world_size"] = ctx.world
        if trainer.subset is not None:
            summary["subset_sha256"] = ddp.fingerprint(trainer.subset, trainer.subset_weights)
        torch.distributed.barrier()  # rank 0's checkpoint is complete before anyone returns
    if main:
        log.write_summary(summary)
    return summary


def _epoch_line(cfg, r) -> str:
    extra = ""
    if r["fraction_never_selected"] is not None and cfg.method != "full":
        extra = f"  NS {100 * r['fraction_never_selected']:.1f}%  ∩maxloss {100 * r['maxloss_intersection']:.0f}%"
    return (f"[{cfg.method}] epoch {r['epoch']}/{cfg.epochs}  loss {r['train_loss']:.4f}  "
            f"acc {r['test_acc']:.2f}%  sel {r['selection_s']:.2f}s  aug {r['augment_s']:.2f}s  "
            f"train {r['train_s']:.2f}s{extra}")
