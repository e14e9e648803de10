"""``CoresetAugmentation`` over a dataset read from disk (``coreaug_fast.sources``): the rows of
an epoch, batches bit-exact with torchvision's functional ops for the same crops and policy
parameters, the same batches for any number of workers, each image decoded once per batch,
exact resumption, labels from ``targets`` / ``labels=`` / a labelled pass, the streamed
selection pass (same subset as on the tensor of the same views), evaluation batches, clear
errors for unreadable files, memory that does not grow with N, and DDP shares."""
import math
import os
import resource
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import coreaug_fast
import coreaug_fast.coreset_augmentation as ca
from coreaug_fast import CoresetAugmentation, loading, sources
from coreaug_fast._rows import EpochRows, epoch_rows, shard, shuffle
from coreaug_fast.reference.augment import apply_augment_reference
from image_folders import make_folder

torchvision = pytest.importorskip("torchvision")
F = pytest.importorskip("torchvision.transforms.v2.functional")

pytestmark = pytest.mark.usefixtures("one_thread")

S = 16          # image_size of the rows
PER_CLASS = 6   # 3 classes x 6 = 18 images of 24..90 pixels a side
MEAN, STD = [0.5, 0.4, 0.3], [0.25, 0.2, 0.3]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("train"), per_class=PER_CLASS)


@pytest.fixture
def folder(root):
    return torchvision.datasets.ImageFolder(str(root))


