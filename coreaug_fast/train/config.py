"""The configuration of one training run, its defaults and its checks."""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Optional

from ..augment_checks import MAX_COPIES
from ..augmentation_args import MAX_GROUP_BATCHES
from ..loading import MIN_IMAGE_SIZE
from ..policies import MAX_OPS
from ..vocabulary import (AUG_MODES, AUGMENT_IMPLS, EMBEDDINGS, LOSS_NORMALIZATIONS, LR_DECAYS, METHODS, POLICIES,
                          SELECTION_PASSES, SUBSET_METHODS, WEAK_MODES)
from ..vocabulary import WEIGHTS as SUBSET_WEIGHTS

DATASETS = ("digits", "mnist5k", "cifar10", "svhn", "cifar10-lt", "synthetic", "folder")
#: torchvision's ImageNet ResNets (any image size), for ``folder`` datasets as in the paper's
#: Caltech256 (ResNet18) and TinyImageNet / ImageNet (ResNet50) runs.
TORCHVISION_MODELS = ("resnet18", "resnet50")
MODELS = ("resnet20", "resnet32", "wrn-28-10", "cnn", "mlp") + TORCHVISION_MODELS
DEFAULT_MODEL = {"digits": "mlp", "mnist5k": "cnn", "synthetic": "cnn", "cifar10": "resnet20",
                 "cifar10-lt": "resnet32", "svhn": "resnet32", "folder": "resnet18"}
# the paper's 200 elsewhere; 90 for folders (the ImageNet schedule)
DEFAULT_EPOCHS = {"digits": 30, "mnist5k": 15, "synthetic": 2, "folder": 90}
DEFAULT_IMAGE_SIZE = {"synthetic": 32, "folder": 224}
MAX_SEED = 2**32 - 1
MAX_LR = 10.0
# --image-size is at least loading.MIN_IMAGE_SIZE (8): below it the CNNs pool to nothing, and
# a crop or a geometry op has no room to move. One rule for every use of --image-size.
DEVICE_TYPES = ("cpu", "cuda")

