"""augment: the fused op against torchvision.transforms.v2.functional applied op by op
(coreaug_fast.reference.augment), the Augmenter's sampling, and bad input."""
import math

import pytest
import torch

from conftest import requires_gpu

import coreaug_fast
from coreaug_fast import OPS, Augmenter, AugmentParams, apply_augment, crop_flip
from coreaug_fast.augment import randaugment_magnitudes
from coreaug_fast.reference import apply_augment_reference, augmenter_reference, crop_flip_reference

GEOMETRIC = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}
# Geometric ops may differ from torchvision by one nearest-neighbour step at a few pixels
# (float rounding ties); none are seen on CPU. Pixel ops must match exactly.
GEOMETRIC_MAX_DIFFERING = 0.01


def _images(n, c, h, w, g, device):
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    x[: max(1, n // 4)] = x[: max(1, n // 4)] // 6 + 90  # low-contrast images: autocontrast/equalize matter
    return x.to(device)


def _magnitudes(ops, g, h, w):
    """Valid magnitudes for each op, over wider ranges than RandAugment draws."""
    m = torch.rand(ops.shape, generator=g) * 1.8 - 0.9
    names = [OPS[o] for o in ops.flatten().tolist()]
    flat = m.flatten()
    for k, name in enumerate(names):
        u = float(torch.rand((), generator=g))
        if name in ("TranslateX", "TranslateY"):
            flat[k] = (u * 2 - 1) * 0.6 * (w if name == "TranslateX" else h)
        elif name == "Rotate":
            flat[k] = 90.0 * int(u * 9 - 4) if u < 0.15 else (u * 2 - 1) * 180
        elif name in ("ShearX", "ShearY"):
            flat[k] = (u * 2 - 1) * 1.5
        elif name == "Posterize":
            flat[k] = int(u * 9)
        elif name == "Solarize":
            flat[k] = min(u * 300 - 40, 255.0)
    return flat.reshape(ops.shape)


def _compare(out, ref, ops):
    """Exact unless the rows hold geometric ops; then at most 1% of pixels differ."""
    assert out.dtype == ref.dtype and out.shape == ref.shape
    out = out.cpu()
    for m in range(ops.shape[0]):
        names = {OPS[o] for o in ops[m].tolist()}
        differing = (out[m] != ref[m]).any(0).float().mean().item()
        if names & GEOMETRIC:
            assert differing <= GEOMETRIC_MAX_DIFFERING, (m, sorted(names), differing)
        else:
            assert differing == 0, (m, sorted(names), differing)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("c,h,w", [(3, 32, 32), (1, 17, 23)])
def test_each_op_matches_torchvision(device, op, c, h, w):
    g = torch.Generator().manual_seed(OPS.index(op) * 7 + c)
    images = _images(8, c, h, w, g, "cpu")
    ops = torch.full((8, 1), OPS.index(op), dtype=torch.int32)
    mags = _magnitudes(ops, g, h, w)
    out = apply_augment(images.to(device), ops.to(device), mags.to(device))
    assert out.device.type == device
    _compare(out, apply_augment_reference(images, ops, mags), ops)


@pytest.mark.parametrize("c,h,w,num_ops", [(3, 32, 32, 2), (3, 24, 31, 3), (1, 16, 16, 4), (3, 5, 4, 2)])
def test_chains_with_crop_fill_and_index_match_torchvision(device, c, h, w, num_ops):
    g = torch.Generator().manual_seed(100 * c + h + num_ops)
    images = _images(10, c, h, w, g, "cpu")
    m = 40
    ops = torch.randint(0, len(OPS), (m, num_ops), generator=g, dtype=torch.int32)
    mags = _magnitudes(ops, g, h, w)
    index = torch.randint(0, 10, (m,), generator=g)
    fill = [int(v) for v in torch.randint(0, 256, (c,), generator=g)]
    out = apply_augment(images.to(device), ops.to(device), mags.to(device), index=index.to(device), fill=fill)
    _compare(out, apply_augment_reference(images, ops, mags, index=index, fill=fill), ops)

    # the same rows after a crop/flip, through the Augmenter's replay path
    offsets = torch.randint(0, 9, (m, 2), generator=g)
    flips = torch.rand(m, generator=g) < 0.5
    aug = Augmenter(num_ops=num_ops, copies=1, padding=4, out_dtype=torch.uint8, fill=fill)
    params = AugmentParams(index, torch.zeros_like(index), ops, mags, offsets, flips)
    out = aug.apply(images.to(device), params)
    ref = apply_augment_reference(images, ops, mags, index=index, fill=fill, offsets=offsets, flips=flips, padding=4)
    _compare(out, ref, ops)


def test_sharpness_between_other_ops_matches_torchvision(device):
    # Sharpness after another op needs that op's output stored; several of them ping-pong.
    g = torch.Generator().manual_seed(5)
    images = _images(4, 3, 20, 26, g, "cpu")
    names = [("Sharpness", "Sharpness", "Sharpness"), ("Rotate", "Sharpness", "Equalize"),
             ("Color", "Sharpness", "TranslateX"), ("Sharpness", "AutoContrast", "Sharpness")]
    ops = torch.tensor([[OPS.index(n) for n in row] for row in names], dtype=torch.int32)
    mags = torch.tensor([[0.9, -0.7, 0.8], [23.0, 0.9, 0.0], [0.5, -0.9, 7.0], [0.9, 0.0, 0.6]])
    offsets, flips = torch.tensor([[1, 7], [4, 4], [8, 0], [0, 3]]), torch.tensor([True, False, True, False])
    aug = Augmenter(num_ops=3, copies=1, out_dtype=torch.uint8)
    params = AugmentParams(torch.arange(4), torch.zeros(4, dtype=torch.long), ops, mags, offsets, flips)
    ref = apply_augment_reference(images, ops, mags, index=torch.arange(4), offsets=offsets, flips=flips)
    _compare(aug.apply(images.to(device), params), ref, ops)
    _compare(apply_augment(images.to(device), ops.to(device), mags.to(device)), apply_augment_reference(images, ops, mags), ops)


def test_fill_of_an_intermediate_op_survives_later_ops(device):
    # Shifting right then back left leaves the right band filled, as sequential torchvision
    # calls do; multiplying the two affine matrices would wrongly give the identity. The
    # fill then goes through Invert like any pixel.
    g = torch.Generator().manual_seed(0)
    images = _images(2, 3, 12, 16, g, device)
    ops = torch.tensor([[3, 3], [3, 3]], dtype=torch.int32, device=device)
    mags = torch.tensor([[5.0, -5.0], [5.0, -5.0]], device=device)
    out = apply_augment(images, ops, mags, fill=[10, 20, 30])
    expected = images.clone()
    expected[:, :, :, -5:] = torch.tensor([10, 20, 30], dtype=torch.uint8, device=device)[:, None, None]
    assert torch.equal(out, expected)
    inv = apply_augment(images, torch.tensor([[3, 14]] * 2, dtype=torch.int32, device=device),
                        torch.tensor([[5.0, 0.0]] * 2, device=device), fill=7)
    assert bool((inv[:, :, :, :5] == 255 - 7).all())


@pytest.mark.parametrize("angle,k", [(90.0, 1), (180.0, 2), (-90.0, 3), (270.0, 3), (360.0, 0), (-720.0, 0)])
def test_rotate_by_right_angles_is_exact(device, angle, k):
    g = torch.Generator().manual_seed(1)
    images = _images(3, 3, 14, 14, g, device)
    out = apply_augment(images, torch.full((3, 1), 5, dtype=torch.int32, device=device),
                        torch.full((3, 1), angle, device=device))
    assert torch.equal(out, torch.rot90(images, k=k, dims=(-2, -1)))


def test_identity_and_no_ops_gather_by_index(device):
    g = torch.Generator().manual_seed(2)
    images = _images(5, 3, 9, 7, g, device)
    index = torch.tensor([4, 0, 0, 2], device=device)
    out = apply_augment(images, torch.zeros(4, 0, dtype=torch.int32, device=device), torch.zeros(4, 0, device=device), index=index)
    assert torch.equal(out, images[index])
    out = apply_augment(images, torch.zeros(4, 3, dtype=torch.int32, device=device), torch.zeros(4, 3, device=device), index=index)
    assert torch.equal(out, images[index])
    empty = apply_augment(images, torch.zeros(0, 2, dtype=torch.int32, device=device), torch.zeros(0, 2, device=device),
                          index=torch.zeros(0, dtype=torch.long, device=device))
    assert empty.shape == (0, 3, 9, 7)


def test_non_contiguous_images_and_int64_ops(device):
    g = torch.Generator().manual_seed(3)
    images = _images(4, 3, 16, 16, g, "cpu")
    view = images.to(memory_format=torch.channels_last).to(device)
    ops = torch.randint(0, len(OPS), (4, 2), generator=g)
    mags = _magnitudes(ops, g, 16, 16).double()
    _compare(apply_augment(view, ops.to(device), mags.to(device)), apply_augment_reference(images, ops, mags.float()), ops)


@pytest.mark.parametrize("padding", [0, 2, 4, 20])
def test_crop_flip_matches_torchvision_random_crop_and_flip(device, padding):
    g = torch.Generator().manual_seed(padding)
    images = _images(6, 3, 11, 13, g, "cpu")
    offsets = torch.randint(0, 2 * padding + 1, (9, 2), generator=g)
    flips = torch.rand(9, generator=g) < 0.5
    index = torch.randint(0, 6, (9,), generator=g)
    out = crop_flip(images.to(device), offsets.to(device), flips.to(device), padding=padding, index=index.to(device))
    ref = crop_flip_reference(images, offsets, flips, padding=padding, index=index)
    assert torch.equal(out.cpu(), ref)
    # independent check of one row: zero-padded window, mirrored
    top, left = offsets[0].tolist()
    padded = torch.nn.functional.pad(images[index[0]], [padding] * 4)
    window = padded[:, top:top + 11, left:left + 13]
    assert torch.equal(out[0].cpu(), window.flip(-1) if flips[0] else window)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float16, torch.bfloat16, torch.uint8])
