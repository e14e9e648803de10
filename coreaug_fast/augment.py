"""Fused strong (the op set of RandAugment, AutoAugment and TrivialAugment) and weak (crop,
flip) augmentation of uint8 images.

One call of ``torch.ops.coreaug.augment`` applies, per output row, its own list of ops with
its own magnitudes to an image gathered by index, optionally after a random crop (zero
padding) and horizontal flip, and writes uint8 or normalised floats in NCHW: one launch on
the GPU (one block per output image), OpenMP over output images on the CPU.

Semantics are torchvision 0.29's ``transforms.v2.functional`` on uint8 tensors, op by op,
left to right (``coreaug_fast.reference.augment`` is that, written out):

* Pixel ops (Brightness, Color, Contrast, Sharpness, Posterize, Solarize, AutoContrast,
  Equalize, Invert) are bit-exact, including torchvision's truncation after blends and its
  fused multiply-adds. (Contrast's mean is a float32 sum in torch, exact while
  ``255·H·W < 2**24``, i.e. up to 256×256 images; beyond that its last bit, and so a few
  pixels, may differ.)
* Geometric ops (ShearX/Y, TranslateX/Y, Rotate) use torchvision's own float32 grid and
  nearest rounding, chained op by op (an op's source coordinate is rounded before the previous
  op maps it, and a pixel that leaves the canvas at any op takes that op's fill and the later
  pixel ops), so the result equals applying the ops one after another, without storing the
  intermediate images. Tests accept at most 1% of pixels off by one sampling step (none are
  observed on CPU).
* ``interpolation`` is ``"nearest"`` only: the default of torchvision's policies, and the one
  mode in which chained ops need no intermediate image.
"""
from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Union

import torch

from . import augment_checks, checks, _ext
from .augment_checks import MAX_COPIES
from .policies import OPS, SIGNED
from .policy_sampler import make_sampler, randaugment_magnitudes  # noqa: F401 (re-exported)

def to_device_async(t: Optional[torch.Tensor], device: torch.device) -> Optional[torch.Tensor]:
    """``t`` on ``device`` without a host synchronisation: a host tensor goes to a GPU
    through pinned memory, asynchronously (a pageable copy would wait for the device)."""
    if t is None or t.device == device:
        return t
    if t.device.type == "cpu" and device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def apply_augment(images: torch.Tensor, ops: torch.Tensor, magnitudes: torch.Tensor, *,
                  index: Optional[torch.Tensor] = None, fill: "Union[int, Sequence[int], None]" = 0,
                  interpolation: str = "nearest", check: bool = True) -> torch.Tensor:
    """Apply per-row lists of ops from :data:`OPS` to uint8 images, in one fused launch.

    Output row ``m`` is image ``index[m]`` with ops ``ops[m, 0], ..., ops[m, L-1]`` applied
    left to right, each to the previous result, with magnitudes ``magnitudes[m, :]``, exactly
    as ``torchvision.transforms.v2.functional`` would (see the module docstring for the one
    caveat on geometric ops). A pure function of its arguments.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3, CPU or CUDA, any strides.
        ops: integer (M, L) op ids into :data:`OPS` (int32 preferred), L <= 16; L = 0 copies.
        magnitudes: floating (M, L), in each op's unit (see :data:`OPS`); used as float32.
        index: optional integer (M,) source image of each row, in [0, N); default row m
            reads image m (then M must equal N).
        fill: value (int, or one int per channel, in [0, 255]) of pixels that geometric ops
            bring in from off the canvas; torchvision's ``fill=None`` is 0.
        interpolation: ``"nearest"`` (the only mode).
        check: check the values of ``ops``, ``magnitudes`` and ``index`` (host
            synchronisations on a GPU). ``False`` skips those reads, for a training step
            with no host sync, when the values are known to be valid: an index outside
            [0, N) then gives an all-zero row on the GPU (the CPU op raises); other bad
            values give unspecified pixels.

    Returns:
        uint8 (M, C, H, W) on the device of ``images``.

    Raises:
        ValueError: wrong dtype/shape/channels, op ids outside [0, 15), NaN/inf or
            out-of-range magnitudes (factor < 0, bits outside [0, 8], threshold > 255), index
            out of range (these four only with ``check``), tensors on different devices.
        ExtensionNotBuiltError: the compiled extension is missing.
    """
    checks.check_images("images", images)
    augment_checks.check_ops_shape(ops, magnitudes)
    if index is not None:
        checks.check_tensor("index", index, dim=1, integer=True)
    checks.check_same_device(images=images, ops=ops, magnitudes=magnitudes, index=index)
    if check:
        augment_checks.check_ops(ops, magnitudes)
    augment_checks.check_interpolation(interpolation)
    fill_values = augment_checks.fill_values(fill, images.shape[1])
    if index is not None:
        augment_checks.check_index(index, images.shape[0], ops.shape[0], check)
    elif ops.shape[0] != images.shape[0]:
        raise ValueError(f"without index, ops needs one row per image: {ops.shape[0]} rows for {images.shape[0]} images")
    _ext.require_extension("apply_augment")
    return torch.ops.coreaug.augment(
        images, ops.int().contiguous(), magnitudes.float().contiguous(),
        None if index is None else index.long(), None, 0, fill_values, None, None, None)