# Keys that do not change what is computed, so a resumed run may differ in them.
RUN_ONLY_KEYS = ("out", "resume", "overwrite", "stop_after", "quiet", "data_dir", "download", "workers")


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
    image_size: Optional[int] = None  # synthetic (default 32) and folder (default 224)
    weak: Optional[str] = None        # crop-flip; folder: resized-crop by default
    workers: Optional[int] = None     # folder: DataLoader workers that decode (default min(8, CPUs))
    weights: Optional[str] = None     # a local state dict to start the model from
    group_batches: Optional[int] = None  # an example's rows in a window of N batches (folder: 16)
    selection_pass: str = "clean"     # or "train": logits from the training steps of the epoch before
    label_noise: float = 0.0
    imbalance: Optional[float] = None
    model: Optional[str] = None
    method: str = "coreset"
    fraction: float = 0.1
    select_every: int = 5
    copies: int = 4
    policy: str = "randaugment"
    num_ops: Optional[int] = None     # randaugment: 2
    magnitude: Optional[int] = None   # randaugment: 9
    aug_mode: str = "append"
    augment_impl: str = "fused"
    subset_only: bool = False
    subset_weights: str = "uniform"
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
    overwrite: bool = False
    stop_after: Optional[int] = None
    quiet: bool = False

    def resolved(self) -> "TrainConfig":
        """A copy with per-dataset defaults filled in, after checking every value (in this
        order: the first bad value is the one reported)."""
        c = dataclasses.replace(self)
        for step in (_check_method, _fill_data_defaults, _check_policy, _check_numbers):
            step(c)
        return c

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def training_keys(self) -> dict:
        """The settings that determine the computation (all but :data:`RUN_ONLY_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in RUN_ONLY_KEYS}


def _check_method(c: "TrainConfig") -> None:
    """The method and every named setting; the fraction each method implies."""
    _choice("dataset", c.dataset, DATASETS)
    _choice("method", c.method, METHODS)
    c.model = c.model or DEFAULT_MODEL[c.dataset]
    for flag, value, names in (("model", c.model, MODELS), ("aug-mode", c.aug_mode, AUG_MODES),
                               ("augment-impl", c.augment_impl, AUGMENT_IMPLS), ("embedding", c.embedding, EMBEDDINGS),
                               ("subset-weights", c.subset_weights, SUBSET_WEIGHTS), ("lr-decay", c.lr_decay, LR_DECAYS),
                               ("loss-normalize", c.loss_normalize, LOSS_NORMALIZATIONS),
                               ("selection-pass", c.selection_pass, SELECTION_PASSES)):
        _choice(flag, value, names)
    if c.method in SUBSET_METHODS and not (0.0 < c.fraction <= 1.0):
        raise UsageError(f"--fraction must be in (0, 1], got {c.fraction}")
    if c.method == "none":
        c.fraction = 0.0
    elif c.method == "full":
        c.fraction = 1.0
    if c.dataset == "folder" and c.augment_impl == "torchvision":
        raise UsageError("--augment-impl torchvision takes in-memory images; --dataset folder reads from disk "
                         "with the fused op (bench/bench_folder.py times torchvision's folder pipeline)")
    if c.subset_only and c.method not in SUBSET_METHODS:
        raise UsageError("--subset-only needs a subset method (random, max-loss, coreset), "
                         f"got --method {c.method}")


def _fill_data_defaults(c: "TrainConfig") -> None:
    """The per-dataset defaults (epochs, warm-up, imbalance, image size, weak augmentation,
    workers), checked."""
    c.epochs = c.epochs if c.epochs is not None else DEFAULT_EPOCHS.get(c.dataset, 200)
    c.warmup_epochs = c.warmup_epochs if c.warmup_epochs is not None else math.ceil(c.epochs / 40)
    c.imbalance = c.imbalance if c.imbalance is not None else (100.0 if c.dataset == "cifar10-lt" else 1.0)
    folder = c.dataset == "folder"
    c.image_size = c.image_size if c.image_size is not None else DEFAULT_IMAGE_SIZE.get(c.dataset, 32)
    c.weak = c.weak or ("resized-crop" if folder else "crop-flip")
    _choice("weak", c.weak, WEAK_MODES)
    if c.weak == "resized-crop" and not folder:
        raise UsageError(f"--weak resized-crop needs --dataset folder (images of any size); "
                         f"--dataset {c.dataset} uses crop-flip")
    c.workers = c.workers if c.workers is not None else (min(8, os.cpu_count() or 1) if folder else 0)
    if c.workers < 0:
        raise UsageError(f"--workers must be >= 0, got {c.workers}")
    if folder and c.imbalance > 1.0:
        raise UsageError("--imbalance applies to the in-memory datasets, not --dataset folder")


def _check_policy(c: "TrainConfig") -> None:
    """Positive counts, and the policy with the settings it takes."""
    _positive("epochs", c.epochs)
    _positive("select-every", c.select_every)
    _positive("batch-size", c.batch_size)
    _choice("policy", c.policy, POLICIES)
    if c.policy == "randaugment":
        c.num_ops = _int("num-ops", 2 if c.num_ops is None else c.num_ops, 1, MAX_OPS)
        c.magnitude = 9 if c.magnitude is None else c.magnitude
    else:
        for flag, value in (("num-ops", c.num_ops), ("magnitude", c.magnitude)):
            if value is not None:
                raise UsageError(f"--{flag} is a setting of --policy randaugment; --policy {c.policy} "
                                 "fixes its own ops and magnitudes")


def _check_numbers(c: "TrainConfig") -> None:
    """Every other number in its range, and the run's folder, device and seed."""
    c.image_size = _int("image-size", c.image_size, MIN_IMAGE_SIZE, 2**16)
    _device(c.device)
    if c.out is not None and not str(c.out).strip():
        raise UsageError(f"--out must name a folder, got {c.out!r}")
    if c.resume is not None and c.overwrite:
        raise UsageError("--resume and --overwrite exclude each other (continue the run there, or replace it)")
    c.seed = _int("seed", c.seed, 0, MAX_SEED)
    c.copies = _int("copies", c.copies, 0, MAX_COPIES)
    if c.group_batches is not None:
        c.group_batches = _int("group-batches", c.group_batches, 0, MAX_GROUP_BATCHES)
    if c.method == "full" and c.copies == 0:
        raise UsageError("--method full needs --copies >= 1")
    if c.train_size is not None:
        _positive("train-size", c.train_size)
    c.label_noise = _float("label-noise", c.label_noise, 0.0, 1.0, high_open=True)
    c.imbalance = _float("imbalance", c.imbalance, 1.0, None)
    if c.magnitude is not None and not 0 <= c.magnitude <= 30:
        raise UsageError(f"--magnitude must be in [0, 30], got {c.magnitude}")
    # Finite and bounded: an lr of nan or 1e308 (or inf weight decay) trains to chance,
    # or to NaN logits, without a word otherwise.
    c.lr = _float("lr", c.lr, 0.0, MAX_LR, low_open=True)
    c.weight_decay = _float("weight-decay", c.weight_decay, 0.0, 1.0, high_open=True)
    c.momentum = _float("momentum", c.momentum, 0.0, 1.0, high_open=True)
    if c.warmup_epochs < 0 or c.warmup_epochs > c.epochs:
        raise UsageError(f"--warmup-epochs must be in [0, epochs={c.epochs}], got {c.warmup_epochs}")
    if c.stop_after is not None:
        _positive("stop-after", c.stop_after)


