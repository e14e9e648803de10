"""``CoresetAugmentation`` over a dataset read from disk (``coreaug_fast.sources``): the rows of
an epoch, batches bit-exact with torchvision's functional ops for the same crops and policy
parameters, the same batches for any number of workers, each image decoded once per batch,
exact resumption, labels from ``targets`` / ``labels=`` / a labelled pass, the streamed
selection pass (same subset as on the tensor of the same views), evaluation batches, clear
errors for unreadable files, memory that does not grow with N, and DDP shares."""
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn as nn

import coreaug_fast
from coreaug_fast import CoresetAugmentation, loading, sources
from coreaug_fast.rows import epoch_rows, shard, shuffle
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


# ------------------------------------------------------------------ workers, decoding, resuming

def test_same_batches_for_zero_and_two_workers(folder):
    model = Net()
    runs = []
    for workers in (0, 2):
        aug = make(folder, method="coreset", features=model.fc, num_workers=workers, select_every=1)
        runs.append([collect(aug.epoch(model, batch_size=5)) for _ in range(2)])
    for (xa, ya, wa), (xb, yb, wb) in zip(*runs):
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)


class Counting(torch.utils.data.Dataset):
    """A dataset wrapper that counts reads (in this process: use num_workers=0)."""

    def __init__(self, inner):
        self.inner, self.reads = inner, []
        self.targets, self.classes = inner.targets, inner.classes

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        self.reads.append(i)
        return self.inner[i]


@pytest.mark.parametrize("batch_size,k", [(4, 1), (7, 1), (4, 4), (3, 2), (64, 4)])
def test_each_image_is_decoded_once_per_epoch_but_at_window_boundaries(folder, batch_size, k):
    """full, r = 3: 4 rows per example, read once each, except an example whose rows straddle
    two windows of k batches (read once per window)."""
    ds = Counting(folder)
    aug = make(ds, method="full", copies=3, group_batches=k)
    ds.reads.clear()  # the constructor reads item 0, to check the dataset's kind early
    epoch = aug.epoch(Net(), batch_size=batch_size)
    collect(epoch)
    n = len(folder)
    index = epoch.rows.index
    step = batch_size * k
    per_window = [set(index[lo:lo + step].tolist()) for lo in range(0, index.numel(), step)]
    assert len(ds.reads) == sum(len(w) for w in per_window) <= n + len(per_window) - 1
    assert sorted(set(ds.reads)) == list(range(n))


def test_a_dataset_groups_in_windows_of_sixteen_batches_by_default(folder):
    assert make(folder).group_batches == 16


@pytest.mark.parametrize("window", [2, 3, 8])
def test_windows_split_into_tasks_give_the_batches_one_task_per_batch_gives(folder, window):
    """DatasetSource.train_batches: the same rows and starts read one batch per task, or a
    window at a time split by example into tasks, give the same batches (a row's crop depends
    on its position only), with 0 and 2 workers."""
    index = torch.randint(0, len(folder), (23,), generator=torch.Generator().manual_seed(1))
    starts = [0, 5, 10, 15, 20, 23]
    want = None
    for workers in (0, 2):
        src = sources.DatasetSource(folder, image_size=S, weak="resized-crop", num_workers=workers)
        for w in (1, window):
            got = [x if rows is None else x[rows]  # a batch: its rows, or a window and the rows' index in it
                   for x, rows in src.train_batches(index, starts, torch.device("cpu"), seed=7, window=w)]
            assert [g.shape[0] for g in got] == [5, 5, 5, 5, 3]
            want = want or got
            assert all(torch.equal(a, b) for a, b in zip(got, want)), (workers, w)


def test_state_dict_resumes_a_dataset_run_bit_for_bit(folder, tmp_path):
    model = Net()
    a = make(folder, method="coreset", features=model.fc, select_every=2)
    for _ in range(3):
        collect(a.epoch(model, batch_size=5))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = make(folder, method="coreset", features=model.fc, select_every=2)
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(2):  # a non-selection epoch, then a selection epoch
        xa, ya, wa = collect(a.epoch(model, batch_size=5))
        xb, yb, wb = collect(b.epoch(model, batch_size=5))
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)


# ------------------------------------------------------------------ labels

class NoTargets(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner = inner

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, i):
        return self.inner[i]