def crop_flip(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, *, padding: int = 4,
              index: Optional[torch.Tensor] = None, check: bool = True, out_dtype: torch.dtype = torch.uint8,
              mean=None, std=None) -> torch.Tensor:
    """Random crop with zero padding and horizontal flip (the paper's weak augmentation).

    Row m is ``hflip(crop(pad(images[index[m]], padding, 0), top, left, H, W))`` if
    ``flips[m]`` else without the flip, where ``(top, left) = offsets[m]``; i.e. torchvision's
    ``RandomCrop(size=(H, W), padding=padding)`` followed by ``RandomHorizontalFlip``.

    Args:
        images: uint8 (N, C, H, W), C = 1 or 3.
        offsets: integer (M, 2) ``(top, left)`` of the crop in the padded image, each in
            [0, 2·padding] (``padding`` = no shift).
        flips: bool (M,) (or integer 0/1): flip the crop horizontally.
        padding: zero padding on every side, in [0, 2**30] (Python or NumPy integer).
        index: optional integer (M,) source image of each row; default row m reads image m.
        check: check the values of ``offsets``, ``flips`` and ``index`` (host
            synchronisations on a GPU); ``False`` skips those reads (see
            :func:`apply_augment`; other bad values give unspecified pixels, never a read
            out of bounds).
        out_dtype: uint8 (the pixels), or float32 / float16 / bfloat16: ``x / 255``, then
            ``(x - mean) / std`` when given, in the same pass (torchvision's
            ``ToDtype(scale=True)`` then ``Normalize``, to the bit, as :class:`Augmenter`).
        mean, std: per-channel (or one) normalisation in x / 255 units, both or neither.

    Returns:
        (M, C, H, W) in ``out_dtype`` on the device of ``images``.
    """
    checks.check_images("images", images)
    padding = augment_checks.check_padding(padding)
    if index is not None:
        checks.check_tensor("index", index, dim=1, integer=True)
    checks.check_same_device(images=images, offsets=offsets if isinstance(offsets, torch.Tensor) else None,
                              flips=flips if isinstance(flips, torch.Tensor) else None, index=index)
    rows = augment_checks.crop_flip_rows(offsets, flips, index, images.shape[0])
    crop = augment_checks.crop_tensor(offsets, flips, padding, rows, images.device, check)
    if index is not None:
        augment_checks.check_index(index, images.shape[0], rows, check)
    mean, std = augment_checks.normalisation(mean, std, out_dtype)
    augment_checks.check_stats_channels(mean, std, images.shape[1])
    _ext.require_extension("crop_flip")
    empty_ops = torch.empty(rows, 0, dtype=torch.int32, device=images.device)
    empty_mag = torch.empty(rows, 0, dtype=torch.float32, device=images.device)
    return torch.ops.coreaug.augment(images, empty_ops, empty_mag, None if index is None else index.long(),
                                     crop, padding, [0], None if out_dtype == torch.uint8 else out_dtype, mean, std)


# ---- the sampler -------------------------------------------------------------------------

