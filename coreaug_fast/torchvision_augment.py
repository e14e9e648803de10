"""The augmentation pipeline most users run today, as a baseline for the fused op: torchvision
v2 transforms applied to one image at a time in a ``torch.utils.data.DataLoader`` with worker
processes (as the paper's released code does).

Weak rows get ``RandomCrop(padding, fill 0) -> RandomHorizontalFlip`` (flip only where the
dataset allows it); strong rows get the same followed by the policy's own torchvision
transform (:func:`policy_transform`: ``RandAugment(num_ops, magnitude)``,
``AutoAugment(AutoAugmentPolicy.IMAGENET / CIFAR10 / SVHN)`` or ``TrivialAugmentWide()``),
the order the fused :class:`~coreaug_fast.Augmenter` computes. Both end in
``ToDtype(float32, scale=True) -> Normalize(mean, std)``.

Every row is drawn from its own seed, derived from ``(seed, position of the row)``, so the
output does not depend on the number of workers or on how rows are split into batches.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch

from . import checks
from .policy_sampler import AutoAugmentSampler, RandAugmentSampler, TrivialAugmentSampler, make_sampler

_MASK64 = (1 << 64) - 1


def sample_seed(seed: int, position: int) -> int:
    """The seed of row ``position`` of a call with ``seed``: splitmix64 of the pair, in
    [0, 2**63), so neighbouring rows and neighbouring seeds get unrelated streams."""
    z = (seed * 0x9E3779B97F4A7C15 + position + 1) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1


def policy_transform(policy: str = "randaugment", *, num_ops: "int | None" = None, magnitude: "int | None" = None,
                     num_magnitude_bins: "int | None" = None, fill=None):
    """torchvision's own v2 transform of ``policy`` (a name of
    :data:`~coreaug_fast.policies.POLICIES`), with the arguments and defaults of
    :class:`~coreaug_fast.Augmenter` (checked the same way)."""
    from torchvision.transforms import v2

    sampler = make_sampler(policy, num_ops, magnitude, num_magnitude_bins)
    if isinstance(sampler, RandAugmentSampler):
        return v2.RandAugment(num_ops=sampler.ops_per_row, magnitude=sampler.magnitude,
                              num_magnitude_bins=sampler.num_magnitude_bins, fill=fill)
    if isinstance(sampler, TrivialAugmentSampler):
        return v2.TrivialAugmentWide(num_magnitude_bins=sampler.num_magnitude_bins, fill=fill)
    assert isinstance(sampler, AutoAugmentSampler)
    which = {"autoaugment-imagenet": v2.AutoAugmentPolicy.IMAGENET, "autoaugment-cifar10": v2.AutoAugmentPolicy.CIFAR10,
             "autoaugment-svhn": v2.AutoAugmentPolicy.SVHN}[sampler.policy]
    return v2.AutoAugment(which, fill=fill)


def build_transforms(*, size: Sequence[int], padding: int, flip: bool, mean: Sequence[float], std: Sequence[float],
                     policy: str = "randaugment", num_ops: "int | None" = None, magnitude: "int | None" = None,
                     num_magnitude_bins: "int | None" = None):
    """(weak, strong) torchvision v2 pipelines for one uint8 (C, H, W) tensor of spatial
    ``size`` (H, W), each returning float32 (C, H, W) normalised; the strong one applies
    :func:`policy_transform` after the crop and flip."""
    from torchvision.transforms import v2

    geometric = []
    if padding > 0:
        geometric.append(v2.RandomCrop(list(size), padding=padding, fill=0))
    if flip:
        geometric.append(v2.RandomHorizontalFlip(p=0.5))
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
    weak = v2.Compose(geometric + tail)
    strong = policy_transform(policy, num_ops=num_ops, magnitude=magnitude, num_magnitude_bins=num_magnitude_bins)
    strong = v2.Compose(geometric + [strong] + tail)
    return weak, strong


class _Rows(torch.utils.data.Dataset):
    """Row ``i`` of one call: image ``index[i]`` through the weak or strong pipeline, under
    the row's own seed (the global RNG of whichever process runs it is restored after)."""

    def __init__(self, images, index, strong, seed, weak_tf, strong_tf):
        self.images, self.index, self.strong = images, index, strong
        self.seed, self.weak_tf, self.strong_tf = seed, weak_tf, strong_tf

    def __len__(self):
        return self.index.numel()

    def __getitem__(self, i):
        tf = self.strong_tf if bool(self.strong[i]) else self.weak_tf
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, i))
            return tf(self.images[int(self.index[i])])


