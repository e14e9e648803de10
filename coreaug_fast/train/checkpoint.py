"""``checkpoint.pt``: written atomically with a SHA-256 of its contents, read back only if
it is intact, holds tensors and plain values only, and comes from a version of this package
that knows every key in it.

The checksum is taken over the *values* (every tensor's dtype, shape and bytes, every plain
value's type and ``repr``, in the order the dict holds them), not over the file's bytes: a
checkpoint saved from a GPU and read on the CPU has other bytes but the same values. A
damaged file (a disk error, a copy cut short, 4 KiB of zeros in the middle) either fails to
unpickle or changes some tensor's bytes, and is refused instead of silently resuming from
corrupted weights or momentum.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import torch

from ..checks import first_line
from . import files
from .config import TrainConfig, UsageError

#: Every key a checkpoint holds (``Trainer.state_dict`` plus the checksum).
KEYS = ("config", "epoch", "model", "optimizer", "schedule", "torch_rng", "cuda_rng", "selection", "records",
        "elapsed_s", "sha256")


def _feed(h, obj) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"a checkpoint holds tensors and plain values only, got {type(obj).__name__}")


def checksum(state: dict) -> str:
    """SHA-256 (hex) of every entry of ``state`` but ``"sha256"``."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in state.items() if k != "sha256"})
    return h.hexdigest()


def save(state: dict, path: Path) -> None:
    """Write ``state`` (a ``Trainer.state_dict``) with its checksum, atomically."""
    state = {**state, "sha256": checksum(state)}
    files.replace_atomically(path, lambda f: torch.save(state, f))


def config_from_dict(saved: dict, where: str) -> TrainConfig:
    """The :class:`TrainConfig` of a checkpoint or summary; UsageError when it names settings
    this version does not have (a file from a newer version, or not from this package)."""
    if not isinstance(saved, dict):
        raise UsageError(f"{where}: its config is a {type(saved).__name__}, not a dict of settings")
    known = {f for f in TrainConfig.__dataclass_fields__}
    unknown = sorted(map(str, set(saved) - known))
    if unknown:
        raise UsageError(f"{where}: unknown settings {', '.join(unknown)} (written by another version of "
                         f"coreaug-train?)")
    return TrainConfig(**saved)


def read(path: Path, device: torch.device) -> dict:
    """Read and verify a checkpoint (UsageError naming ``path`` otherwise): loaded with
    ``weights_only=True`` (a file from elsewhere cannot run code), every key known, the
    checksum matching."""
    if not Path(path).is_file():
        raise UsageError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = first_line(e)
        raise UsageError(f"--resume: refusing {path}: it holds objects other than tensors and plain Python "
                         f"values, so it is not a coreaug-train checkpoint ({first})") from None
    except Exception as e:  # noqa: BLE001 - zip, EOF, OS, decoding errors of a damaged file: all "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UsageError(f"--resume: {path} is not a readable checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict) or not {"config", "epoch", "model", "selection"} <= set(state):
        raise UsageError(f"--resume: {path} is not a coreaug-train checkpoint")
    unknown = sorted(map(str, set(state) - set(KEYS)))
    missing = [k for k in KEYS if k not in state]
    if unknown or missing:
        raise UsageError(f"--resume: {path} was written by another version of coreaug-train ("
                         + "; ".join(([f"unknown keys {', '.join(unknown)}"] if unknown else [])
                                     + ([f"missing {', '.join(missing)}"] if missing else [])) + ")")
    try:
        intact = checksum(state) == state["sha256"]
    except TypeError:
        intact = False
    if not intact:
        raise UsageError(f"--resume: {path} is damaged: its contents do not match the checksum stored with "
                         f"them; resume from another copy or start again")
    config_from_dict(state["config"], f"--resume: {path}")
    return state