def test_augmenter_output_matches_reference_pipeline(device, out_dtype):
    g = torch.Generator().manual_seed(11)
    images = _images(12, 3, 32, 32, g, "cpu")
    norm = {} if out_dtype == torch.uint8 else {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}
    aug = Augmenter(num_ops=2, magnitude=9, copies=3, padding=4, out_dtype=out_dtype, **norm)
    index = torch.tensor([3, 0, 7, 7, 11])
    out = aug(images.to(device), index=index.to(device), generator=torch.Generator().manual_seed(0))
    assert out.shape == (15, 3, 32, 32) and out.dtype == out_dtype and out.device.type == device
    ref = augmenter_reference(aug, images, aug.last_params)
    differing = (out.cpu() != ref).any(1).float().mean().item()
    assert differing <= GEOMETRIC_MAX_DIFFERING


def test_augmenter_rows_are_copy_major_and_replayable(device):
    g = torch.Generator().manual_seed(12)
    images = _images(6, 3, 16, 16, g, device)
    aug = Augmenter(copies=4, mean=0.5, std=0.25)
    index = torch.tensor([5, 1, 2], device=device)
    out = aug(images, index=index, generator=torch.Generator().manual_seed(7))
    p = aug.last_params
    assert torch.equal(p.source.cpu(), index.cpu().repeat(4))
    assert torch.equal(p.copy.cpu(), torch.arange(4).repeat_interleave(3))
    assert torch.equal(aug.apply(images, p), out)
    # row k*M + i is image index[i] with its own params, through the public op
    rows = crop_flip(images, p.offsets.to(device), p.flips.to(device), padding=4, index=p.source.to(device))
    rows = apply_augment(rows, p.ops.to(device), p.magnitudes.to(device))
    assert torch.equal(out, (rows.float() * (1.0 / 255) - 0.5) / 0.25)
    # the same seed replays, another seed does not
    again = aug(images, index=index, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again, out)
    other = aug(images, index=index, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other, out)


