"""One epoch of training batches from a folder of JPEGs (ImageNet-like, 500 x 375, decoded at
224), per pipeline, side by side in one run (``folder_pipelines.py`` defines them): the decode
floor, the torchvision per-image pipeline users run today, and ``CoresetAugmentation``, for
``full`` (r = 4 copies of every image) and ``coreset-10`` (4 copies of 10%), AutoAugment
(ImageNet) as the strong policy. Batches of 128 float32 rows on the device (here the CPU
unless a GPU is present); 2 workers (``COREAUG_BENCH_WORKERS``);
``COREAUG_BENCH_FOLDER_IMAGES`` images (2,000).

``extra_info``: ``ms_per_image`` (epoch seconds / images, the figure to compare), ``rows``.
``test_peak_memory`` runs one coreset-10 epoch in a subprocess over 2,000 and 20,000 images
(``COREAUG_BENCH_FOLDER_LARGE``) and records the peak RSS of the main process and of the
largest worker: it must not grow with N beyond the labels.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import folder_pipelines as fp
from image_data import jpeg_folder

torchvision = pytest.importorskip("torchvision")

IMAGES = int(os.environ.get("COREAUG_BENCH_FOLDER_IMAGES", "2000"))
LARGE = int(os.environ.get("COREAUG_BENCH_FOLDER_LARGE", "20000"))
WORKERS = int(os.environ.get("COREAUG_BENCH_WORKERS", "2"))
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.fixture(scope="module")
def folder():
    return torchvision.datasets.ImageFolder(str(jpeg_folder(IMAGES, processes=os.cpu_count() or 1)))


def _time(benchmark, epoch, rounds, **extra):
    rows = {}
    benchmark.pedantic(lambda: rows.update(n=epoch()), rounds=rounds, iterations=1)
    benchmark.extra_info.update(images=IMAGES, rows=rows["n"], workers=WORKERS, batch=fp.BATCH, size=fp.SIZE,
                                device=torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu", **extra)
    if benchmark.stats:
        benchmark.extra_info["ms_per_image"] = 1e3 * benchmark.stats.stats.median / IMAGES


def test_decode_floor(benchmark, folder):
    _time(benchmark, fp.decode_floor(folder, WORKERS), rounds=2, pipeline="decode-floor")


@pytest.mark.parametrize("setting", list(fp.SETTINGS))
def test_torchvision(benchmark, folder, setting):
    _time(benchmark, fp.torchvision_epoch(folder, setting, WORKERS, DEVICE), rounds=1,
          pipeline=f"torchvision-{setting}", policy="AutoAugment(IMAGENET)")


@pytest.mark.parametrize("setting", list(fp.SETTINGS))
def test_coreaug(benchmark, folder, setting):
    _time(benchmark, fp.coreaug_epoch(folder, setting, WORKERS, DEVICE), rounds=2, pipeline=f"coreaug-{setting}",
          policy="autoaugment-imagenet")


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, torch, torchvision
    sys.path.insert(0, sys.argv[3])
    import folder_pipelines as fp
    folder = torchvision.datasets.ImageFolder(sys.argv[1])
    fp.coreaug_epoch(folder, "coreset-10", int(sys.argv[2]), torch.device("cpu"))()
    mb = lambda who: resource.getrusage(who).ru_maxrss / 1024
    print(json.dumps({"main_mb": mb(resource.RUSAGE_SELF), "largest_worker_mb": mb(resource.RUSAGE_CHILDREN)}))
""")


@pytest.mark.parametrize("images", [IMAGES, LARGE])
def test_peak_memory(benchmark, images, tmp_path):
    """Peak RSS of one coreset-10 epoch (CPU) over ``images`` images, main and largest worker."""
    root = jpeg_folder(images, processes=os.cpu_count() or 1)
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)
    out = {}

    def run():
        p = subprocess.run([sys.executable, str(script), str(root), str(WORKERS),
                            os.path.dirname(os.path.abspath(__file__))], capture_output=True, text=True, check=True)
        out.update(json.loads(p.stdout.strip().splitlines()[-1]))
    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(images=images, workers=WORKERS, **out)