class Net(nn.Module):
    def __init__(self, classes=3, hidden=8):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                                  nn.Flatten())
        self.fc = nn.Linear(4 * hidden, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make(dataset, labels=None, **kw):
    base = dict(image_size=S, weak="resized-crop", fraction=0.3, select_every=2, copies=2, mean=MEAN, std=STD,
                seed=0)
    return CoresetAugmentation(dataset, labels, **{**base, **kw})


def collect(batches):
    xs, ys, ws = zip(*batches)
    return torch.cat(xs), torch.cat(ys), torch.cat(ws)


# ------------------------------------------------------------------ rows

@pytest.mark.parametrize("method,copies", [("random", 2), ("coreset", 3), ("full", 2), ("none", 0)])
def test_an_epoch_has_n_plus_r_k_rows_with_the_labels_of_the_items(folder, method, copies):
    aug = make(folder, method=method, copies=copies, features=None)
    x, y, w = collect(aug.epoch(Net(), batch_size=5))
    n = len(folder)
    k = {"none": 0, "full": n}.get(method, 3 * math.ceil(0.3 * PER_CLASS))
    assert x.shape == (n + copies * k, 3, S, S) and x.dtype == torch.float32
    assert aug.stats["rows"] == n + copies * k
    assert sorted(y.tolist()) == sorted(folder.targets + [folder.targets[j] for j in
                                                          (aug.subset[0].tolist() if k and method != "full"
                                                           else range(n) if k else [])] * copies)


def test_grouped_shuffle_keeps_an_examples_rows_together_and_shards_in_blocks():
    rows = epoch_rows(10, "random", subset=torch.tensor([2, 7]), subset_weights=torch.ones(2), copies=3)
    order = shuffle(rows, torch.Generator().manual_seed(0), 10)
    idx = order.index.tolist()
    for j in (2, 7):  # the original and its 3 copies are 4 consecutive rows
        at = [p for p, i in enumerate(idx) if i == j]
        assert at == list(range(at[0], at[0] + 4))
    assert sorted(idx) == sorted(rows.index.tolist())
    a, b = (shard(order, r, 2, blocks=True) for r in range(2))
    assert a.index.tolist() + b.index.tolist() == idx  # 16 rows: two halves, nothing padded
    # ungrouped: the uniform permutation the tensor path has always used
    same = shuffle(rows, torch.Generator().manual_seed(0))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(same.index, rows.index[perm])


# ------------------------------------------------------------------ bit-exact with torchvision

@pytest.fixture
def recorded(monkeypatch):
    """What an epoch drew: the workers' seed and rows, and each batch's weak-row count and
    parameters (Augmenter.batch, which augments a batch in one launch), in call order."""
    rec = {"train": [], "batch": []}
    real_train = sources.DatasetSource.train_batches

    def train_batches(self, index, starts, device, **kw):
        rec["train"].append((index.clone(), list(starts), kw["seed"]))
        return real_train(self, index, starts, device, **kw)
    monkeypatch.setattr(sources.DatasetSource, "train_batches", train_batches)
    real_batch = coreaug_fast.Augmenter.batch

    def batch(self, images, weak, *a, **kw):
        out = real_batch(self, images, weak, *a, **kw)
        rec["batch"].append((weak, self.last_params))
        return out
    monkeypatch.setattr(coreaug_fast.Augmenter, "batch", batch)
    return rec


def normalize(u8):
    return F.normalize(F.to_dtype(u8, torch.float32, scale=True), MEAN, STD)


@pytest.mark.parametrize("weak", ["resized-crop", "crop-flip"])
def test_a_batch_equals_torchvisions_functional_ops_for_the_same_parameters(folder, recorded, weak):
    """Every row rebuilt from the item with torchvision alone: PIL convert("RGB") ->
    resized_crop (or resize + center_crop, then pad + crop) -> flip -> the policy's ops ->
    ToDtype + Normalize. Bit-exact on the CPU."""
    kw = dict(padding=2) if weak == "crop-flip" else {}
    aug = make(folder, weak=weak, method="random", copies=2, **kw)
    epoch = aug.epoch(Net(), batch_size=7)
    batches = list(epoch)
    ((index, starts, seed),) = recorded["train"]
    assert torch.equal(index, epoch.rows.index)
    batches_drawn = iter(recorded["batch"])
    for b, (x, _, _) in enumerate(batches):
        lo, hi = starts[b], starts[b + 1]
        views = []
        for r in range(lo, hi):
            img = F.pil_to_tensor(folder[int(index[r])][0])  # ImageFolder's loader: convert("RGB")
            if weak == "resized-crop":
                t, l, h, w = loading.resized_crop_params(loading.row_rng(seed, r), *img.shape[-2:])
                views.append(F.resized_crop(img, t, l, h, w, [S, S], antialias=True))
            else:
                views.append(F.center_crop(F.resize(img, [S], antialias=True), [S, S]))
        views = torch.stack(views)
        n_weak, p = next(batches_drawn)
        assert n_weak == int((~epoch.rows.strong[lo:hi]).sum())
        want = []
        for r in range(n_weak):  # weak: the crop and flip alone (Identity ops)
            v = F.crop(F.pad(views[r], [aug.padding], fill=0), int(p.offsets[r, 0]), int(p.offsets[r, 1]), S, S)
            want.append(F.horizontal_flip(v) if bool(p.flips[r]) else v)
        assert not p.ops[:n_weak].any()
        strong = slice(n_weak, None)
        want.extend(apply_augment_reference(views[strong], p.ops[strong], p.magnitudes[strong],
                                            offsets=p.offsets[strong], flips=p.flips[strong], padding=aug.padding))
        assert torch.equal(x, normalize(torch.stack(want))), b
    assert next(batches_drawn, None) is None
    flips = torch.cat([p.flips[:w] for w, p in recorded["batch"]])
    assert flips.any() and not flips.all(), "no weak flip drawn (or all): the test would not see them"


@pytest.mark.parametrize("policy", ["autoaugment-imagenet", "trivialaugment"])
def test_the_strong_policy_of_the_copies_is_the_named_one(folder, recorded, policy):
    """The copies are drawn by the named policy (the paper's AutoAugment for ImageNet-like
    data); the weak rows are unchanged by it."""
    aug = make(folder, method="full", copies=2, policy=policy)
    collect(aug.epoch(Net(), batch_size=64))
    assert aug.policy == policy and aug.num_ops is None and aug._augmenter.policy == policy
    ops = torch.cat([p.ops[w:] for w, p in recorded["batch"]])
    assert ops.shape[0] == 2 * len(folder)
    if policy == "autoaugment-imagenet":  # two steps a row, some skipped (Identity)
        assert ops.shape[1] == 2 and (ops == 0).any() and (ops != 0).any()
    else:
        assert ops.shape[1] == 1