def test_augmenter_without_crop_or_flip(device):
    images = _images(3, 1, 8, 8, torch.Generator().manual_seed(0), device)
    aug = Augmenter(num_ops=1, copies=2, padding=0, flip=False, out_dtype=torch.uint8)
    out = aug(images, generator=torch.Generator().manual_seed(1))
    p = aug.last_params
    assert p.offsets is None and p.flips is None
    assert torch.equal(out, apply_augment(images, p.ops.to(device), p.magnitudes.to(device), index=p.source.to(device)))


@requires_gpu
@pytest.mark.parametrize("out_dtype", [torch.uint8, torch.float32, torch.bfloat16])
def test_cuda_op_matches_cpu_op(out_dtype):
    # Same compiled steps and pinned float rounding on both sides; only the double-precision
    # trig of the geometric matrices (CUDA's vs glibc's, within an ulp) could ever differ.
    g = torch.Generator().manual_seed(21)
    images = _images(16, 3, 40, 36, g, "cpu")
    ops = torch.randint(0, len(OPS), (64, 3), generator=g, dtype=torch.int32)
    mags = _magnitudes(ops, g, 40, 36)
    index = torch.randint(0, 16, (64,), generator=g)
    crop = torch.cat([torch.randint(0, 9, (64, 2), generator=g), torch.randint(0, 2, (64, 1), generator=g)], 1)
    norm = (None, None) if out_dtype == torch.uint8 else ([0.4, 0.5, 0.6], [0.2, 0.3, 0.25])
    dt = None if out_dtype == torch.uint8 else out_dtype
    args = (ops, mags, index, crop, 4, [3, 2, 1], dt) + norm
    cpu = torch.ops.coreaug.augment(images, *args)
    cuda = torch.ops.coreaug.augment(images.cuda(), *(a.cuda() if isinstance(a, torch.Tensor) else a for a in args))
    assert (cuda.cpu() != cpu).any(1).float().mean().item() <= 1e-3
    pixel_rows = ~torch.isin(ops, torch.tensor([OPS.index(n) for n in GEOMETRIC], dtype=torch.int32)).any(1)
    assert torch.equal(cuda.cpu()[pixel_rows], cpu[pixel_rows])


# ---- the sampled distributions -------------------------------------------------------------

def test_magnitude_table_is_torchvisions():
    from torchvision.transforms.v2 import RandAugment

    for magnitude, bins, h, w in [(9, 31, 32, 32), (0, 31, 32, 32), (30, 31, 224, 160), (5, 10, 17, 40)]:
        table = randaugment_magnitudes(magnitude, bins, h, w)
        for name, (fn, signed) in RandAugment._AUGMENTATION_SPACE.items():
            values = fn(bins, h, w)
            expected = 0.0 if values is None else float(values[magnitude])
            if name == "Solarize":
                expected *= 255.0
            assert table[OPS.index(name)].item() == pytest.approx(expected, rel=1e-6, abs=1e-6), name
    assert set(Augmenter.SPACE) == set(RandAugment._AUGMENTATION_SPACE)
    assert {n for n in OPS if RandAugment._AUGMENTATION_SPACE.get(n, (None, False))[1]} == set(Augmenter.SIGNED)


