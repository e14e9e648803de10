"""Generated JPEG folders of ImageNet-like images for the data-pipeline benchmarks (no
download): 500 x 375 photos-alike (smooth colour fields plus grain, about 80 KB at quality
90, decoding in about as long as an ImageNet JPEG of that size), in ImageFolder layout,
written once under ``build/bench-data/`` and reused."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1] / "build" / "bench-data"
WIDTH, HEIGHT = 500, 375
CLASSES = 10


def jpeg_folder(images: int, *, classes: int = CLASSES, quality: int = 90) -> Path:
    """``build/bench-data/jpeg-<images>/<class>/<i>.jpg`` (made if missing); returns its path."""
    from PIL import Image

    root = ROOT / f"jpeg-{images}"
    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(0)
    for i in range(images):
        c = i % classes
        folder = root / f"class{c:03d}"
        os.makedirs(folder, exist_ok=True)
        base = Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).resize((WIDTH, HEIGHT),
                                                                                         Image.BICUBIC)
        pixels = np.asarray(base).astype(np.float32) + rng.normal(0.0, 12.0, (HEIGHT, WIDTH, 3))
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=quality)
    done.write_text("")
    return root
