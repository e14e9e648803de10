"""Generated JPEG folders of ImageNet-like images for the data-pipeline benchmarks (no
download): 500 x 375 photos-alike (smooth colour fields plus grain, about 80 KB at quality
90, decoding in about as long as an ImageNet JPEG of that size), in ImageFolder layout,
written once under ``build/bench-data/`` and reused. Each image is drawn from its own seed,
so a folder is the same whether written by one process or several."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1] / "build" / "bench-data"
WIDTH, HEIGHT = 500, 375
CLASSES = 10


def _write(args) -> None:
    from PIL import Image

    root, i, classes, quality = args
    rng = np.random.default_rng([0, i])
    base = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).resize((WIDTH, HEIGHT), Image.BICUBIC)
    pixels = np.asarray(base).astype(np.float32) + rng.normal(0.0, 12.0, (HEIGHT, WIDTH, 3))
    path = Path(root) / f"class{i % classes:03d}" / f"{i:06d}.jpg"
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(path, quality=quality)


def jpeg_folder(images: int, *, classes: int = CLASSES, quality: int = 90, processes: int = 1) -> Path:
    """``build/bench-data/jpeg-<images>/<class>/<i>.jpg`` (made if missing, by ``processes``
    processes); returns its path."""
    root = ROOT / f"jpeg-{images}"
    done = root / ".complete"
    if done.is_file():
        return root
    for c in range(classes):
        os.makedirs(root / f"class{c:03d}", exist_ok=True)
    jobs = [(str(root), i, classes, quality) for i in range(images)]
    if processes > 1:
        from multiprocessing import get_context

        with get_context("fork").Pool(processes) as pool:
            pool.map(_write, jobs, chunksize=64)
    else:
        for job in jobs:
            _write(job)
    done.write_text("")
    return root
