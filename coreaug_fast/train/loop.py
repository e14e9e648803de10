"""The reference training loop: select (every R epochs) -> augment -> weighted SGD.

Data flows one way: uint8 dataset on the device -> clean forward pass -> gradient
embeddings -> per-class selection -> the epoch's rows (originals + weighted strong copies)
-> batches gathered by index and augmented -> model -> weighted cross-entropy.

``Trainer`` runs one epoch at a time on ``CoresetAugmentation`` (the object for your own loop);
``train`` adds checkpoints, logs and the summary around it.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Optional

import torch
from tqdm.auto import tqdm

from . import checkpoint, ddp, files
from .. import coreset_augmentation, selection_pass
from ..coreset_augmentation import CoresetAugmentation
from ..loss import weighted_cross_entropy
from ..rows import stream_seeds
from ..timing import PhaseTimer
from .config import TrainConfig, UsageError, run_name
from .data import Dataset, load_dataset
from .models import build_model, last_layer, load_weights
from .report import RunLog, summarize
from .schedule import WarmupDecay

# Which module each op a run calls comes from (where the library calls it); written into every
# run's summary so a figure is never mistaken for one measured with the fused ops.
IMPLEMENTATION = {
    f.__name__: f.__module__
    for f in (selection_pass.select_coreset, selection_pass.select_random, selection_pass.select_max_loss,
              coreset_augmentation.Augmenter, weighted_cross_entropy, selection_pass.gradient_embeddings)
}


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
    """The reference training loop, one epoch at a time, built on
    :class:`~coreaug_fast.CoresetAugmentation` (which selects, builds the epoch's rows and
    augments): ``run_epoch`` trains on its batches and evaluates. ``state_dict`` /
    ``load_state_dict`` cover the model, optimiser, schedule and the augmentation's state.

    Args:
        cfg: the run's configuration (resolved here).
        dataset: optional pre-loaded :class:`Dataset` (CPU or device); loaded from ``cfg``
            otherwise.
        model: optional ``nn.Module`` of your own (moved to the device; the optimiser is built
            from its parameters); default: ``cfg.model`` built here.
        features: the module whose input is the penultimate activation, for
            ``embedding="last-layer-features"`` (default: the built-in model's ``head``).
    """

    def __init__(self, cfg: TrainConfig, dataset: Optional[Dataset] = None, *,
                 model: Optional[torch.nn.Module] = None, features: Optional[torch.nn.Module] = None):
        self.cfg = cfg = cfg.resolved()
        self.ddp = ddp.active()  # a process group of several ranks: data-parallel (see ddp.py)
        self.device = self.ddp.device if self.ddp else resolve_device(cfg.device)
        self.ds = (dataset or load_dataset(cfg)).to(self.device)
        self.amp = cfg.amp and self.device.type == "cuda"
        if model is None:
            with torch.random.fork_rng(devices=[]):  # model init must not depend on, or disturb, the global stream
                torch.manual_seed(stream_seeds(cfg.seed)["init"])
                try:
                    model = build_model(cfg.model, self.ds.num_classes, self.ds.image_shape)
                except ValueError as e:
                    raise UsageError(str(e)) from None
            features = features if features is not None else last_layer(model)
        elif not isinstance(model, torch.nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        #: state-dict entries of --weights left as initialised (another shape, e.g. the classifier)
        self.weights_skipped: list = []
        if cfg.weights is not None and not cfg.resume:  # a checkpoint replaces the model: its file may be gone
            try:
                self.weights_skipped = load_weights(model, cfg.weights)
            except ValueError as e:
                raise UsageError(str(e)) from None
        self.model = model.to(self.device)
        self.net = ddp.wrap(self.model, self.ddp) if self.ddp else self.model  # what training steps call
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)
        self.schedule = WarmupDecay(self.optimizer, base_lr=cfg.lr, epochs=cfg.epochs,
                                    warmup_epochs=cfg.warmup_epochs, decay=cfg.lr_decay)
        ds = self.ds
        # a folder is read from disk at --image-size, in --workers processes
        from_disk = {} if ds.in_memory else dict(image_size=ds.image_size, weak=ds.weak, num_workers=cfg.workers,
                                                 progress=False if cfg.quiet else None)
        try:  # what the config's checks leave to the object (e.g. a dataset's first item) is one line too
            self.augmentation = self._augmentation(ds, cfg, features, from_disk)
        except ValueError as e:
            raise UsageError(str(e)) from None
        self.epoch = 0
        self.records: list = []
        self.elapsed_s = 0.0

    def _augmentation(self, ds, cfg: TrainConfig, features, from_disk: dict) -> CoresetAugmentation:
        return CoresetAugmentation(
            ds.train_x, ds.train_y, fraction=cfg.fraction, select_every=cfg.select_every, copies=cfg.copies,
            policy=cfg.policy, num_ops=cfg.num_ops, magnitude=cfg.magnitude, padding=ds.padding, flip=ds.flip,
            mean=ds.mean, std=ds.std, method=cfg.method, subset_only=cfg.subset_only, aug_mode=cfg.aug_mode,
            weights=cfg.subset_weights, embedding=cfg.embedding, features=features, seed=cfg.seed, amp=self.amp,
            augment_impl=getattr(cfg, "augment_impl", "fused"), group=self.ddp.group if self.ddp else None,
            track_maxloss=True, group_batches=cfg.group_batches, selection_pass=cfg.selection_pass,
            **from_disk)

    # -- one epoch ---------------------------------------------------------------------
    def run_epoch(self, progress: bool = True) -> dict:
        """Select if due, train one epoch, evaluate; returns the epoch's record."""
        cfg, e = self.cfg, self.epoch
        t0 = time.perf_counter()
        batches = self.augmentation.epoch(self.net, cfg.batch_size)  # selects first when due
        train_loss, train_s = self.train_batches(batches, progress=progress)
        t1 = time.perf_counter()
        acc = self.evaluate()
        eval_s = time.perf_counter() - t1
        self.epoch += 1
        st = self.augmentation.stats
        rec = {
            "epoch": self.epoch,
            "train_loss": train_loss,
            "test_acc": acc,
            "lr": self.schedule.last_lr,
            "selection_s": st["selection_s"],
            "augment_s": st["augment_s"],
            "train_s": train_s,
            "eval_s": eval_s,
            "epoch_s": time.perf_counter() - t0,
            "rows": st["rows"],
            "selected": st["selected"],
            "subset_size": st["subset_size"],
            "fraction_never_selected": st["fraction_never_selected"],
            "maxloss_intersection": st["maxloss_intersection"],
        }
        rec["method_s"] = rec["selection_s"] + rec["augment_s"] + rec["train_s"]
        self.records.append(rec)
        return rec

    def train_batches(self, batches, progress: bool = True):
        """One pass of weighted SGD over an epoch's batches (from
        :meth:`CoresetAugmentation.epoch`). Returns (mean training loss, seconds training)."""
        cfg, e, nb = self.cfg, self.epoch, len(batches)
        timer = PhaseTimer(self.device)
        loss_sum = torch.zeros((), device=self.device)
        rows = 0
        self.model.train()
        # disable=None: tqdm draws only on a terminal, never into a log file or pipe
        bar = tqdm(batches, total=nb, desc=f"{cfg.method} {e + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=None if progress else True, dynamic_ncols=True)
        for b, (x, y, w) in enumerate(bar):
            t = timer.start()
            loss_sum += self.train_step(x, y, w, e + (b + 1) / nb) * y.shape[0]
            rows += y.shape[0]
            timer.stop("train", t)
        mean_loss = float(loss_sum) / max(rows, 1)
        if self.ddp:
            mean_loss = ddp.mean_over_ranks(mean_loss, self.ddp)
        return mean_loss, timer.totals().get("train", 0.0)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, progress: float) -> torch.Tensor:
        """One weighted SGD step at ``progress`` epochs (sets the learning rate); returns the
        detached batch loss. Launches device work only: no host synchronisation."""
        self.schedule.set(progress)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            logits = self.net(x)
        if self.ddp:
            loss = ddp.batch_loss(logits, y, w, self.cfg.loss_normalize, self.ddp)
        else:
            loss = weighted_cross_entropy(logits, y, w, reduction="mean", normalize=self.cfg.loss_normalize,
                                          check=False)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    @torch.no_grad()
    def evaluate(self) -> float:
        """Top-1 test accuracy in percent (model in eval mode, no augmentation)."""
        self.model.eval()
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        if self.ds.in_memory:
            batches = ((self.augmentation.transform_eval(x), y)
                       for x, y in zip(self.ds.test_x.split(1024), self.ds.test_y.split(1024)))
        else:  # read from disk in the augmentation's workers, shorter side resized, centre-cropped
            batches = self.augmentation.eval_batches(self.ds.test_x, self.cfg.batch_size, device=self.device)
        for x, y in batches:
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                pred = self.model(x).argmax(1)
            correct += (pred == y).sum()
        self.model.train()
        return 100.0 * float(correct) / max(self.ds.test_y.numel(), 1)

    # -- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Plain Python values and tensors only, so ``torch.load(weights_only=True)`` reads it."""
        return {
            "config": self.cfg.to_dict(),
            "epoch": self.epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "selection": self.augmentation.state_dict(),
            "records": self.records,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint written with the same settings; a larger ``epochs`` extends
        the run (the schedule then follows the new length from the checkpoint on)."""
        saved_cfg = checkpoint.config_from_dict(state["config"], "--resume: the checkpoint")
        # resolved: a checkpoint written before a setting existed ran with that setting's default
        saved = saved_cfg.resolved().training_keys()
        here = self.cfg.training_keys()
        extend = here["epochs"] != saved["epochs"]
        if extend and here["epochs"] < state["epoch"]:
            raise UsageError(f"--resume: the checkpoint has {state['epoch']} epochs done; --epochs "
                             f"{here['epochs']} would end before it (use --epochs >= {state['epoch']})")
        ignore = {"epochs"}
        if extend and dataclasses.replace(saved_cfg, warmup_epochs=None, epochs=here["epochs"]).resolved() \
                .warmup_epochs == here["warmup_epochs"]:
            ignore.add("warmup_epochs")  # the default follows --epochs; keep the checkpoint's
        diff = sorted(k for k, v in here.items() if k not in ignore and saved.get(k) != v)
        if diff:
            raise UsageError("--resume: the checkpoint was written with different settings: " +
                             ", ".join(f"{k} ({saved.get(k)!r} there, {getattr(self.cfg, k)!r} here)" for k in diff))
        self.epoch = state["epoch"]
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if extend:
            self.cfg = dataclasses.replace(self.cfg, warmup_epochs=saved["warmup_epochs"])
            self.schedule.epochs = self.cfg.epochs
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.augmentation.load_state_dict(state["selection"])
        self.records, self.elapsed_s = list(state["records"]), state["elapsed_s"]

    def save(self, path: Path) -> None:
        """Write the checkpoint atomically, with its checksum (:mod:`.checkpoint`)."""
        checkpoint.save(self.state_dict(), path)

    def load(self, path: Path) -> None:
        """Resume from the checkpoint at ``path`` (see :func:`read_checkpoint`)."""
        self.load_state_dict(read_checkpoint(path, self.device))


read_checkpoint = checkpoint.read


def default_out(cfg: TrainConfig) -> str:
    return os.path.join("runs", f"{cfg.dataset}-{run_name(cfg)}")


def train(cfg: TrainConfig, dataset: Optional[Dataset] = None, *, epoch_lines: bool = True) -> dict:
    """Run (or resume) training as configured; write ``epochs.jsonl``, ``summary.json`` and
    ``checkpoint.pt`` under ``cfg.out`` and return the summary dict.

    ``--stop-after N`` ends this invocation after N epochs, leaving a checkpoint to resume.
    A folder that already holds files is refused unless ``cfg.resume`` (continue the run
    there) or ``cfg.overwrite`` (delete the old run's files first); see :mod:`.files`.
    """
    cfg = cfg.resolved()
    # Every rank checks before any of them writes: setup() below waits for all ranks.
    files.check_folder(Path(cfg.out or default_out(cfg)), resume=bool(cfg.resume), overwrite=cfg.overwrite)
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
    ckpt = out / "checkpoint.pt"
    # A bad --device or --resume is refused before anything is written or loaded.
    device = ctx.device if ctx is not None else resolve_device(cfg.device)
    state = read_checkpoint(ckpt if cfg.resume == "auto" else Path(cfg.resume), device) if cfg.resume else None
    trainer = Trainer(cfg, dataset)  # a bad --data-dir or --weights is refused before the folder is touched
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite:
            files.clear_folder(out)
        # An old summary beside the log of the epochs trained now would contradict it if
        # this invocation were killed; the new one is written at the end.
        (out / "summary.json").unlink(missing_ok=True)
    if ctx is not None:
        torch.distributed.barrier()  # no rank writes into the folder before rank 0 has cleared it
    if trainer.weights_skipped and main and not cfg.quiet:
        tqdm.write(f"--weights {cfg.weights}: kept the model's own {', '.join(trainer.weights_skipped)} "
                   "(another shape there)")
    if state is not None:
        trainer.load_state_dict(state)
    log = RunLog(out, trainer.records) if main else None
    stop = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, trainer.epoch + cfg.stop_after)
    started, before = time.perf_counter(), trainer.elapsed_s
    while trainer.epoch < stop:
        rec = trainer.run_epoch(progress=not cfg.quiet)
        trainer.elapsed_s = before + time.perf_counter() - started
        if ctx is not None and rec["selected"]:
            ddp.record_selection(out, ctx, rec["epoch"], *trainer.augmentation.subset)
        if not main:
            continue
        trainer.save(ckpt)
        log.append(rec)
        if epoch_lines and not cfg.quiet:
            tqdm.write(_epoch_line(cfg, rec))
    summary = summarize(cfg, trainer.records, trainer.elapsed_s, complete=trainer.epoch >= cfg.epochs,
                        implementation=IMPLEMENTATION, device=trainer.device)
    if ctx is not None:
        summary["world_size"] = ctx.world
        if trainer.augmentation.subset is not None:
            summary["subset_sha256"] = ddp.fingerprint(*trainer.augmentation.subset)
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
