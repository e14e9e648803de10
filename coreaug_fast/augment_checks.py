"""The argument checks of the fused augmentation op (:mod:`coreaug_fast.augment`): types,
shapes and devices always, and the values (each a host synchronisation on a GPU) unless a
call passes ``check=False``. Each raises a ValueError naming the argument, before the op runs."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from . import checks
from .policies import MAX_OPS, OP_ID, OPS

_FACTOR_OPS = [OP_ID[k] for k in ("Brightness", "Color", "Contrast", "Sharpness")]
# Integers that reach the C++/CUDA op are bounded here, where a clear message is possible:
# crop arithmetic runs in 32 bits there (padding 2**32 would wrap to no shift).
MAX_PADDING = 2 ** 30
MAX_COPIES = 2 ** 16


def check_index(index, num_images: int, rows: Optional[int], check: bool = True, name: str = "index") -> None:
    """Type and shape always; the values (one host sync on a GPU) when ``check``. The
    kernels never read out of bounds: without the check, a row whose index is outside
    [0, N) comes out all zeros on the GPU (the CPU op checks indices itself and raises).
    ``name`` is the argument's name in messages (``params.source`` for a replay)."""
    checks.check_tensor(name, index, dim=1, integer=True)
    if rows is not None:
        checks.check_rows(rows, **{name: index})
    if check:
        checks.check_range(name, index, 0, num_images)


def check_ops_shape(ops, magnitudes, prefix: str = "") -> None:
    """``prefix`` goes before the names in messages (``params.`` for a replay)."""
    checks.check_tensor(f"{prefix}ops", ops, dim=2, integer=True)
    checks.check_tensor(f"{prefix}magnitudes", magnitudes, dim=2, floating=True)
    if ops.shape != magnitudes.shape:
        raise ValueError(f"{prefix}ops {tuple(ops.shape)} and {prefix}magnitudes {tuple(magnitudes.shape)} must "
                         f"have one shape (M, L)")
    if ops.shape[1] > MAX_OPS:
        raise ValueError(f"at most {MAX_OPS} ops per row, got L = {ops.shape[1]}")


def check_ops(ops, magnitudes, prefix: str = "") -> None:
    """Ids and magnitudes (reads the values: one device sync on a GPU); ``prefix`` as in
    :func:`check_ops_shape`."""
    check_ops_shape(ops, magnitudes, prefix)
    checks.check_range(f"{prefix}ops", ops, 0, len(OPS))
    checks.check_finite(f"{prefix}magnitudes", magnitudes)
    if ops.numel() == 0:
        return
    m = magnitudes.float()
    rules = [
        (torch.isin(ops, torch.tensor(_FACTOR_OPS, device=ops.device)) & (m < -1),
         "Brightness/Color/Contrast/Sharpness magnitudes must be >= -1 (factor 1 + m >= 0)"),
        ((ops == OP_ID["Posterize"]) & ((m < 0) | (m >= 9)),
         "Posterize magnitudes (bits kept, truncated) must lie in [0, 9)"),
        ((ops == OP_ID["Solarize"]) & (m > 255), "Solarize thresholds must be <= 255"),
    ]
    for bad, message in rules:
        if bool(bad.any()):
            r, c = (int(v) for v in bad.nonzero()[0])
            raise ValueError(f"{message}; {prefix}magnitudes[{r}, {c}] = {float(m[r, c])} for op "
                             f"{OPS[int(ops[r, c])]}")


def fill_values(fill, channels: int) -> list:
    """Python ints in [0, 255], one or one per channel; ``None`` is 0 (torchvision's)."""
    if fill is None:
        return [0]
    values = list(fill) if isinstance(fill, (list, tuple)) else [fill]
    if len(values) not in (1, channels):
        raise ValueError(f"fill must be an int or {channels} ints, got {fill!r}")
    try:
        values = [checks.check_int("fill", v) for v in values]
    except ValueError:
        raise ValueError(f"fill must be an int or {channels} ints, got {fill!r}") from None
    if not all(0 <= v <= 255 for v in values):
        raise ValueError(f"fill values must lie in [0, 255], got {fill!r}")
    return values


def check_interpolation(interpolation) -> None:
    mode = getattr(interpolation, "value", interpolation)
    checks.check_choice("interpolation", mode, ["nearest"])


def check_padding(padding) -> int:
    try:
        return checks.check_int("padding", padding, low=0, high=MAX_PADDING)
    except ValueError:
        raise ValueError(f"padding must be an int >= 0 (at most {MAX_PADDING}), got {padding!r}") from None


