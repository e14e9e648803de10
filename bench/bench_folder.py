"""One epoch of training batches from a folder of JPEGs (ImageNet-like, 500 x 375, decoded at
224), per pipeline, side by side in one run (issue: datasets of any size):

* ``decode-floor``: every image decoded once by the same DataLoader workers, nothing else
  (torchvision's ImageFolder loader: PIL open + convert("RGB")). No pipeline can beat it.
* ``torchvision-*``: the pipeline users run today: ImageFolder + RandomResizedCrop(224) +
  RandomHorizontalFlip (+ AutoAugment(IMAGENET) for a strong copy) + ToTensor + Normalize per
  image in DataLoader workers, copies as separate dataset rows (each decoded again).
* ``coreaug-*``: :class:`~coreaug_fast.CoresetAugmentation` over the same ImageFolder:
  workers decode each image once and cut its crops; flip, AutoAugment and normalisation run
  fused on the device (here the CPU unless a GPU is present).

Settings: ``full`` is every image plus r = 4 strong copies; ``coreset-10`` every image plus
4 copies of a 10% subset (drawn as ``random``: the same rows as a coreset, without the
selection pass, which ``bench_selection.py`` times). Batches of 128 float32 rows on the
device; 2 workers (``COREAUG_BENCH_WORKERS``); ``COREAUG_BENCH_FOLDER_IMAGES`` images (2,000).

``extra_info``: ``ms_per_image`` (epoch seconds / images, the figure to compare), ``rows``.
``test_peak_memory`` runs one coreset epoch in a subprocess over 2,000 and 20,000 images
(``COREAUG_BENCH_FOLDER_LARGE``) and records the peak RSS of the main process and of the
largest worker: it must not grow with N beyond the labels.
"""
import json
import os
import resource
import subprocess
import sys
import textwrap

import pytest
import torch

from image_data import jpeg_folder

torchvision = pytest.importorskip("torchvision")

IMAGES = int(os.environ.get("COREAUG_BENCH_FOLDER_IMAGES", "2000"))
LARGE = int(os.environ.get("COREAUG_BENCH_FOLDER_LARGE", "20000"))
WORKERS = int(os.environ.get("COREAUG_BENCH_WORKERS", "2"))
SIZE, COPIES, FRACTION, BATCH = 224, 4, 0.1, 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
SETTINGS = {"full": 1.0, "coreset-10": FRACTION}


@pytest.fixture(scope="module")
def folder():
    return torchvision.datasets.ImageFolder(str(jpeg_folder(IMAGES)))


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _record(benchmark, rows, **extra):
    benchmark.extra_info.update(images=IMAGES, rows=rows, workers=WORKERS, batch=BATCH, size=SIZE,
                                device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", **extra)
    if benchmark.stats:
        benchmark.extra_info["ms_per_image"] = 1e3 * benchmark.stats.stats.median / IMAGES


def _subset(n, fraction):
    if fraction >= 1.0:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(round(fraction * n))]


def test_decode_floor(benchmark, folder):
    def epoch():
        loader = torch.utils.data.DataLoader(folder, batch_size=BATCH, num_workers=WORKERS,
                                             collate_fn=lambda items: len(items))
        return sum(loader)
    benchmark.pedantic(epoch, rounds=2, iterations=1)
    _record(benchmark, IMAGES, pipeline="decode-floor")


class _Rows(torch.utils.data.Dataset):
    """The torchvision pipeline's dataset: every image once (weak), then the copies as rows
    of their own (strong), each row decoded from its file."""

    def __init__(self, folder, copies_of):
        from torchvision import transforms as T

        self.folder = folder
        self.plan = [(i, False) for i in range(len(folder))] + [(int(i), True) for i in copies_of] * COPIES
        tail = [T.ToTensor(), T.Normalize(MEAN, STD)]
        geometry = [T.RandomResizedCrop(SIZE), T.RandomHorizontalFlip()]
        self.weak = T.Compose(geometry + tail)
        self.strong = T.Compose(geometry + [T.AutoAugment(T.AutoAugmentPolicy.IMAGENET)] + tail)

    def __len__(self):
        return len(self.plan)

    def __getitem__(self, k):
        i, strong = self.plan[k]
        image, label = self.folder[i]
        return (self.strong if strong else self.weak)(image), label


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_torchvision(benchmark, folder, setting):
    rows = _Rows(folder, _subset(len(folder), SETTINGS[setting]))

    def epoch():
        loader = torch.utils.data.DataLoader(rows, batch_size=BATCH, shuffle=True, num_workers=WORKERS,
                                             pin_memory=DEVICE.type == "cuda",
                                             generator=torch.Generator().manual_seed(0))
        for x, y in loader:
            x.to(DEVICE, non_blocking=True)
        _sync()
    benchmark.pedantic(epoch, rounds=1, iterations=1)
    _record(benchmark, len(rows), pipeline=f"torchvision-{setting}", policy="AutoAugment(IMAGENET)")


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_coreaug(benchmark, folder, setting):
    import coreaug_fast

    full = setting == "full"
    aug = coreaug_fast.CoresetAugmentation(
        folder, image_size=SIZE, weak="resized-crop", method="full" if full else "random", fraction=FRACTION,
        copies=COPIES, policy="autoaugment-imagenet", mean=MEAN, std=STD, num_workers=WORKERS, seed=0,
        progress=False)
    anchor = torch.nn.Linear(1, 1).to(DEVICE)  # batches go to the model's device
    seen = {}

    def epoch():
        rows = 0
        for x, y, w in aug.epoch(anchor, batch_size=BATCH):
            rows += y.shape[0]
        _sync()
        seen.update(rows=rows, load_s=aug.stats.get("load_s"))
    benchmark.pedantic(epoch, rounds=2, iterations=1)
    _record(benchmark, seen["rows"], pipeline=f"coreaug-{setting}", policy="autoaugment-imagenet")


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch, torchvision, coreaug_fast
    folder = torchvision.datasets.ImageFolder(sys.argv[1])
    aug = coreaug_fast.CoresetAugmentation(folder, image_size=224, weak="resized-crop", method="random",
                                           fraction=0.1, copies=4, policy="autoaugment-imagenet",
                                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                                           num_workers=int(sys.argv[2]), progress=False)
    anchor = torch.nn.Linear(1, 1)
    for x, y, w in aug.epoch(anchor, batch_size=128):
        pass
    mb = lambda who: resource.getrusage(who).ru_maxrss / 1024
    print(json.dumps({"main_mb": mb(resource.RUSAGE_SELF), "largest_worker_mb": mb(resource.RUSAGE_CHILDREN)}))
""")


@pytest.mark.parametrize("images", [IMAGES, LARGE])
def test_peak_memory(benchmark, images, tmp_path):
    """Peak RSS of one coreset-10 epoch (CPU) over ``images`` images, main and largest worker."""
    root = jpeg_folder(images)
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    out = {}

    def run():
        p = subprocess.run([sys.executable, str(script), str(root), str(WORKERS)], capture_output=True, text=True,
                           check=True)
        out.update(json.loads(p.stdout.strip().splitlines()[-1]))
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(images=images, workers=WORKERS, **out)
