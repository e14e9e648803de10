"""The pipelines that ``bench_folder.py`` and ``gpu_check.py`` time on a folder of JPEGs: one
epoch of float32 training batches on a device, from the same ImageFolder, each a callable.

* decode floor: every image decoded once by the same DataLoader workers, nothing else
  (torchvision's ImageFolder loader: PIL open + convert("RGB")).
* torchvision: the per-image pipeline users run today: RandomResizedCrop + flip (+
  AutoAugment(IMAGENET) on a strong copy) + ToTensor + Normalize in DataLoader workers,
  copies as dataset rows of their own (each decoded again).
* coreaug: ``CoresetAugmentation`` over the ImageFolder: workers decode each image once and
  cut its crops; flip, AutoAugment and normalisation fused on the device.

Settings: ``full`` (every image + r strong copies) and ``coreset-10`` (every image + r copies
of a 10% subset, drawn as ``random``: the rows of a coreset, without its selection pass).
"""
from __future__ import annotations

import torch

SIZE, COPIES, FRACTION, BATCH = 224, 4, 0.1, 128
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SETTINGS = {"full": 1.0, "coreset-10": FRACTION}


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def subset(n: int, fraction: float) -> torch.Tensor:
    if fraction >= 1.0:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[: int(round(fraction * n))]


def decode_floor(folder, workers: int):
    """One pass of decoding; returns the images read."""
    def epoch():
        loader = torch.utils.data.DataLoader(folder, batch_size=BATCH, num_workers=workers,
                                             collate_fn=lambda items: len(items))
        return sum(loader)
    return epoch


class TorchvisionRows(torch.utils.data.Dataset):
    """Every image once (weak), then the copies as rows of their own (strong), each row
    decoded from its file and transformed alone."""

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


def torchvision_epoch(folder, setting: str, workers: int, device):
    """One epoch of the torchvision pipeline; returns the rows it produced."""
    rows = TorchvisionRows(folder, subset(len(folder), SETTINGS[setting]))

    def epoch():
        loader = torch.utils.data.DataLoader(rows, batch_size=BATCH, shuffle=True, num_workers=workers,
                                             pin_memory=torch.device(device).type == "cuda",
                                             generator=torch.Generator().manual_seed(0))
        count = 0
        for x, y in loader:
            x.to(device, non_blocking=True)
            count += y.shape[0]
        _sync(device)
        return count
    return epoch


def coreaug_epoch(folder, setting: str, workers: int, device):
    """One epoch of ``CoresetAugmentation`` over the folder; returns the rows it produced."""
    import coreaug_fast

    full = setting == "full"
    aug = coreaug_fast.CoresetAugmentation(
        folder, image_size=SIZE, weak="resized-crop", method="full" if full else "random", fraction=FRACTION,
        copies=COPIES, policy="autoaugment-imagenet", mean=MEAN, std=STD, num_workers=workers, seed=0,
        progress=False)
    anchor = torch.nn.Linear(1, 1).to(device)  # batches go to the model's device

    def epoch():
        count = 0
        for x, y, w in aug.epoch(anchor, batch_size=BATCH):
            count += y.shape[0]
        _sync(device)
        return count
    return epoch
