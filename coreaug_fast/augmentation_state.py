"""What :meth:`CoresetAugmentation.load_state_dict <coreaug_fast.CoresetAugmentation.load_state_dict>`
accepts: a state of the same configuration, holding values an epoch could have produced.
Every field is checked before any is restored, so a refused state changes nothing."""
from __future__ import annotations

import dataclasses
from typing import Iterable

import torch

from .checks import check_finite
from .coreset import Coreset
from .vocabulary import SUBSET_METHODS

#: The fields every state has (later versions added ``config`` and ``recording``).
STATE_KEYS = ("epoch", "generators", "subset", "weights", "ever_selected")


def check_state(state, *, n: int, config: dict, streams: Iterable[str], method: str) -> None:
    """A ValueError naming the first field of ``state`` that does not belong to an object of
    ``config`` over ``n`` examples, with random ``streams``, selecting by ``method``."""
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict from CoresetAugmentation.state_dict(), got {type(state).__name__}")
    missing = set(STATE_KEYS) - set(state)
    if missing:
        raise ValueError(f"state is missing {sorted(missing)}: not a CoresetAugmentation state_dict")
    _check_config(state.get("config"), config)
    epoch = state["epoch"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"state: epoch must be an int >= 0, got {epoch!r}")
    _check_generators(state["generators"], set(streams))
    ever = state["ever_selected"]
    if not isinstance(ever, torch.Tensor) or ever.dtype != torch.bool or tuple(ever.shape) != (n,):
        shape = tuple(ever.shape) if isinstance(ever, torch.Tensor) else type(ever).__name__
        raise ValueError(f"state: ever_selected must be a bool tensor of shape ({n},) (one flag per example), "
                         f"got {shape}: a state of a dataset of another size")
    _check_recording(state.get("recording"), n)
    _check_subset(state["subset"], state["weights"], n, epoch, method)
    _check_coreset(state.get("coreset"))


def _check_config(saved, here: dict) -> None:
    if saved is None:  # a state written before configurations were saved
        return
    for key, value in here.items():
        if key in saved and saved[key] != value:
            raise ValueError(f"state: {key} is {saved.get(key)!r} there and {value!r} here: a state of "
                             f"another configuration")


def _check_generators(gens, streams: set) -> None:
    size = torch.Generator().get_state().numel()
    if not isinstance(gens, dict) or set(gens) != streams:
        raise ValueError(f"state: generators must hold {sorted(streams)}, got "
                         f"{sorted(gens) if isinstance(gens, dict) else type(gens).__name__}")
    for k, g in gens.items():
        if not isinstance(g, torch.Tensor) or g.dtype != torch.uint8 or g.numel() != size:
            raise ValueError(f"state: generators[{k!r}] is not a CPU generator state ({size} uint8 values)")


def _check_recording(recording, n: int) -> None:
    if recording is None:
        return
    fields = ("logits", "features", "seen")
    if not isinstance(recording, dict) or set(recording) != set(fields):
        raise ValueError(f"state: recording must be None or a dict of {list(fields)}")
    seen, logits, features = (recording[k] for k in ("seen", "logits", "features"))
    if not isinstance(seen, torch.Tensor) or seen.dtype != torch.bool or tuple(seen.shape) != (n,) or any(
            t is not None and (not isinstance(t, torch.Tensor) or t.dim() != 2 or t.shape[0] != n)
            for t in (logits, features)):
        raise ValueError(f"state: recording must hold a bool seen ({n},), logits ({n}, classes) and features "
                         f"({n}, d) or None")
    for name, t in (("logits", logits), ("features", features)):
        if t is not None:
            check_finite(f"state: recording.{name}", t)


def _check_coreset(coreset) -> None:
    fields = [f.name for f in dataclasses.fields(Coreset)]
    if coreset is not None and (not isinstance(coreset, dict) or set(coreset) != set(fields) or not all(
            isinstance(v, torch.Tensor) for v in coreset.values())):
        raise ValueError(f"state: coreset must be None or a dict of the tensors {fields}")


def _check_subset(subset, weights, n: int, epoch: int, method: str) -> None:
    if (subset is None) != (weights is None):
        raise ValueError("state: subset and weights must both be set or both be None")
    if subset is None:
        if method in SUBSET_METHODS and epoch > 0:
            raise ValueError(f"state: subset is None after {epoch} epochs of method {method!r}")
        return
    if method not in SUBSET_METHODS:
        raise ValueError(f"state: holds a subset, but method {method!r} selects none")
    if not isinstance(subset, torch.Tensor) or subset.dim() != 1 or subset.dtype != torch.long:
        raise ValueError("state: subset must be an int64 (k,) tensor")
    if subset.numel() and (int(subset.min()) < 0 or int(subset.max()) >= n):
        raise ValueError(f"state: subset has indices outside [0, {n})")
    if not isinstance(weights, torch.Tensor) or weights.dtype != torch.float32 or weights.shape != subset.shape:
        raise ValueError(f"state: weights must be a float32 tensor of the subset's shape ({subset.numel()},)")
    if weights.numel() and not bool((torch.isfinite(weights) & (weights >= 0)).all()):
        raise ValueError("state: weights must be finite and >= 0")
