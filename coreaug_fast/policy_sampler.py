"""Per-row parameter draws for each policy of :mod:`coreaug_fast.policies`, vectorised over
rows on the generator's device.

A sampler turns its policy's tables into tensors once (:meth:`PolicySampler.tables`; the
:class:`~coreaug_fast.Augmenter` moves them to the device and keeps them per image size), then
each draw is a few ``torch.randint`` / ``torch.rand`` calls and gathers: no Python loop over
rows, no value read back on the host. Each samples what torchvision 0.29's v2 transform
samples for one image, row by row:

* ``randaugment``: ``num_ops`` ops uniform over the space (with replacement), each at bin
  ``magnitude``, a signed op negated with probability 1/2;
* ``autoaugment-*``: a sub-policy uniform over the list; each of its two steps applied if
  ``u <= p`` (u uniform in [0, 1), float32, as ``torch.rand(()) <= p``), at its bin, a signed
  op negated if ``u' <= 0.5``; a step not applied is Identity with magnitude 0;
* ``trivialaugment``: one op uniform over the space, a bin uniform over ``num_magnitude_bins``,
  a signed op negated if ``u' <= 0.5``.

The draws, in order, of ``R`` rows:

* ``randaugment``: ``randint(0, 14, (R, num_ops))`` op picks, ``randint(0, 2, (R, num_ops))``
  sign bits (the stream of every earlier version: batches stay bit-identical);
* ``autoaugment-*``: ``randint(0, 25, (R,))`` sub-policies, ``rand(R, 2)`` application
  uniforms, ``rand(R, 2)`` sign uniforms;
* ``trivialaugment``: ``randint(0, 14, (R, 1))`` op picks, ``randint(0, num_magnitude_bins,
  (R, 1))`` bins, ``rand(R, 1)`` sign uniforms.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from . import checks
from .policies import (AUTOAUGMENT_BINS, AUTOAUGMENT_SPACE, AUTOAUGMENT_SUBPOLICIES, MAX_OPS, OP_ID, OPS,
                       RANDAUGMENT_SPACE, SIGNED, TRIVIALAUGMENT_SPACE)
from .vocabulary import POLICIES

MAX_BINS = 2 ** 16
Tables = Dict[str, torch.Tensor]


def magnitude_table(space: dict, num_bins: int, height: int, width: int) -> torch.Tensor:
    """Unsigned magnitude of every op of :data:`OPS` at every bin of ``space`` (a space of
    :mod:`coreaug_fast.policies`), in the op's units (:data:`OPS`): computed as torchvision
    computes it (``torch.linspace`` in the default dtype), Solarize's fraction of 255 turned
    into a threshold in pixels. Ops outside the space or without a magnitude get 0.

    Returns:
        float32 (len(OPS), num_bins) on the CPU.
    """
    # Kept in tensors (no float() of an element): tables are built inside the training step
    # the first time a size is seen, where reading values back would be a host round trip.
    rows = []
    for name in OPS:
        layout = space.get(name)
        if layout is None:
            rows.append(torch.zeros(num_bins))
        elif layout[0] == "linear":
            _, high, scale = layout
            if scale is not None:
                high = high * {"width": width, "height": height}[scale]
            rows.append(torch.linspace(0.0, high, num_bins))
        elif layout[0] == "posterize":
            bits = (8 - (torch.arange(num_bins) / ((num_bins - 1) / layout[1]))).round().int()
            rows.append(bits.to(torch.get_default_dtype()))
        elif layout[0] == "solarize":
            # torchvision: threshold = 255.0 * float(fraction), compared as float32; the float32
            # product rounds 255 (8 bits) x a float32 (24 bits) once, as the double product does
            rows.append(255.0 * torch.linspace(1.0, 0.0, num_bins))
        else:
            raise AssertionError(f"unknown magnitude layout {layout!r} of {name}")
    return torch.stack(rows).float()


def randaugment_magnitudes(magnitude: int = 9, num_magnitude_bins: int = 31, height: int = 32,
                           width: int = 32) -> torch.Tensor:
    """Unsigned magnitude of each op of :data:`OPS` at bin ``magnitude`` of torchvision's
    RandAugment table (see :func:`magnitude_table`). float32 (15,)."""
    return magnitude_table(RANDAUGMENT_SPACE, num_magnitude_bins, height, width)[:, magnitude].contiguous()


def _signed_mask() -> torch.Tensor:
    return torch.tensor([name in SIGNED for name in OPS])


def _space_ids(space: dict) -> torch.Tensor:
    return torch.tensor([OP_ID[name] for name in space], dtype=torch.long)


def _negate_signed(ops: torch.Tensor, mags: torch.Tensor, u: torch.Tensor, signed: torch.Tensor) -> torch.Tensor:
    # torchvision: `if signed and torch.rand(()) <= 0.5: magnitude *= -1`
    return torch.where(signed[ops] & (u <= 0.5), -mags, mags)


class PolicySampler:
    """Draws ``(ops, magnitudes)`` for rows of one policy; see the module docstring.

    Attributes:
        policy: its name in :data:`~coreaug_fast.policies.POLICIES`.
        ops_per_row: L, the columns of the drawn ``ops`` / ``magnitudes``.
    """

    policy: str
    ops_per_row: int

    def tables(self, height: int, width: int) -> Tables:
        """The tensors :meth:`draw` reads, on the CPU, for images of this size."""
        raise NotImplementedError

    def draw(self, tables: Tables, rows: int, generator: Optional[torch.Generator],
             device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """int64 (rows, L) op ids and float32 (rows, L) signed magnitudes, drawn from
        ``generator`` on ``device``, where ``tables`` (from :meth:`tables`) already are."""
        raise NotImplementedError


class RandAugmentSampler(PolicySampler):
    policy = "randaugment"

    def __init__(self, num_ops: int, magnitude: int, num_magnitude_bins: int) -> None:
        self.ops_per_row, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins

    def tables(self, height, width):
        return {"magnitudes": randaugment_magnitudes(self.magnitude, self.num_magnitude_bins, height, width)}

    def draw(self, tables, rows, generator, device):
        # The space is OPS[0:14] (Invert, the last op, left out) and the signed ops are ids
        # 1..9: both follow from ids, so this stream needs no table beyond the magnitudes.
        ops = torch.randint(0, len(RANDAUGMENT_SPACE), (rows, self.ops_per_row), generator=generator, device=device)
        negate = torch.randint(0, 2, (rows, self.ops_per_row), generator=generator, device=device).bool()
        mags = tables["magnitudes"][ops]
        signed = (ops >= OP_ID["ShearX"]) & (ops <= OP_ID["Sharpness"])
        return ops, torch.where(negate & signed, -mags, mags)


class AutoAugmentSampler(PolicySampler):
    ops_per_row = 2

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.subpolicies = AUTOAUGMENT_SUBPOLICIES[policy]

    def tables(self, height, width):
        steps = [step for sub in self.subpolicies for step in sub]
        shape = (len(self.subpolicies), self.ops_per_row)
        return {
            "ops": torch.tensor([OP_ID[name] for name, _, _ in steps], dtype=torch.long).view(shape),
            # float32, as torchvision's `torch.rand(()) <= p` compares
            "probabilities": torch.tensor([p for _, p, _ in steps], dtype=torch.float32).view(shape),
            "bins": torch.tensor([0 if b is None else b for _, _, b in steps], dtype=torch.long).view(shape),
            "magnitudes": magnitude_table(AUTOAUGMENT_SPACE, AUTOAUGMENT_BINS, height, width),
            "signed": _signed_mask(),
        }

    def draw(self, tables, rows, generator, device):
        sub = torch.randint(0, len(self.subpolicies), (rows,), generator=generator, device=device)
        applied_u = torch.rand((rows, self.ops_per_row), generator=generator, device=device)
        sign_u = torch.rand((rows, self.ops_per_row), generator=generator, device=device)
        ops = tables["ops"][sub]
        mags = _negate_signed(ops, tables["magnitudes"][ops, tables["bins"][sub]], sign_u, tables["signed"])
        applied = applied_u <= tables["probabilities"][sub]
        return torch.where(applied, ops, 0), torch.where(applied, mags, 0.0)


class TrivialAugmentSampler(PolicySampler):
    policy = "trivialaugment"
    ops_per_row = 1

    def __init__(self, num_magnitude_bins: int) -> None:
        self.num_magnitude_bins = num_magnitude_bins

    def tables(self, height, width):
        return {"space": _space_ids(TRIVIALAUGMENT_SPACE),
                "magnitudes": magnitude_table(TRIVIALAUGMENT_SPACE, self.num_magnitude_bins, height, width),
                "signed": _signed_mask()}

    def draw(self, tables, rows, generator, device):
        pick = torch.randint(0, len(TRIVIALAUGMENT_SPACE), (rows, 1), generator=generator, device=device)
        bins = torch.randint(0, self.num_magnitude_bins, (rows, 1), generator=generator, device=device)
        sign_u = torch.rand((rows, 1), generator=generator, device=device)
        ops = tables["space"][pick]
        return ops, _negate_signed(ops, tables["magnitudes"][ops, bins], sign_u, tables["signed"])


def make_sampler(policy: str = "randaugment", num_ops: Optional[int] = None, magnitude: Optional[int] = None,
                 num_magnitude_bins: Optional[int] = None) -> PolicySampler:
    """The sampler of ``policy``, its arguments checked.

    ``num_ops`` (default 2) and ``magnitude`` (default 9) belong to ``"randaugment"`` only;
    ``num_magnitude_bins`` (default 31) to ``"randaugment"`` and ``"trivialaugment"``. Giving
    one to a policy that has no such setting is an error, not silently ignored.

    Raises:
        ValueError: naming the argument: an unknown policy, an argument the policy does not
            take, or a value out of range.
    """
    if not isinstance(policy, str) or policy not in POLICIES:
        raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")
    takes = {"randaugment": ("num_ops", "magnitude", "num_magnitude_bins"),
             "trivialaugment": ("num_magnitude_bins",)}.get(policy, ())
    for name, value in (("num_ops", num_ops), ("magnitude", magnitude), ("num_magnitude_bins", num_magnitude_bins)):
        if value is not None and name not in takes:
            why = ("applies one op per row with a magnitude bin drawn uniformly" if policy == "trivialaugment"
                   else f"fixes its ops, probabilities and magnitude bins (of {AUTOAUGMENT_BINS}) per sub-policy")
            raise ValueError(f"{name} is not a setting of policy {policy!r}, which {why}; got {name}={value!r} "
                             f"(leave it None)")
    if policy == "randaugment":  # checked in this order since the first version
        num_ops = checks.check_int("num_ops", 2 if num_ops is None else num_ops, low=0, high=MAX_OPS)
    if "num_magnitude_bins" in takes:
        num_magnitude_bins = checks.check_int("num_magnitude_bins", 31 if num_magnitude_bins is None
                                              else num_magnitude_bins, low=2, high=MAX_BINS)
    if policy == "randaugment":
        magnitude = checks.check_int("magnitude", 9 if magnitude is None else magnitude, low=0,
                                     high=num_magnitude_bins - 1)
        return RandAugmentSampler(num_ops, magnitude, num_magnitude_bins)
    if policy == "trivialaugment":
        return TrivialAugmentSampler(num_magnitude_bins)
    return AutoAugmentSampler(policy)