def test_sampled_ops_signs_and_crops_have_the_right_distribution():
    aug = Augmenter(num_ops=3, magnitude=9, copies=4, padding=4)
    source = torch.arange(12_500)
    p = aug.sample(source, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = 4 * 12_500
    assert p.ops.shape == (rows, 3) and p.ops.dtype == torch.int32 and p.magnitudes.dtype == torch.float32
    counts = torch.bincount(p.ops.flatten().long(), minlength=len(OPS)).float()
    assert counts[OPS.index("Invert")] == 0
    expected = 3 * rows / len(Augmenter.SPACE)
    space = torch.tensor([OPS.index(n) for n in Augmenter.SPACE])
    # each frequency within 4 standard deviations of uniform
    assert ((counts[space] - expected).abs() < 4 * math.sqrt(expected)).all(), counts
    table = randaugment_magnitudes(9, 31, 32, 32)
    for name in Augmenter.SPACE:
        k = OPS.index(name)
        mags = p.magnitudes[p.ops == k]
        assert torch.equal(mags.abs(), table[k].abs().expand_as(mags)), name
        if name in Augmenter.SIGNED:
            negative = (mags < 0).float().mean().item()
            assert abs(negative - 0.5) < 4 * math.sqrt(0.25 / mags.numel()), (name, negative)
        else:
            assert bool((mags >= 0).all()), name
    assert p.offsets.min() == 0 and p.offsets.max() == 8
    offset_counts = torch.bincount(p.offsets.flatten(), minlength=9).float()
    assert ((offset_counts - 2 * rows / 9).abs() < 4 * math.sqrt(2 * rows / 9)).all()
    assert abs(p.flips.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / rows)


def test_sampling_is_deterministic_per_generator():
    aug = Augmenter()
    a = aug.sample(torch.arange(50), 32, 32, generator=torch.Generator().manual_seed(3))
    b = aug.sample(torch.arange(50), 32, 32, generator=torch.Generator().manual_seed(3))
    c = aug.sample(torch.arange(50), 32, 32, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.ops, c.ops)


# ---- bad input ------------------------------------------------------------------------------

def _ok():
    return torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4, 2, dtype=torch.int32), torch.zeros(4, 2)


@pytest.mark.parametrize("change,match", [
    (lambda x, o, m: (x.float(), o, m), "images must be uint8"),
    (lambda x, o, m: (x[:, :2], o, m), "1 or 3 channels"),
    (lambda x, o, m: (torch.zeros(4, 4, 8, 8, dtype=torch.uint8), o, m), "1 or 3 channels"),
    (lambda x, o, m: (x[0], o, m), "images must have 4 dimensions"),
    (lambda x, o, m: (x, o + 15, m), r"ops has value 15, outside \[0, 15\)"),
    (lambda x, o, m: (x, o - 1, m), r"ops has value -1"),
    (lambda x, o, m: (x, o.float(), m), "ops must be an integer"),
    (lambda x, o, m: (x, o, m[:, :1]), "one shape"),
    (lambda x, o, m: (x, o, m.int()), "magnitudes must be a floating"),
    (lambda x, o, m: (x, o, torch.full_like(m, float("nan"))), "NaN or inf"),
    (lambda x, o, m: (x, o, torch.full_like(m, float("inf"))), "NaN or inf"),
    (lambda x, o, m: (x, o + 6, m - 1.5), "factor 1 \\+ m >= 0"),
    (lambda x, o, m: (x, o + 10, m + 9), "Posterize"),
    (lambda x, o, m: (x, o + 10, m - 1), "Posterize"),
    (lambda x, o, m: (x, o + 11, m + 256), "Solarize"),
    (lambda x, o, m: (x, torch.zeros(4, 17, dtype=torch.int32), torch.zeros(4, 17)), "at most 16 ops"),
    (lambda x, o, m: (x, o[:3], m[:3]), "one row per image"),
    (lambda x, o, m: (x, o.to("meta"), m.to("meta")), "one device"),
])
def test_bad_input_raises_value_error(change, match):
    with pytest.raises(ValueError, match=match):
        apply_augment(*change(*_ok()))


@pytest.mark.parametrize("kwargs,match", [
    ({"index": torch.tensor([0, 1, 2, 4])}, r"index has value 4, outside \[0, 4\)"),
    ({"index": torch.tensor([0, -1, 2, 3])}, "index has value -1"),
    ({"index": torch.tensor([0, 1])}, "index has 2 rows, expected 4"),
    ({"index": torch.zeros(4)}, "index must be an integer"),
    ({"fill": 256}, r"fill values must lie in \[0, 255\]"),
    ({"fill": [1, 2]}, "fill must be an int or 3 ints"),
    ({"fill": 1.5}, "fill must be an int"),
    ({"interpolation": "bilinear"}, "interpolation must be one of"),
])
def test_bad_keyword_raises_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        apply_augment(*_ok(), **kwargs)