@functools.lru_cache(maxsize=64)
def _check_normalised_finite(mean: Optional[tuple], std: tuple, out_dtype: torch.dtype) -> None:
    """Refuses ``std`` (with ``mean``) for which the op's normalised value of some uint8 value
    is not finite in ``out_dtype``: the op's own float32 steps, replayed on all 256 values.
    Cached: a training loop's per-batch calls (``crop_flip`` with ``mean``/``std``) replay
    nothing, and read no tensor value, after the first."""
    tiny = torch.finfo(torch.float32).tiny
    mean = [0.0] if mean is None else mean
    if len(mean) == len(std) or 1 in (len(mean), len(std)):
        pairs = [(mean[0 if len(mean) == 1 else c], std[0 if len(std) == 1 else c])
                 for c in range(max(len(mean), len(std)))]
    else:  # lengths a call will refuse; every pairing must be finite meanwhile
        pairs = [(mu, sd) for mu in mean for sd in std]
    v = torch.arange(256, dtype=torch.float32) * torch.tensor(1.0 / 255.0, dtype=torch.float32)
    for mu, sd in pairs:
        sd32 = torch.tensor(sd, dtype=torch.float32)
        if not bool(sd32.abs() >= tiny):  # a subnormal or zero float32: a GPU may flush it to 0
            raise ValueError(f"std must be at least {tiny:.4g} in magnitude (a normal float32), got {sd!r}")
        out = ((v - torch.tensor(mu, dtype=torch.float32)) / sd32).to(out_dtype)
        bad = ~torch.isfinite(out)
        if bool(bad.any()):
            x = int(bad.nonzero()[0, 0])
            raise ValueError(f"std {sd!r} is too small for out_dtype {out_dtype}: (x / 255 - {mu!r}) / {sd!r} is "
                             f"{float(out[x])} for x = {x}; the normalised value of every uint8 must be finite")


def normalisation(mean, std, out_dtype: torch.dtype):
    """(mean, std) as lists of floats (or None, None) for an output of ``out_dtype``: both or
    neither, in x / 255 units, a floating ``out_dtype``, and every normalised uint8 finite."""
    checks.check_choice("out_dtype", out_dtype, [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
    mean_values, std_values = checks.check_mean_std(mean, std)
    if out_dtype == torch.uint8 and (mean_values is not None or std_values is not None):
        raise ValueError("mean/std need a floating out_dtype, got uint8")
    checks.check_mean_std_given(mean, std)
    if mean_values is not None and any(abs(v) > 1 for v in mean_values):
        raise ValueError(f"mean is in units of x / 255 (values in [0, 1], as torchvision's Normalize after "
                         f"ToDtype(scale=True)), got {mean_values}: divide 0-255 statistics by 255")
    if std_values is not None:
        _check_normalised_finite(None if mean_values is None else tuple(mean_values), tuple(std_values), out_dtype)
    return mean_values, std_values


def check_stats_channels(mean, std, channels: int) -> None:
    for name, stats in (("mean", mean), ("std", std)):
        if stats is not None and len(stats) not in (1, channels):
            raise ValueError(f"{name} has {len(stats)} values for {channels} channels")


def _check_crop_shapes(offsets, flips, prefix: str = "") -> None:
    checks.check_tensor(f"{prefix}offsets", offsets, dim=2, integer=True)
    checks.check_tensor(f"{prefix}flips", flips, dim=1)
    if offsets.shape[1] != 2:
        raise ValueError(f"{prefix}offsets must be (M, 2) (top, left), got shape {tuple(offsets.shape)}")


def crop_flip_rows(offsets, flips, index, num_images: int) -> int:
    """M, the rows of a :func:`crop_flip` call. When the row counts disagree, the message
    names the tensor at odd with the rest: offsets against the images (without index) or
    against flips and index, rather than blaming flips for rows that offsets added."""
    _check_crop_shapes(offsets, flips)
    rows = offsets.shape[0]
    if index is None and rows != num_images:
        raise ValueError(f"without index, offsets needs one row per image: {rows} rows for {num_images} images")
    if index is not None and rows != flips.shape[0] == index.shape[0]:
        raise ValueError(f"offsets has {rows} rows, expected {flips.shape[0]} (as flips and index)")
    return rows


def crop_tensor(offsets, flips, padding: int, rows: int, device, check: bool = True,
                prefix: str = "") -> torch.Tensor:
    """Validates offsets/flips (their values only when ``check``: one host sync on a GPU)
    and packs them as the op's (M, 3) int64 (top, left, flip); ``prefix`` as in
    :func:`check_ops_shape`."""
    _check_crop_shapes(offsets, flips, prefix)
    if flips.dtype != torch.bool and (flips.is_floating_point() or flips.is_complex()):
        raise ValueError(f"{prefix}flips must be bool (or integer 0/1), got {flips.dtype}")
    checks.check_rows(rows, **{f"{prefix}offsets": offsets, f"{prefix}flips": flips})
    checks.check_same_device(**{f"{prefix}offsets": offsets, f"{prefix}flips": flips},
                             images=torch.empty(0, device=device))
    if check:
        checks.check_range(f"{prefix}offsets", offsets, 0, 2 * padding + 1)
        if flips.dtype != torch.bool:
            checks.check_range(f"{prefix}flips", flips, 0, 2)
    return torch.cat([offsets.long(), flips.long()[:, None]], 1).contiguous()