class AugmentParams(NamedTuple):
    """Everything an :class:`Augmenter` call drew, enough to replay it (:meth:`Augmenter.apply`).

    Output row r (of ``copies * M``) is copy ``copy[r]`` of image ``source[r]``.

    Attributes:
        source: int64 (R,) image of each output row (an index into the ``images`` passed).
        copy: int64 (R,) which of the ``copies`` it is.
        ops: int32 (R, L) op ids into :data:`OPS`, L = :attr:`Augmenter.ops_per_row`.
        magnitudes: float32 (R, L) in the op's unit (:data:`OPS`).
        offsets: int64 (R, 2) crop ``(top, left)`` in [0, 2·padding], or None (no crop/flip).
        flips: bool (R,) horizontal flips, or None.
    """

    source: torch.Tensor
    copy: torch.Tensor
    ops: torch.Tensor
    magnitudes: torch.Tensor
    offsets: Optional[torch.Tensor]
    flips: Optional[torch.Tensor]

    def to(self, device) -> "AugmentParams":
        return AugmentParams(*(None if t is None else t.to(device) for t in self))


class Augmenter:
    """A strong augmentation policy with per-sample parameters, plus crop/flip and
    normalisation, fused.

    Each call draws, for every output row, the ops and magnitudes of ``policy`` exactly as
    torchvision 0.29's v2 transform draws them for one image (see
    :mod:`coreaug_fast.policy_sampler`; the tables are :mod:`coreaug_fast.policies`):

    * ``"randaugment"`` (the default): ``num_ops`` ops uniformly (with replacement) from
      :attr:`SPACE` (torchvision's RandAugment space: :data:`OPS` without Invert), each at bin
      ``magnitude`` of ``num_magnitude_bins`` (see :func:`randaugment_magnitudes`), negated
      with probability 1/2 for the signed ops (shear, translate, rotate, brightness, color,
      contrast, sharpness);
    * ``"autoaugment-imagenet"``, ``"autoaugment-cifar10"``, ``"autoaugment-svhn"``:
      ``AutoAugment(AutoAugmentPolicy.IMAGENET / CIFAR10 / SVHN)``: one of 25 sub-policies,
      each of its two steps applied with its probability (Identity with magnitude 0 when not);
    * ``"trivialaugment"``: ``TrivialAugmentWide(num_magnitude_bins)``: one op from
      :attr:`SPACE` at a bin drawn uniformly, from its own wider magnitude table;

    then, if ``padding > 0`` or ``flip``, a crop offset uniform in [0, 2·padding]² and a flip
    with probability 1/2. The image is processed as ``RandomCrop(padding) ->
    RandomHorizontalFlip -> policy -> ToDtype(scale=True) -> Normalize(mean, std)`` would, in
    one launch.

    Calling ``aug(images, index=None, generator=None)`` returns ``copies * M`` rows,
    copy-major: row ``k * M + i`` is copy k of image ``index[i]`` (so per-image weights align
    with ``weights.repeat(copies)``). The drawn parameters are kept in :attr:`last_params` and
    can be replayed with :meth:`apply`.

    Args:
        num_ops: RandAugment ops per copy, 0..16 (default 2); ``"randaugment"`` only.
        magnitude: RandAugment magnitude bin, in [0, num_magnitude_bins) (default 9);
            ``"randaugment"`` only.
        num_magnitude_bins: >= 2 (default 31); ``"randaugment"`` and ``"trivialaugment"``.
        copies: augmented copies per selected image, >= 1.
        padding: crop padding (0 = no crop).
        flip: random horizontal flips (a bool or NumPy bool).
        mean, std: optional per-channel (or scalar) normalisation of x/255; need a floating
            ``out_dtype``. The normalised value of every uint8 value, computed as the op does
            (``(float32(v) * float32(1/255) - mean) / std`` in float32, then cast to
            ``out_dtype``), must be finite: so |std| is at least the smallest normal float32
            (1.18e-38, which is enough for float32 and bfloat16 outputs) and, for float16,
            large enough that ``max(|0 - mean|, |1 - mean|) / |std|`` rounds below 65520.
        out_dtype: float32, float16, bfloat16 (``x/255``, then normalised) or uint8 (raw).
        fill: fill of geometric ops (int or per-channel ints), as :func:`apply_augment`.
        policy: one of :data:`~coreaug_fast.policies.POLICIES`. An argument the policy does
            not take (``num_ops`` with an AutoAugment policy, say) is an error.
    """

    SPACE = tuple(name for name in OPS if name != "Invert")
    SIGNED = SIGNED

    def __init__(self, num_ops: Optional[int] = None, magnitude: Optional[int] = None,
                 num_magnitude_bins: Optional[int] = None, copies: int = 4, padding: int = 4, flip: bool = True,
                 mean: "Optional[Sequence[float] | float]" = None,
                 std: "Optional[Sequence[float] | float]" = None,
                 out_dtype: torch.dtype = torch.float32, fill: "Union[int, Sequence[int], None]" = 0, *,
                 policy: str = "randaugment") -> None:
        sampler = make_sampler(policy, num_ops, magnitude, num_magnitude_bins)
        copies = checks.check_int("copies", copies, low=1, high=MAX_COPIES)
        padding = augment_checks.check_padding(padding)
        flip = checks.check_bool("flip", flip)
        self.mean, self.std = augment_checks.normalisation(mean, std, out_dtype)
        self.policy = sampler.policy
        self.num_ops = getattr(sampler, "ops_per_row", None) if self.policy == "randaugment" else None
        self.magnitude = getattr(sampler, "magnitude", None)
        self.num_magnitude_bins = getattr(sampler, "num_magnitude_bins", None)
        self.copies, self.padding, self.flip = copies, padding, flip
        self.out_dtype = out_dtype
        self.fill = fill
        self.last_params: Optional[AugmentParams] = None
        self._sampler = sampler
        self._tables: dict = {}  # (height, width, device) -> the sampler's tables there

    def __repr__(self) -> str:
        settings = {"randaugment": f"num_ops={self.num_ops}, magnitude={self.magnitude}, "
                                   f"num_magnitude_bins={self.num_magnitude_bins}, ",
                    "trivialaugment": f"num_magnitude_bins={self.num_magnitude_bins}, "}.get(self.policy, "")
        policy = "" if self.policy == "randaugment" else f"policy={self.policy!r}, "
        return (f"Augmenter({policy}{settings}copies={self.copies}, "
                f"padding={self.padding}, flip={self.flip}, out_dtype={self.out_dtype})")

    @property
    def ops_per_row(self) -> int:
        """L, the columns of the drawn ``ops``: ``num_ops`` for RandAugment, 2 for
        AutoAugment (a step not applied is Identity), 1 for TrivialAugment."""
        return self._sampler.ops_per_row

    @property
    def crops(self) -> bool:
        """Whether rows get the crop/flip step."""
        return self.padding > 0 or self.flip

    def _draw(self, rows: int, height: int, width: int, generator: Optional[torch.Generator]):
        """(ops, magnitudes, offsets, flips) for ``rows`` rows, on the generator's device."""
        device = generator.device if generator is not None else torch.device("cpu")
        key = (height, width, str(device))
        if key not in self._tables:
            tables = self._sampler.tables(height, width)
            self._tables[key] = {k: to_device_async(t, device) for k, t in tables.items()}
        ops, mags = self._sampler.draw(self._tables[key], rows, generator, device)
        offsets = flips = None
        if self.crops:
            offsets = torch.randint(0, 2 * self.padding + 1, (rows, 2), generator=generator, device=device)
            if self.flip:
                flips = torch.randint(0, 2, (rows,), generator=generator, device=device).bool()
            else:
                flips = torch.zeros(rows, dtype=torch.bool, device=device)
        return ops.int(), mags.float(), offsets, flips

    def sample(self, source: torch.Tensor, height: int, width: int,
               generator: Optional[torch.Generator] = None) -> AugmentParams:
        """Draw parameters for ``copies`` copies of each image in ``source`` (integer (M,)),
        for images of ``height`` x ``width`` pixels (positive ints: translations scale with
        them).

        Draws on the generator's device (CPU for the default generator), in this order: the
        policy's draws (see :mod:`coreaug_fast.policy_sampler`; for RandAugment op choices
        (R, num_ops), then sign bits (R, num_ops)), crop offsets (R, 2), flip bits (R,),
        with R = copies * M; the returned tensors are on that device.
        """
        checks.check_tensor("source", source, dim=1, integer=True)
        height = checks.check_int("height", height, low=1)
        width = checks.check_int("width", width, low=1)
        checks.check_generator("generator", generator, cpu_or_cuda=True)
        device = generator.device if generator is not None else torch.device("cpu")
        m = source.shape[0]
        ops, mags, offsets, flips = self._draw(self.copies * m, height, width, generator)
        src = source.to(device=device, dtype=torch.long)
        return AugmentParams(
            source=src.repeat(self.copies),
            copy=torch.arange(self.copies, device=device).repeat_interleave(m),
            ops=ops, magnitudes=mags, offsets=offsets, flips=flips)

    def __call__(self, images: torch.Tensor, index: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None, *, check: bool = True) -> torch.Tensor:
        """Augment images ``index`` (default: all) of ``images``.

        Args:
            images: uint8 (N, C, H, W), C = 1 or 3, CPU or CUDA.
            index: optional integer (M,) images to augment, in [0, N).
            generator: torch.Generator for the parameters (CPU or the images' CUDA device);
                default: torch's global CPU generator. With a CUDA generator nothing is
                drawn on the host; parameters drawn on the host reach the GPU through
                pinned memory, asynchronously. Either way the call does not wait for the GPU.
            check: check the values of ``index`` (one host synchronisation on a GPU).
                ``False`` skips it: a row whose index is outside [0, N) comes out all zeros
                on the GPU (the CPU op checks indices itself and raises).
                The drawn parameters are valid by construction and never checked.

        Returns:
            (copies·M, C, H, W) in ``out_dtype`` on the images' device; row ``k·M + i`` is
            copy k of image ``index[i]``. The parameters, on the images' device, are in
            :attr:`last_params`.
        """
        index = self._call_rows(images, index, generator, check)
        device = images.device
        m = index.shape[0]
        drawn = self._draw(self.copies * m, images.shape[2], images.shape[3], generator)
        ops, mags, offsets, flips = (to_device_async(t, device) for t in drawn)
        params = AugmentParams(source=index.long().repeat(self.copies),
                               copy=torch.arange(self.copies, device=device).repeat_interleave(m),
                               ops=ops, magnitudes=mags, offsets=offsets, flips=flips)
        self.last_params = params
        crop = None if offsets is None else torch.cat([offsets.long(), flips.long()[:, None]], 1)
        return self._run(images, params, crop)

    @staticmethod
    def _call_rows(images, index, generator, check: bool) -> torch.Tensor:
        """A call's checked arguments; the rows' images as an index on the images' device
        (every image, in order, when ``index`` is None)."""
        checks.check_images("images", images)
        if index is not None:
            checks.check_tensor("index", index, dim=1, integer=True)
        checks.check_same_device(images=images, index=index)
        checks.check_generator("generator", generator, cpu_or_cuda=True)
        if index is None:
            return torch.arange(images.shape[0], device=images.device)
        augment_checks.check_index(index, images.shape[0], None, check)
        return index

    def batch(self, images: torch.Tensor, weak: int, index: Optional[torch.Tensor] = None,
              generator: Optional[torch.Generator] = None, *, check: bool = True) -> torch.Tensor:
        """One training batch in one launch: its first ``weak`` rows weakly augmented (crop
        and flip only) and the rest strong copies (the policy, then crop and flip), all
        normalised alike (``mean``, ``std``, ``out_dtype``).

        Row m reads image ``index[m]`` (image m when ``index`` is None); each strong row is
        one copy (``copies`` does not apply). Draws on the generator's device, in this order:
        the weak rows' crop offsets (weak, 2), uniform in [0, 2·padding], and flips
        (uniform < 1/2, when ``flip``); then the strong rows' parameters as :meth:`sample`
        draws them. :attr:`last_params` then holds every row's (the weak rows with Identity
        ops); a weak row equals :func:`crop_flip` of its image at its offset and flip.

        Args:
            images: uint8 (N, C, H, W), C = 1 or 3.
            weak: the number of weak rows, in [0, M].
            index: optional integer (M,) images of the rows, in [0, N).
            generator: as in a call.
            check: check the values of ``index`` (one host synchronisation on a GPU).

        Returns:
            (M, C, H, W) in ``out_dtype`` on the images' device.
        """
        index = self._call_rows(images, index, generator, check)
        device = images.device
        rows = index.shape[0]
        weak = checks.check_int("weak", weak, low=0, high=rows)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        strong = rows - weak
        parts = []
        if weak:
            offsets = torch.randint(2 * self.padding + 1, (weak, 2), generator=generator, device=gen_device)
            flips = (torch.rand(weak, generator=generator, device=gen_device) < 0.5) & self.flip
            width = self._sampler.ops_per_row
            parts.append((torch.zeros(weak, width, dtype=torch.int32, device=gen_device),
                          torch.zeros(weak, width, dtype=torch.float32, device=gen_device), offsets, flips))
        if strong:
            ops, mags, offsets, flips = self._draw(strong, images.shape[2], images.shape[3], generator)
            if offsets is None:  # no crop, no flip: the identity crop, so both parts share one launch
                offsets = torch.zeros(strong, 2, dtype=torch.long, device=gen_device)
                flips = torch.zeros(strong, dtype=torch.bool, device=gen_device)
            parts.append((ops, mags, offsets, flips))
        if not parts:  # no rows: empty parameters, so last_params never replays an older call
            width = self._sampler.ops_per_row
            parts.append((torch.zeros(0, width, dtype=torch.int32), torch.zeros(0, width),
                          torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, dtype=torch.bool)))
        ops, mags, offsets, flips = (to_device_async(torch.cat(t) if len(t) > 1 else t[0], device)
                                     for t in zip(*parts))
        params = AugmentParams(source=index.long(), copy=torch.zeros(rows, dtype=torch.long, device=device),
                               ops=ops, magnitudes=mags, offsets=offsets, flips=flips)
        self.last_params = params
        if not rows:
            return images.new_empty((0,) + tuple(images.shape[1:]), dtype=self.out_dtype)
        return self._run(images, params, torch.cat([offsets, flips.long()[:, None]], 1))

    def apply(self, images: torch.Tensor, params: AugmentParams) -> torch.Tensor:
        """Replay ``params`` (from :attr:`last_params` or :meth:`sample`) on ``images``."""
        checks.check_images("images", images)
        if not isinstance(params, AugmentParams):
            raise ValueError(f"params must be an AugmentParams, got {type(params).__name__}")
        params = params.to(images.device)
        augment_checks.check_ops(params.ops, params.magnitudes, prefix="params.")
        augment_checks.check_index(params.source, images.shape[0], params.ops.shape[0], name="params.source")
        if (params.offsets is None) != (params.flips is None):
            raise ValueError("params.offsets and params.flips must both be set or both be None")
        crop = None
        if params.offsets is not None:
            crop = augment_checks.crop_tensor(params.offsets, params.flips, self.padding, params.ops.shape[0],
                                              images.device, prefix="params.")
        return self._run(images, params, crop)

    def _run(self, images: torch.Tensor, params: AugmentParams, crop: Optional[torch.Tensor]) -> torch.Tensor:
        fill_values = augment_checks.fill_values(self.fill, images.shape[1])
        augment_checks.check_stats_channels(self.mean, self.std, images.shape[1])
        _ext.require_extension("Augmenter")
        out_dtype = None if self.out_dtype == torch.uint8 else self.out_dtype
        return torch.ops.coreaug.augment(
            images, params.ops.int().contiguous(), params.magnitudes.float().contiguous(),
            params.source.long().contiguous(), None if crop is None else crop.contiguous(), self.padding,
            fill_values, out_dtype, self.mean, self.std)


if _ext.available():

    @torch.library.register_fake("coreaug::augment")
    def _(images, ops, magnitudes, index, crop, padding, fill, out_dtype, mean, std):
        torch._check(images.dim() == 4, lambda: "images must be (N, C, H, W)")
        torch._check(ops.dim() == 2 and ops.shape == magnitudes.shape, lambda: "ops/magnitudes must be (M, L)")
        if index is not None:
            torch._check(index.shape[0] == ops.shape[0], lambda: "index must have M rows")
        n, c, h, w = images.shape
        dtype = torch.uint8 if out_dtype is None else out_dtype
        return images.new_empty((ops.shape[0], c, h, w), dtype=dtype)