@pytest.mark.parametrize("offsets,flips,padding,match", [
    (torch.zeros(4, 2, dtype=torch.long) + 9, torch.zeros(4, dtype=torch.bool), 4, r"offsets has value 9, outside \[0, 9\)"),
    (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.bool), 4, r"offsets must be \(M, 2\)"),
    (torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool), 4, "offsets must be an integer"),
    (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4), 4, "flips must be bool"),
    (torch.zeros(4, 2, dtype=torch.long), torch.full((4,), 2), 4, "flips has value 2"),
    (torch.zeros(4, 2, dtype=torch.long), torch.zeros(3, dtype=torch.bool), 4, "flips has 3 rows"),
    (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.bool), -1, "padding must be an int >= 0"),
    (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.bool, device="meta"), 4, "one device"),
])
def test_crop_flip_bad_input_raises_value_error(offsets, flips, padding, match):
    with pytest.raises(ValueError, match=match):
        crop_flip(_ok()[0], offsets, flips, padding=padding)


@pytest.mark.parametrize("kwargs,match", [
    ({"num_ops": -1}, "num_ops"), ({"num_ops": 17}, "num_ops"), ({"magnitude": 31}, "magnitude"),
    ({"num_magnitude_bins": 1}, "num_magnitude_bins"), ({"copies": 0}, "copies"), ({"padding": -2}, "padding"),
    ({"out_dtype": torch.int32}, "out_dtype"), ({"std": [0.2, 0.0, 0.3]}, "std must be nonzero"),
    ({"mean": 0.5, "out_dtype": torch.uint8}, "floating out_dtype"), ({"mean": float("nan")}, "finite"),
])
def test_augmenter_bad_arguments_raise_value_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmenter(**kwargs)


def test_augmenter_bad_call_raises_value_error():
    aug = Augmenter(mean=[0.5, 0.5], std=[0.2, 0.2])
    images = _ok()[0]
    with pytest.raises(ValueError, match=r"index has value 4"):
        aug(images, index=torch.tensor([4]))
    with pytest.raises(ValueError, match="mean has 2 values for 3 channels"):
        aug(images)
    with pytest.raises(ValueError, match="images must be uint8"):
        aug(images.float())


def test_raw_op_rejects_bad_ids_and_index_on_cpu():
    x, o, m = _ok()
    with pytest.raises(RuntimeError, match="not an op id"):
        torch.ops.coreaug.augment(x, o + 20, m, None, None, 0, [0], None, None, None)
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.coreaug.augment(x, o, m, torch.tensor([0, 1, 2, 9]), None, 0, [0], None, None, None)


# ---- the op as a torch op -------------------------------------------------------------------

def test_opcheck(device):
    g = torch.Generator().manual_seed(9)
    images = _images(5, 3, 10, 12, g, device)
    ops = torch.randint(0, len(OPS), (7, 2), generator=g, dtype=torch.int32)
    mags = _magnitudes(ops, g, 10, 12)
    index = torch.randint(0, 5, (7,), generator=g)
    crop = torch.cat([torch.randint(0, 9, (7, 2), generator=g), torch.randint(0, 2, (7, 1), generator=g)], 1)
    args = (images, ops.to(device), mags.to(device), index.to(device), crop.to(device), 4, [1, 2, 3])
    op = torch.ops.coreaug.augment.default
    torch.library.opcheck(op, args + (None, None, None))
    torch.library.opcheck(op, args + (torch.float32, [0.5, 0.4, 0.3], [0.2, 0.2, 0.3]))


def test_torch_compile_traces_the_op():
    g = torch.Generator().manual_seed(10)
    images = _images(4, 3, 8, 8, g, "cpu")
    ops = torch.randint(0, len(OPS), (4, 2), generator=g, dtype=torch.int32)
    mags = _magnitudes(ops, g, 8, 8)

    @torch.compile(backend="eager", fullgraph=True)
    def f(x, o, m):
        return torch.ops.coreaug.augment(x, o, m, None, None, 0, [0], torch.float32, None, None) * 2

    torch.testing.assert_close(f(images, ops, mags), apply_augment(images, ops, mags).float() / 255 * 2)


def test_public_names():
    assert coreaug_fast.OPS[0] == "Identity" and coreaug_fast.OPS[-1] == "Invert" and len(coreaug_fast.OPS) == 15
    for name in ("OPS", "apply_augment", "crop_flip", "Augmenter"):
        assert name in coreaug_fast.__all__