def test_labels_come_from_targets_then_labels_then_a_labelled_pass(folder):
    want = torch.tensor(folder.targets)
    assert torch.equal(make(folder).labels, want)
    assert torch.equal(make(NoTargets(folder), progress=False).labels, want)  # one pass over the items
    assert torch.equal(make(NoTargets(folder), progress=False, num_workers=2).labels, want)
    calls, view = [], loading.center_view  # the pass reads items for their labels alone: nothing resized
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(loading, "center_view", lambda *a: calls.append(1) or view(*a))
        assert torch.equal(make(NoTargets(folder), progress=False).labels, want)
    assert calls == []
    given = (want + 1) % 3
    assert torch.equal(make(NoTargets(folder), given).labels, given)
    sub = torch.utils.data.Subset(folder, [5, 0, 17])
    assert torch.equal(make(sub).labels, want[[5, 0, 17]])


@pytest.mark.parametrize("bad", [dict(group_batches=-1), dict(mean=(0.5, 0.5), std=(0.5, 0.5)),
                                 dict(policy="trivialaugment", num_ops=2)])
def test_bad_arguments_are_refused_before_the_labelled_pass(folder, bad):
    """A dataset without targets is read whole for its labels: a plain argument error must not
    wait for that pass (the first item is read to check the dataset's kind)."""
    ds = Counting(folder)
    with pytest.raises(ValueError, match=next(iter(bad))):
        make(NoTargets(ds), progress=False, **bad)
    assert len(ds.reads) <= 1


def test_a_label_outside_the_datasets_classes_is_named(folder):
    bad = torch.tensor(folder.targets)
    bad[4] = 3
    with pytest.raises(ValueError, match=r"labels: item 4 \(.*00004\.jpg\) has label 3, outside 0\.\.2 "
                                         r"\(the dataset has 3 classes\)"):
        make(folder, bad)


# ------------------------------------------------------------------ selection pass and evaluation

def views_tensor(dataset, size, resize):
    return torch.stack([F.center_crop(F.resize(F.pil_to_tensor(dataset[i][0]), [resize], antialias=True),
                                      [size, size]) for i in range(len(dataset))])


@pytest.mark.parametrize("method", ["coreset", "max-loss"])
def test_the_streamed_selection_pass_selects_what_the_tensor_of_its_views_selects(folder, method):
    """The pass over the dataset (centre views, eval mode, features hook, batch by batch)
    gives the selection that the in-memory tensor of the same views gives."""
    model = Net()
    a = make(folder, method=method, features=model.fc, num_workers=2)
    a.epoch(model, batch_size=4)
    b = CoresetAugmentation(views_tensor(folder, S, 18), torch.tensor(folder.targets), fraction=0.3, copies=2,
                            mean=MEAN, std=STD, method=method, features=model.fc, seed=0)
    b.epoch(model, batch_size=4)
    assert torch.equal(a.subset[0], b.subset[0]) and torch.equal(a.subset[1], b.subset[1])
    # the pass runs in batches of 4 here, of 18 there: logits may differ in the last bit
    torch.testing.assert_close(a.selection.gains, b.selection.gains, rtol=1e-5, atol=0)


def test_eval_batches_of_a_validation_folder(folder):
    aug = make(folder)
    xs, ys = zip(*aug.eval_batches(folder, batch_size=7))
    assert [len(y) for y in ys] == [7, 7, 4]
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    want = (views_tensor(folder, S, 18).float() / 255 - mean) / std  # transform_eval's formula
    assert torch.equal(torch.cat(xs), want) and torch.equal(torch.cat(ys), torch.tensor(folder.targets))
    # a pair of tensors, and a tensor-built object evaluating a dataset at its own size
    images = views_tensor(folder, S, S)
    t = CoresetAugmentation(images, torch.tensor(folder.targets), mean=MEAN, std=STD)
    (x, y), = t.eval_batches((images, torch.tensor(folder.targets)), batch_size=64)
    assert torch.equal(x, t.transform_eval(images))
    (x2, y2), = t.eval_batches(folder, batch_size=64)
    assert torch.equal(x2, x) and torch.equal(y2, y)


# ------------------------------------------------------------------ bad files

