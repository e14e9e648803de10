"""Argument checks shared by the public functions: each raises a ValueError that names
the argument and what was wrong, before any kernel runs."""
from __future__ import annotations

from typing import Sequence

import torch


def check_tensor(name: str, x, *, dim: "int | None" = None, floating: bool = False,
                 integer: bool = False) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dim is not None and x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"{name} must be an integer tensor, got {x.dtype}")
    return x


def check_same_device(**tensors: "torch.Tensor | None") -> torch.device:
    present = {k: v for k, v in tensors.items() if v is not None}
    devices = {k: v.device for k, v in present.items()}
    if len(set(devices.values())) > 1:
        listed = ", ".join(f"{k} on {d}" for k, d in devices.items())
        raise ValueError(f"tensors must be on one device, got {listed}")
    return next(iter(devices.values()))


def check_not_meta(**tensors) -> None:
    """Refuse tensors on the meta device (a shape without values) before any value is read:
    torch's own error there ("Tensor.item() cannot be called on meta tensors") names neither
    the argument nor the cause. Only when *every* tensor given is on meta; a mix of devices
    is :func:`check_same_device`'s to report. Non-tensors are skipped (their type checks
    report them); a tuple is looked into (factored embeddings)."""
    present = {}
    for name, v in tensors.items():
        for t in (v if isinstance(v, tuple) else (v,)):
            if isinstance(t, torch.Tensor):
                present.setdefault(name, t)
    if present and all(t.device.type == "meta" for t in present.values()):
        name = next(iter(present))
        raise ValueError(f"{name} is on the meta device (a shape without values); pass tensors on the CPU or a GPU")


def check_rows(n: int, **tensors: "torch.Tensor | None") -> None:
    for k, v in tensors.items():
        if v is not None and v.shape[0] != n:
            raise ValueError(f"{k} has {v.shape[0]} rows, expected {n}")


def check_finite(name: str, x: torch.Tensor) -> None:
    """No NaN or inf in ``x``: its min and max are finite (a NaN propagates into both), read
    with one reduction and no temporary of ``x``'s size (ImageNet-scale logits are GBs)."""
    check_not_meta(**{name: x})
    if x.is_floating_point() and x.numel():
        if not bool(torch.isfinite(torch.stack(torch.aminmax(x))).all()):  # one host sync
            raise ValueError(f"{name} contains NaN or inf")


def check_range(name: str, x: torch.Tensor, low: int, high: int) -> None:
    """Integer values must lie in [low, high) (read with one reduction and one host sync)."""
    if x.numel() == 0:
        return
    check_not_meta(**{name: x})
    lo, hi = torch.stack(torch.aminmax(x)).tolist()
    if lo < low or hi >= high:
        bad = lo if lo < low else hi
        raise ValueError(f"{name} has value {bad}, outside [{low}, {high})")


def check_choice(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def check_fraction(name: str, value) -> float:
    """A real number (Python or NumPy scalar) in (0, 1]."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_int(name: str, value, *, low: "int | None" = None, high: "int | None" = None) -> int:
    """Anything ``operator.index`` accepts (int, NumPy integer, 0-d integer tensor), not bool,
    within [low, high] when given. Returns a Python int."""
    import operator

    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dim() != 0):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}") from None
    if (low is not None and out < low) or (high is not None and out > high):
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in [{lo}, {hi}], got {out}")
    return out


def check_float(name: str, value, *, low: "float | None" = None, high: "float | None" = None,
                finite: bool = True) -> float:
    """Anything ``float()`` accepts that is a real number (int, float, NumPy scalar, 0-d
    tensor), not bool or str; finite unless ``finite=False``; within [low, high] when given.
    Returns a Python float."""
    import math
    import numbers

    if isinstance(value, (bool, str, bytes)) or not (isinstance(value, numbers.Real) or
                                                     (isinstance(value, torch.Tensor) and value.numel() == 1)):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if finite and not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    if (low is not None and out < low) or (high is not None and out > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {out}")
    return out


def check_bool(name: str, value) -> bool:
    """A Python or NumPy bool (``bool('no')`` is True: a string must not pass for one)."""
    if isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")):
        return bool(value)
    raise ValueError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def check_generator(name: str, generator, *, cpu_or_cuda: bool = False) -> None:
    """None or a ``torch.Generator``; with ``cpu_or_cuda``, one on the CPU or a CUDA device
    (where an op's parameters can be drawn)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"{name} must be a torch.Generator or None, got {type(generator).__name__} {generator!r}")
    if generator is not None and cpu_or_cuda and generator.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{name} must be on the CPU or a CUDA device, got one on {generator.device}")


def check_images(name: str, images, *, channels: "Sequence[int] | None" = (1, 3)) -> torch.Tensor:
    """uint8 (N, C, H, W) images, C one of ``channels`` (any when None)."""
    check_tensor(name, images, dim=4)
    if images.dtype != torch.uint8:
        raise ValueError(f"{name} must be uint8, got {images.dtype}")
    if channels is not None and images.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise ValueError(f"{name} must have {allowed} channels (N, C, H, W), got shape {tuple(images.shape)}")
    return images


def check_per_channel(name: str, value, channels: "int | None" = None) -> "list[float]":
    """Finite floats from a number, a sequence, or an array or tensor (flattened): one value,
    or one per channel. With ``channels``, one value is repeated to ``channels`` values, and
    any other count than 1 or ``channels`` is refused."""
    if isinstance(value, torch.Tensor) or hasattr(value, "__array__"):
        value = torch.as_tensor(value).flatten().tolist()
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        values = [check_float(name, v) for v in values]
    except ValueError:
        raise ValueError(f"{name} must be a finite float or one per channel, got {value!r}") from None
    if not values:
        raise ValueError(f"{name} must be a finite float or one per channel, got {value!r}")
    if channels is not None and len(values) == 1:
        values = values * channels
    if channels is not None and len(values) != channels:
        raise ValueError(f"{name} has {len(values)} values for {channels} channels")
    return values


def check_mean_std(mean, std, channels: "int | None" = None) -> "tuple[list[float] | None, list[float] | None]":
    """Per-channel normalisation ``(x / 255 - mean) / std`` as lists of floats
    (:func:`check_per_channel`; None stays None). The one rule for ``std`` is torchvision's
    ``Normalize``: nonzero. A negative std only flips the sign (torchvision accepts it, and so
    does the fused op); a zero divides by zero. Whether both are given is the caller's to
    check (:func:`check_mean_std_given`), as is the range its output dtype allows."""
    mean = None if mean is None else check_per_channel("mean", mean, channels)
    values = None if std is None else check_per_channel("std", std, channels)
    if values is not None and any(s == 0 for s in values):
        raise ValueError(f"std must be nonzero, got {std!r}")
    return mean, values


def check_mean_std_given(mean, std) -> None:
    """Both or neither: a lone mean would silently divide by 1, a lone std subtract 0."""
    if (mean is None) != (std is None):
        raise ValueError(f"mean and std must be given together (or neither), got mean={mean!r}, std={std!r}")


def check_group(group):
    """None or a ``torch.distributed`` process group (a name such as ``"world"`` is not one)."""
    if group is None:
        return None
    import torch.distributed as dist

    if not (dist.is_available() and isinstance(group, dist.ProcessGroup)):
        raise ValueError(f"group must be a torch.distributed ProcessGroup (e.g. dist.group.WORLD) or None, "
                         f"got {type(group).__name__} {group!r}")
    return group


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none): what a
    one-line error quotes of an error from elsewhere (a dataset, torch.load, a file)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
