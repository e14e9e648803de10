"""Where :class:`~coreaug_fast.CoresetAugmentation` gets the class id of every example: the
caller's tensor, checked; or, for a dataset, the labels it states (``targets``, as
torchvision's folders and CIFAR have), else one pass over its items; checked against the
classes the dataset states."""
from __future__ import annotations

from typing import Optional

import torch

from . import checks
from .loading import item_path
from .sources import DatasetSource, TensorSource


def labels_of(source, labels: Optional[torch.Tensor], progress: Optional[bool] = None) -> torch.Tensor:
    """int64 (N,) labels of ``source``'s examples: ``labels`` on the images' device for a
    :class:`TensorSource` (checked with its images by :func:`~coreaug_fast.sources.make_source`);
    on the CPU for a :class:`DatasetSource`, ``labels`` when given, else the dataset's own."""
    if isinstance(source, TensorSource):
        return labels.to(source.device).long()
    dataset = source.dataset
    if labels is None:
        labels = dataset_labels(dataset)
        if labels is None:
            labels = read_labels(source, progress)
    else:
        checks.check_tensor("labels", labels, dim=1, integer=True)
        checks.check_rows(len(dataset), labels=labels)
        labels = labels.cpu().long()
    check_labels_of(dataset, labels)
    return labels


def dataset_labels(dataset) -> Optional[torch.Tensor]:
    """int64 (N,) labels a dataset states without reading its images: ``targets`` (torchvision
    folders, CIFAR, ...), looked through ``torch.utils.data.Subset``; None when it has none."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = dataset_labels(dataset.dataset)
        return None if inner is None else inner[torch.as_tensor(dataset.indices, dtype=torch.long)]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        return None
    try:
        labels = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError):
        return None
    if labels.dim() != 1 or labels.numel() != len(dataset) or labels.is_floating_point():
        return None
    return labels.long()


def dataset_classes(dataset) -> Optional[int]:
    """The number of classes a dataset states (``classes``), through ``Subset``; None if none."""
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_classes(dataset.dataset)
    classes = getattr(dataset, "classes", None)
    return len(classes) if isinstance(classes, (list, tuple)) and classes else None


def read_labels(source: DatasetSource, progress: Optional[bool] = None) -> torch.Tensor:
    """Every item's label by one pass over the dataset (its images are read too: a dataset
    without ``targets`` gives no other way), in the source's workers, with a progress bar."""
    from tqdm.auto import tqdm

    n = len(source.dataset)
    out = torch.empty(n, dtype=torch.long)
    bar = tqdm(total=n, desc="reading labels", unit="img", disable=None if progress is None else not progress)
    pos = 0
    with bar:
        for _, labels in source.eval_items(source.dataset, None, 256, torch.device("cpu"), geometry="label"):
            out[pos:pos + labels.numel()] = labels
            pos += labels.numel()
            bar.update(labels.numel())
    return out


def check_labels_of(dataset, labels: torch.Tensor) -> None:
    """Labels in [0, C) when the dataset states its C classes; >= 0 otherwise."""
    if labels.numel() == 0:
        return
    classes = dataset_classes(dataset)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        at = int((labels < 0).nonzero()[0])
        raise ValueError(f"labels: item {at}{_path(dataset, at)} has label {lo}; class ids are 0..C-1")
    if classes is not None and hi >= classes:
        at = int((labels >= classes).nonzero()[0])
        raise ValueError(f"labels: item {at}{_path(dataset, at)} has label {hi}, outside 0..{classes - 1} "
                         f"(the dataset has {classes} classes)")


def _path(dataset, index: int) -> str:
    path = item_path(dataset, index)
    return f" ({path})" if path else ""