def _imports(module) -> set:
    """The modules a module's source imports (relative ones with their dots), at any depth."""
    import ast
    import inspect

    found = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def test_the_twin_imports_nothing_from_the_fast_path():
    """reference/augment.py judges the fused op, so a wrong constant of the fast path must not
    also fool it: it names the ops from the table module ``policies`` (which imports only the
    vocabulary) and replays each by name with torchvision, never through augment.py, the
    sampler or the extension."""
    from coreaug_fast import policies
    from coreaug_fast.reference import augment as twin

    assert _imports(twin) == {"__future__", "math", "typing", "torch", "torchvision.transforms.v2", "..policies"}
    assert _imports(policies) == {".vocabulary"}


# ---- integers, scalars and arguments as users pass them ---------------------------------

def test_padding_that_would_wrap_in_cpp_is_rejected():
    images = _ok()[0]
    offsets, flips = torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.bool)
    for padding in (2 ** 32, 2 ** 63, 2 ** 31):
        with pytest.raises(ValueError, match=r"padding must be an int >= 0 \(at most"):
            crop_flip(images, offsets, flips, padding=padding)
        with pytest.raises(ValueError, match="padding must be an int >= 0"):
            Augmenter(padding=padding)


def test_numpy_integers_are_accepted_where_ints_are():
    np = pytest.importorskip("numpy")
    images = _images(4, 3, 8, 8, torch.Generator().manual_seed(0), "cpu")
    offsets = torch.tensor([[0, 8], [3, 1], [8, 8], [4, 4]])
    flips = torch.tensor([True, False, True, False])
    assert torch.equal(crop_flip(images, offsets, flips, padding=np.int64(4)),
                       crop_flip(images, offsets, flips, padding=4))
    a = Augmenter(num_ops=np.int64(2), magnitude=np.int32(9), copies=np.int64(2), padding=np.int64(4))
    assert (a.num_ops, a.magnitude, a.copies, a.padding) == (2, 9, 2, 4)
    assert all(type(v) is int for v in (a.num_ops, a.magnitude, a.copies, a.padding))
    x, o, m = _shifting()
    assert torch.equal(apply_augment(x, o, m, fill=np.int64(7)), apply_augment(x, o, m, fill=7))
    assert not torch.equal(apply_augment(x, o, m, fill=7), apply_augment(x, o, m, fill=0))


def _shifting():
    """Images and geometric ops that bring in fill pixels."""
    x = _images(4, 3, 8, 8, torch.Generator().manual_seed(0), "cpu")
    return x, torch.tensor([[1], [2], [5], [3]], dtype=torch.int32), torch.tensor([[0.3], [0.3], [30.0], [3.0]])


def test_fill_none_is_torchvisions_zero():
    x, o, m = _shifting()
    assert torch.equal(apply_augment(x, o, m, fill=None), apply_augment(x, o, m, fill=0))
    images = _images(3, 3, 8, 8, torch.Generator().manual_seed(0), "cpu")
    gen = lambda: torch.Generator().manual_seed(2)  # noqa: E731
    assert torch.equal(Augmenter(fill=None)(images, generator=gen()), Augmenter(fill=0)(images, generator=gen()))


@pytest.mark.parametrize("call", ["apply_augment", "crop_flip", "Augmenter"])
@pytest.mark.parametrize("index", [[0, 1, 2, 3], "ndarray"])
def test_index_that_is_not_a_tensor_is_a_value_error(call, index):
    if index == "ndarray":
        index = pytest.importorskip("numpy").arange(4)
    x, o, m = _ok()
    with pytest.raises(ValueError, match="index must be a torch.Tensor"):
        if call == "apply_augment":
            apply_augment(x, o, m, index=index)
        elif call == "crop_flip":
            crop_flip(x, torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, dtype=torch.bool), index=index)
        else:
            Augmenter()(x, index=index)


@pytest.mark.parametrize("kwargs,match", [
    ({"copies": 2 ** 62}, r"copies must be in \[1, 65536\], got 4611686018427387904"),
    ({"num_ops": 2 ** 40}, r"num_ops must be in \[0, 16\]"),
    ({"magnitude": 2.5}, "magnitude must be an integer"),
    ({"mean": 0.5}, "mean and std must be given together"),
    ({"std": [0.2, 0.2, 0.2]}, "mean and std must be given together"),
    ({"mean": [125.3, 123.0, 113.9], "std": [63.0, 62.1, 66.7]}, r"units of x / 255"),
    ({"mean": "abc", "std": 0.2}, "mean must be a finite float"),
])
def test_augmenter_arguments_get_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmenter(**kwargs)


def test_augmenter_takes_mean_and_std_as_tensors_or_arrays():
    np = pytest.importorskip("numpy")
    images = _images(4, 3, 8, 8, torch.Generator().manual_seed(0), "cpu")
    ref = Augmenter(mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])(images, generator=torch.Generator().manual_seed(1))
    for mean, std in ((torch.tensor([0.49, 0.48, 0.45]), torch.tensor([0.25, 0.24, 0.26])),
                      (np.array([0.49, 0.48, 0.45]), np.array([0.25, 0.24, 0.26]))):
        aug = Augmenter(mean=mean, std=std)
        assert torch.equal(aug(images, generator=torch.Generator().manual_seed(1)), ref)