def run_name(cfg: TrainConfig) -> str:
    """``<method>[-<fraction>][-subset-only][-w<subset-weights>][-torchvision]-s<seed>``; the
    weights only for ``coreset`` (random and max-loss picks weigh 1 under every setting)."""
    sub = cfg.method in SUBSET_METHODS
    return (cfg.method + (f"-{cfg.fraction:g}" if sub else "") + ("-subset-only" if cfg.subset_only else "")
            + (f"-w{cfg.subset_weights}" if cfg.method == "coreset" and cfg.subset_weights != "uniform" else "")
            + ("-torchvision" if getattr(cfg, "augment_impl", "fused") == "torchvision" else "") + f"-s{cfg.seed}")


def _choice(flag: str, value, choices) -> None:
    if value not in choices:
        raise UsageError(f"--{flag} must be one of {', '.join(choices)}; got {value!r}")


def _float(flag: str, value, low, high, *, low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (``checks.check_float`` semantics) in the given interval."""
    from ..checks import check_float

    try:
        v = check_float(f"--{flag}", value)
    except ValueError as e:
        raise UsageError(str(e)) from None
    below = low is not None and (v < low or (low_open and v == low))
    above = high is not None and (v > high or (high_open and v == high))
    if below or above:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise UsageError(f"--{flag} must be in {'(' if low_open else '['}{lo}, {hi}"
                         f"{')' if high_open or high is None else ']'}, got {value}")
    return v


def _int(flag: str, value, low: int, high: int) -> int:
    """An integer (``checks.check_int`` semantics) in [low, high]."""
    from ..checks import check_int

    try:
        return check_int(f"--{flag}", value, low=low, high=high)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _device(name) -> None:
    """``auto``, or a device of a type a run can train on (``cpu``, ``cuda``, ``cuda:N``):
    checked here by its form, before any folder is made; availability when the run starts."""
    import torch

    try:
        ok = name == "auto" or torch.device(name).type in DEVICE_TYPES
    except (RuntimeError, TypeError):
        ok = False
    if not ok:
        raise UsageError(f"--device must be auto, cpu or cuda[:N]; got {name!r}")


def _positive(flag: str, value: int) -> None:
    if value < 1:
        raise UsageError(f"--{flag} must be >= 1, got {value}")