@pytest.fixture
def broken(root, tmp_path):
    """A copy of the folder with one JPEG truncated to a third of its bytes."""
    import shutil

    copy = tmp_path / "broken"
    shutil.copytree(root, copy)
    victim = sorted((copy / "class1").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    return torchvision.datasets.ImageFolder(str(copy)), victim


@pytest.mark.parametrize("workers", [0, 2])
def test_a_truncated_file_stops_the_epoch_with_its_path_and_index(broken, workers):
    ds, victim = broken
    index = [p for p, _ in ds.samples].index(str(victim))
    aug = make(ds, method="full", num_workers=workers)
    with pytest.raises(ValueError) as e:
        collect(aug.epoch(Net(), batch_size=5))
    assert str(e.value).startswith(f"dataset item {index} ({victim}): cannot be read (OSError: ")
    assert "Traceback" not in str(e.value)


def test_the_users_folder_is_not_written(root):
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    aug = make(torchvision.datasets.ImageFolder(str(root)), method="coreset", num_workers=2)
    collect(aug.epoch(Net(), batch_size=5))
    list(aug.eval_batches(torchvision.datasets.ImageFolder(str(root))))
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


# ------------------------------------------------------------------ memory

MEMORY_SCRIPT = textwrap.dedent("""
    import resource, sys, torch, numpy as np
    import coreaug_fast
    import torchvision.transforms.v2.functional  # imported before the first reading, not during it

    class Big(torch.utils.data.Dataset):
        # N images of 500 x 500 (0.75 MB each), made on the fly: holding them all takes 0.75 N MB
        def __init__(self, n):
            self.n, self.targets = n, [i % 4 for i in range(n)]
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            return torch.full((3, 500, 500), i % 251, dtype=torch.uint8), i % 4

    n = int(sys.argv[1])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 4))
    aug = coreaug_fast.CoresetAugmentation(Big(n), image_size=16, weak="resized-crop", fraction=0.1, copies=2,
                                           method="coreset", num_workers=0, progress=False)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for x, y, w in aug.epoch(model, batch_size=64):
        pass
    print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) // 1024)
""")


def test_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """An epoch (selection pass included) over 1,000 images of 0.75 MB each (750 MB if held):
    the peak grows by far less than that, and by the same for 200 images."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    grown = [int(subprocess.run([sys.executable, str(script), str(n)], capture_output=True, text=True,
                                check=True).stdout.split()[-1]) for n in (200, 1000)]
    assert grown[1] < 150, grown            # MB, against 750 MB of images
    assert grown[1] - grown[0] < 40, grown  # and about the same for 5x the images


# ------------------------------------------------------------------ data-parallel

def _ddp_worker(rank, init, out, root):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        ds = Counting(torchvision.datasets.ImageFolder(root))
        model = Net()
        aug = make(ds, method="coreset", features=model.fc, group=dist.group.WORLD)
        ds.reads.clear()
        epoch = aug.epoch(model, batch_size=4)
        selection_reads = list(ds.reads)
        ds.reads.clear()
        x, y, w = collect(epoch)
        torch.save({"subset": aug.subset, "selection_reads": selection_reads, "train_reads": list(ds.reads),
                    "rows": epoch.rows, "y": y, "w": w}, os.path.join(out, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ranks_read_their_share_and_select_what_one_process_selects(root, tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(f"file://{tmp_path}/init", str(tmp_path), str(root)), nprocs=2,
                       join=True, start_method="spawn")
    got = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    model = Net()
    single = make(torchvision.datasets.ImageFolder(str(root)), method="coreset", features=model.fc)
    single_epoch = single.epoch(model, batch_size=4)
    for g in got:
        assert torch.equal(g["subset"][0], single.subset[0]) and torch.equal(g["subset"][1], single.subset[1])
    n = len(single.labels)
    # the selection pass: rank r reads items r, r + 2, ...
    assert [sorted(g["selection_reads"]) for g in got] == [list(range(r, n, 2)) for r in range(2)]
    # training: each rank one contiguous block of the shared epoch; together every row once
    # (plus weight-0 padding); an example is read by both ranks only at the block boundary
    rows = single_epoch.rows
    both = torch.cat([got[0]["rows"].index, got[1]["rows"].index])
    assert sorted(both[:rows.index.numel()].tolist()) == sorted(rows.index.tolist())
    reads = [set(g["train_reads"]) for g in got]
    assert reads[0] | reads[1] == set(range(n)) and len(reads[0] & reads[1]) <= 1
    assert sum(len(g["train_reads"]) for g in got) < n + 8  # about once per example


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


def test_a_tensor_source_gathers_a_pass_a_chunk_at_a_time():
    """The clean pass over most rows (the train pass's missing rows) must not copy them all at once."""
    images = torch.randint(0, 256, (50, 3, 8, 8), dtype=torch.uint8)
    rows = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:40]
    parts = list(sources.TensorSource(images).eval_batches(rows, 16, torch.device("cpu")))
    assert torch.equal(torch.cat(parts), images[rows])
    assert [p.untyped_storage().nbytes() for p in parts] == [16 * 192, 16 * 192, 8 * 192]
