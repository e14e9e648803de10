"""The configuration of one training run, its defaults and its checks."""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

METHODS = ("none", "full", "random", "max-loss", "coreset")
SUBSET_METHODS = ("random", "max-loss", "coreset")
DATASETS = ("digits", "cifar10", "svhn", "cifar10-lt", "synthetic")
MODELS = ("resnet20", "resnet32", "wrn-28-10", "cnn", "mlp")
DEFAULT_MODEL = {"digits": "mlp", "synthetic": "cnn", "cifar10": "resnet20",
                 "cifar10-lt": "resnet32", "svhn": "resnet32"}
# How the selector's weights w_j become the copies' loss weights rho_j (before / r):
# gamma: w_j as returned (gamma_j for the coreset; paper Alg. 1); normalized: w_j / mean(w)
# over the subset (the authors' released code); uniform: 1 for every selected example.
SUBSET_WEIGHTS = ("gamma", "normalized", "uniform")
DEFAULT_EPOCHS = {"digits": 30, "synthetic": 2}  # the paper's 200 elsewhere

# Keys that do not change what is computed, so a resumed run may differ in them.
RUN_ONLY_KEYS = ("out", "resume", "stop_after", "quiet", "data_dir", "download")


class UsageError(ValueError):
    """A bad argument or missing input, reported to the user in one line."""


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a run (the CLI's flags, one to one). ``None`` means the per-dataset
    default, filled in by :meth:`resolved`."""

    dataset: str = "digits"
    data_dir: Optional[str] = None
    download: bool = False
    train_size: Optional[int] = None
    image_size: int = 32            # synthetic only
    label_noise: float = 0.0
    imbalance: Optional[float] = None
    model: Optional[str] = None
    method: str = "coreset"
    fraction: float = 0.1
    select_every: int = 5
    copies: int = 4
    num_ops: int = 2
    magnitude: int = 9
    aug_mode: str = "append"
    subset_only: bool = False
    subset_weights: str = "gamma"
    embedding: str = "last-layer"
    epochs: Optional[int] = None
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_epochs: Optional[int] = None
    lr_decay: str = "step"
    loss_normalize: str = "weights"
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    out: Optional[str] = None
    resume: Optional[str] = None
    stop_after: Optional[int] = None
    quiet: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with per-dataset defaults filled in, after checking every value."""
        c = dataclasses.replace(self)
        _choice("dataset", c.dataset, DATASETS)
        _choice("method", c.method, METHODS)
        c.model = c.model or DEFAULT_MODEL[c.dataset]
        _choice("model", c.model, MODELS)
        _choice("aug-mode", c.aug_mode, ("append", "inplace"))
        _choice("embedding", c.embedding, ("last-layer", "last-layer-features"))
        _choice("subset-weights", c.subset_weights, SUBSET_WEIGHTS)
        _choice("lr-decay", c.lr_decay, ("step", "cosine"))
        _choice("loss-normalize", c.loss_normalize, ("weights", "count"))
        if c.method in SUBSET_METHODS and not (0.0 < c.fraction <= 1.0):
            raise UsageError(f"--fraction must be in (0, 1], got {c.fraction}")
        if c.method == "none":
            c.fraction = 0.0
        elif c.method == "full":
            c.fraction = 1.0
        if c.subset_only and c.method not in SUBSET_METHODS:
            raise UsageError("--subset-only needs a subset method (random, max-loss, coreset), "
                             f"got --method {c.method}")
        c.epochs = c.epochs if c.epochs is not None else DEFAULT_EPOCHS.get(c.dataset, 200)
        c.warmup_epochs = c.warmup_epochs if c.warmup_epochs is not None else math.ceil(c.epochs / 40)
        c.imbalance = c.imbalance if c.imbalance is not None else (100.0 if c.dataset == "cifar10-lt" else 1.0)
        _positive("epochs", c.epochs)
        _positive("select-every", c.select_every)
        _positive("batch-size", c.batch_size)
        _positive("num-ops", c.num_ops)
        _positive("image-size", c.image_size)
        if c.copies < 0:
            raise UsageError(f"--copies must be >= 0, got {c.copies}")
        if c.method == "full" and c.copies == 0:
            raise UsageError("--method full needs --copies >= 1")
        if c.train_size is not None:
            _positive("train-size", c.train_size)
        if not 0.0 <= c.label_noise < 1.0:
            raise UsageError(f"--label-noise must be in [0, 1), got {c.label_noise}")
        if c.imbalance < 1.0:
            raise UsageError(f"--imbalance must be >= 1, got {c.imbalance}")
        if not 0 <= c.magnitude <= 30:
            raise UsageError(f"--magnitude must be in [0, 30], got {c.magnitude}")
        if c.lr <= 0 or c.weight_decay < 0 or not 0 <= c.momentum < 1:
            raise UsageError(f"need --lr > 0, --weight-decay >= 0, 0 <= --momentum < 1; got "
                             f"{c.lr}, {c.weight_decay}, {c.momentum}")
        if c.warmup_epochs < 0 or c.warmup_epochs > c.epochs:
            raise UsageError(f"--warmup-epochs must be in [0, epochs={c.epochs}], got {c.warmup_epochs}")
        if c.stop_after is not None:
            _positive("stop-after", c.stop_after)
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_keys(self) -> dict:
        """The settings that determine the computation (all but :data:`RUN_ONLY_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}


def run_name(cfg: TrainConfig) -> str:
    """``<method>[-<fraction>][-subset-only][-w<subset-weights>]-s<seed>``"""
    sub = cfg.method in SUBSET_METHODS
    return (cfg.method + (f"-{cfg.fraction:g}" if sub else "") + ("-subset-only" if cfg.subset_only else "")
            + (f"-w{cfg.subset_weights}" if sub and cfg.subset_weights != "gamma" else "") + f"-s{cfg.seed}")


def _choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise UsageError(f"--{flag} must be one of {', '.join(choices)}; got {value!r}")


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"--{flag} must be >= 1, got {value}")