@pytest.mark.parametrize("generator,match", [
    (0, "generator must be a torch.Generator or None, got int"),
    ("cuda", "generator must be a torch.Generator or None, got str"),
])
def test_augmenter_rejects_what_is_not_a_generator(generator, match):
    with pytest.raises(ValueError, match=match):
        Augmenter()(_ok()[0], generator=generator)
    with pytest.raises(ValueError, match=match):
        Augmenter().sample(torch.arange(3), 8, 8, generator=generator)


# ---- arguments that used to pass silently (issue 24) ----------------------------------------

@pytest.mark.parametrize("flip", ["no", 1, 0, None, torch.tensor(True)])
def test_flip_must_be_a_bool(flip):
    # bool("no") is True: a string (or an int) used to mean flips silently
    with pytest.raises(ValueError, match="flip must be a bool, got"):
        Augmenter(flip=flip)


def test_flip_accepts_python_and_numpy_bools():
    np = pytest.importorskip("numpy")
    assert Augmenter(flip=np.bool_(False)).flip is False and Augmenter(flip=np.bool_(True)).flip is True
    images = _images(3, 3, 8, 8, torch.Generator().manual_seed(0), "cpu")
    aug = Augmenter(flip=False, padding=0, copies=2)
    aug(images, generator=torch.Generator().manual_seed(0))
    assert aug.last_params.offsets is None


@pytest.mark.parametrize("std,out_dtype,match", [
    (1e-45, torch.float32, r"std must be at least 1.175e-38 in magnitude \(a normal float32\), got 1e-45"),
    (1e-46, torch.float32, r"std must be at least"),  # 0 in float32
    (-1e-40, torch.float32, r"std must be at least"),  # subnormal
    (1e-39 * 2, torch.float32, r"std must be at least"),
    (1e-6, torch.float16, r"std 1e-06 is too small for out_dtype torch.float16: \(x / 255 - 0.5\) / 1e-06 is"),
    (5e-6, torch.float16, r"std 5e-06 is too small for out_dtype torch.float16"),
])
def test_std_whose_normalised_output_is_not_finite_is_refused(std, out_dtype, match):
    with pytest.raises(ValueError, match=match):
        Augmenter(mean=0.5, std=std, out_dtype=out_dtype)


def test_the_std_rule_is_the_ops_own_overflow_boundary():
    # mean 0.5: |x/255 - mean| is at most 0.5, at x = 0 and 255; the op's float32 output of
    # 0.5 / std rounds to a finite float16 exactly when the rule accepts std
    images = torch.tensor([0, 255, 128, 3], dtype=torch.uint8).view(1, 1, 2, 2)
    kw = dict(num_ops=0, copies=1, padding=0, flip=False)
    out = Augmenter(**kw, mean=0.5, std=0.5 / 65504 * 1.0001, out_dtype=torch.float16)(images)
    assert bool(torch.isfinite(out).all()) and out.abs().max().item() > 65000
    with pytest.raises(ValueError, match="std .* is too small for out_dtype torch.float16"):
        Augmenter(**kw, mean=0.5, std=0.5 / 65504 * 0.999, out_dtype=torch.float16)
    # float32 and bfloat16: any normal float32 std keeps |x/255 - mean| / std <= 2 / 1.2e-38
    for out_dtype in (torch.float32, torch.bfloat16):
        for mean in (-1.0, 1.0):
            out = Augmenter(**kw, mean=mean, std=torch.finfo(torch.float32).tiny, out_dtype=out_dtype)(images)
            assert bool(torch.isfinite(out).all()) and out.abs().max().item() > 8e37
    # per channel: the channel whose std is too small is the one named
    with pytest.raises(ValueError, match=r"\(x / 255 - 0.1\) / 1e-07"):
        Augmenter(mean=[0.5, 0.1, 0.5], std=[0.2, 1e-7, 0.2], out_dtype=torch.float16)
    Augmenter(mean=[0.5, 0.1, 0.5], std=[0.2, 1e-4, 0.2], out_dtype=torch.float16)


@pytest.mark.parametrize("height,width,match", [
    (-8, 8, r"height must be in \[1, inf\], got -8"), (0, 8, "height must be in"),
    (8, 2.5, "width must be an integer, got float 2.5"), (8.0, 8, "height must be an integer"),
    (8, -1, "width must be in"),
])
def test_sample_refuses_sizes_that_are_not_positive_ints(height, width, match):
    with pytest.raises(ValueError, match=match):
        Augmenter().sample(torch.arange(3), height, width)


def test_sample_checks_source():
    with pytest.raises(ValueError, match="source must be a torch.Tensor, got list"):
        Augmenter().sample([0, 1], 8, 8)
    with pytest.raises(ValueError, match="source must be an integer tensor"):
        Augmenter().sample(torch.zeros(2), 8, 8)