class TorchvisionAugment:
    """Per-image torchvision augmentation of rows of a uint8 image set, batched by a
    ``DataLoader`` with ``num_workers`` worker processes.

    Args:
        images_u8: uint8 (N, C, H, W) CPU tensor.
        policy: the strong rows' policy, a name of :data:`~coreaug_fast.policies.POLICIES`
            (torchvision's transform for it: :func:`policy_transform`).
        num_ops: RandAugment ops per strong row, 0..16 (default 2); ``"randaugment"`` only.
        magnitude: RandAugment magnitude bin, in [0, num_magnitude_bins) (default 9);
            ``"randaugment"`` only.
        num_magnitude_bins: >= 2 (default 31); ``"randaugment"`` and ``"trivialaugment"``.
        padding: RandomCrop padding (zero fill); 0 = no crop.
        flip: random horizontal flips (a bool or NumPy bool).
        mean, std: per-channel normalisation of x/255, one value per channel (std nonzero,
            as torchvision's ``Normalize`` requires).
        num_workers: DataLoader worker processes (0 = in this process).

    The arguments are those of :class:`~coreaug_fast.Augmenter`, checked the same way (an
    argument the policy lacks is an error).
    """

    def __init__(self, images_u8: torch.Tensor, *, padding: int, flip: bool, mean: Sequence[float],
                 std: Sequence[float], policy: str = "randaugment", num_ops: "int | None" = None,
                 magnitude: "int | None" = None, num_magnitude_bins: "int | None" = None,
                 num_workers: int = 2) -> None:
        checks.check_images("images_u8", images_u8, channels=None)
        if images_u8.device.type != "cpu":
            raise ValueError(f"images_u8 must be a CPU tensor (workers read it), got {images_u8.device}")
        sampler = make_sampler(policy, num_ops, magnitude, num_magnitude_bins)
        self.policy = sampler.policy
        self.num_ops = sampler.ops_per_row if isinstance(sampler, RandAugmentSampler) else None
        self.magnitude = getattr(sampler, "magnitude", None)
        self.num_magnitude_bins = getattr(sampler, "num_magnitude_bins", None)
        self.padding = checks.check_int("padding", padding, low=0, high=images_u8.shape[-1])
        self.num_workers = checks.check_int("num_workers", num_workers, low=0, high=256)
        channels = images_u8.shape[1]
        self.mean, self.std = checks.check_mean_std(mean, std)
        counts = [None if v is None else len(v) for v in (self.mean, self.std)]
        if counts != [channels, channels]:
            raise ValueError(f"mean and std need {channels} values (one per channel), got {counts[0]} and {counts[1]}")
        self.flip = checks.check_bool("flip", flip)
        self.images = images_u8.contiguous()
        self.weak_tf, self.strong_tf = build_transforms(
            size=images_u8.shape[-2:], padding=self.padding, flip=self.flip, mean=self.mean, std=self.std,
            policy=self.policy, num_ops=self.num_ops, magnitude=self.magnitude,
            num_magnitude_bins=self.num_magnitude_bins)

    def batches(self, index: torch.Tensor, strong: torch.Tensor, batch_size: int, *, seed: int,
                device: "torch.device | str" = "cpu") -> Iterator[torch.Tensor]:
        """Augment rows ``images_u8[index]`` in the given order.

        Args:
            index: int64 (R,) image rows (repeats allowed: each is its own draw).
            strong: bool (R,): strong pipeline (True) or weak (False) for each row.
            batch_size: rows per yielded batch (the last may be shorter).
            seed: an int in [0, 2**63); row i is drawn from :func:`sample_seed` ``(seed, i)``.
            device: where the batches go.

        Yields:
            float32 (B, C, H, W) normalised batches on ``device``; batch b holds rows
            ``b * batch_size ...`` of the call.
        """
        checks.check_tensor("index", index, dim=1, integer=True)
        checks.check_tensor("strong", strong, dim=1)
        if strong.dtype != torch.bool:
            raise ValueError(f"strong must be a bool tensor, got {strong.dtype}")
        checks.check_rows(index.numel(), strong=strong)
        checks.check_range("index", index, 0, self.images.shape[0])
        batch_size = checks.check_int("batch_size", batch_size, low=1)
        seed = checks.check_int("seed", seed, low=0, high=2**63 - 1)
        device = torch.device(device)
        rows = _Rows(self.images, index.cpu().long(), strong.cpu(), seed, self.weak_tf, self.strong_tf)
        if len(rows) == 0:
            return
        loader = torch.utils.data.DataLoader(
            rows, batch_size=batch_size, shuffle=False, num_workers=self.num_workers,
            pin_memory=device.type == "cuda",
            # its own generator: the loader's base seed (unused, rows carry their own) must
            # not draw from, and so shift, the caller's global stream
            generator=torch.Generator().manual_seed(seed))
        for x in loader:
            yield x.to(device, non_blocking=True)
