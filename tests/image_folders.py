"""Generated image folders in torchvision's ImageFolder layout (``root/<class>/<file>``), for
tests of datasets read from disk: smooth random colour images of varying sizes, one colour
tint per class (so a small model can learn them), as JPEG and PNG in several PIL modes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

#: PIL modes and formats cycled through the files: RGB JPEG, grey PNG, RGBA PNG, palette PNG.
KINDS = (("RGB", "jpg"), ("L", "png"), ("RGBA", "png"), ("P", "png"))


def image(rng: np.random.Generator, height: int, width: int, label: int):
    """A smooth random RGB PIL image of (height, width), tinted by its label (channel
    ``label % 3`` raised), so a small model tells classes apart through strong augmentation."""
    from PIL import Image

    base = Image.fromarray((rng.random((4, 4, 3)) * 160).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    tint = np.zeros(3, np.float32)
    tint[label % 3] = 80.0
    pixels = np.asarray(base).astype(np.float32) + tint + rng.normal(0.0, 8.0, (height, width, 3))
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def make_folder(root, per_class: int, classes: int = 3, *, sizes=(24, 90), kinds: Sequence = KINDS,
                seed: int = 0, quality: int = 90) -> Path:
    """Write ``classes`` x ``per_class`` images under ``root/class<c>/``: sides drawn from
    ``sizes`` (inclusive range), file kinds cycled from ``kinds``. Returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class{c}"
        os.makedirs(folder, exist_ok=True)
        for i in range(per_class):
            h, w = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
            mode, ext = kinds[i % len(kinds)]
            img = image(rng, h, w, c)
            img = img if mode == "RGB" else img.convert(mode)
            path = folder / f"{i:05d}.{ext}"
            if ext == "jpg":
                img.save(path, quality=quality)
            else:
                img.save(path)
    return root


def make_imagenet_layout(root, per_class: int, classes: int = 3, **kw) -> Path:
    """``root/train`` and ``root/val`` (a fifth of the size, at least 2 per class)."""
    root = Path(root)
    make_folder(root / "train", per_class, classes, **kw)
    make_folder(root / "val", max(2, per_class // 5), classes, **{**kw, "seed": kw.get("seed", 0) + 1})
    return root