def test_crop_flip_names_offsets_when_offsets_has_the_odd_row_count():
    # 3 offsets for 2 images used to be blamed on flips ("flips has 2 rows, expected 3")
    images, flips = _ok()[0][:2], torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"^without index, offsets needs one row per image: 3 rows for 2 images"):
        crop_flip(images, torch.zeros(3, 2, dtype=torch.long), flips)
    with pytest.raises(ValueError, match=r"^offsets has 3 rows, expected 2 \(as flips and index\)"):
        crop_flip(images, torch.zeros(3, 2, dtype=torch.long), flips, index=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"^flips has 3 rows, expected 2"):
        crop_flip(images, torch.zeros(2, 2, dtype=torch.long), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^index has 3 rows, expected 2"):
        crop_flip(images, torch.zeros(2, 2, dtype=torch.long), flips, index=torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match=r"^offsets must be \(M, 2\) \(top, left\), got shape \(2, 3\)"):
        crop_flip(images, torch.zeros(2, 3, dtype=torch.long), flips)


@pytest.mark.parametrize("out_dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("channels", [1, 3])
def test_crop_flip_normalises_in_the_same_pass_as_torchvision(device, out_dtype, channels):
    """crop_flip(..., out_dtype, mean, std) = torchvision's ToDtype(scale=True) + Normalize of
    the uint8 crop, to the bit, then the cast (as the Augmenter's strong rows)."""
    from coreaug_fast.reference.augment import normalize_reference

    g = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (5, channels, 9, 11), dtype=torch.uint8, generator=g).to(device)
    offsets = torch.randint(0, 5, (7, 2), generator=g).to(device)
    flips = (torch.rand(7, generator=g) < 0.5).to(device)
    index = torch.randint(0, 5, (7,), generator=g).to(device)
    mean, std = [0.485, 0.456, 0.406][:channels], [0.229, 0.224, 0.225][:channels]
    got = crop_flip(images, offsets, flips, padding=2, index=index, out_dtype=out_dtype, mean=mean, std=std)
    pixels = crop_flip_reference(images.cpu(), offsets.cpu(), flips.cpu(), padding=2, index=index.cpu())
    want = normalize_reference(pixels, mean, std, out_dtype)
    assert got.dtype == out_dtype and torch.equal(got.cpu(), want)
    plain = crop_flip(images, offsets, flips, padding=2, index=index, out_dtype=torch.float32)
    assert torch.equal(plain.cpu(), normalize_reference(pixels, None, None, torch.float32))


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment-imagenet", "trivialaugment"])
@pytest.mark.parametrize("padding,flip", [(2, True), (0, True), (0, False)])
@pytest.mark.parametrize("weak", [0, 3, 7])
def test_batch_equals_weak_crop_flip_then_strong_copies(device, policy, padding, flip, weak):
    """Augmenter.batch (one launch) = crop_flip of the weak rows + a copies=1 call on the
    strong rows, drawn from the same stream in that order, to the bit: the weak rows' offsets
    (randint 2p+1, int32) and flips (rand < 1/2), then the call's own draws."""
    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (6, 3, 12, 10), dtype=torch.uint8, generator=g).to(device)
    index = torch.randint(0, 6, (7,), generator=g).to(device)
    kw = dict(copies=1, padding=padding, flip=flip, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3], policy=policy)
    aug = Augmenter(**kw)
    got = aug.batch(images, weak, index=index, generator=torch.Generator().manual_seed(9))
    stream = torch.Generator().manual_seed(9)
    parts = []
    if weak:
        offsets = torch.randint(2 * padding + 1, (weak, 2), generator=stream, dtype=torch.int32)
        flips = (torch.rand(weak, generator=stream) < 0.5) & flip
        parts.append(crop_flip(images, offsets.to(device), flips.to(device), padding=padding, index=index[:weak],
                               out_dtype=torch.float32, mean=kw["mean"], std=kw["std"]))
    if weak < 7:
        parts.append(Augmenter(**kw)(images, index=index[weak:], generator=stream))
    want = torch.cat(parts)
    assert got.shape == (7, 3, 12, 10) and torch.equal(got, want)
    p = aug.last_params
    assert torch.equal(p.source, index) and not p.ops[:weak].any() and p.ops.shape[0] == 7


def test_batch_of_staged_rows_and_its_errors():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    aug = Augmenter(copies=1, padding=1)
    x = aug.batch(images, 2, generator=torch.Generator().manual_seed(0))  # row m is image m
    assert x.shape == (4, 3, 8, 8)
    assert aug.batch(images[:0], 0).shape == (0, 3, 8, 8)
    assert aug.last_params.source.shape == (0,) and aug.last_params.ops.shape[0] == 0  # not the call before
    huge = Augmenter(copies=1, padding=2 ** 30)  # the largest padding: weak offsets beyond int32
    assert huge.batch(images, 2).shape == (4, 3, 8, 8) and int(huge.last_params.offsets.max()) >= 0
    with pytest.raises(ValueError, match=r"weak must be in \[0, 4\], got 5"):
        aug.batch(images, 5)
    with pytest.raises(ValueError, match="index has value 9, outside"):
        aug.batch(images, 1, index=torch.tensor([0, 9]))
