"""The training-step ops run with no host synchronisation when asked to (``check=False``,
parameters drawn by the library): counted on CPU by tests/host_syncs.py, and on a GPU
also under ``torch.cuda.set_sync_debug_mode("error")`` (which the counter turns on)."""
import pytest
import torch

import coreaug_fast
from coreaug_fast import Augmenter, apply_augment, crop_flip, weighted_cross_entropy

from host_syncs import count_host_syncs


def _batch(device, n=32, c=10):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(n, c, generator=g).to(device).requires_grad_()
    return logits, torch.randint(0, c, (n,), generator=g).to(device), torch.rand(n, generator=g).to(device)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_weighted_cross_entropy_step_has_no_host_sync(device, reduction):
    logits, targets, weights = _batch(device)
    weighted_cross_entropy(logits, targets, weights, reduction=reduction, check=False)  # warm-up
    with count_host_syncs() as syncs:
        loss = weighted_cross_entropy(logits, targets, weights, reduction=reduction, check=False)
        loss.sum().backward()
    assert syncs.events == []


def test_the_counter_sees_the_default_checks(device):
    # the default value checks do read on the host: the test above would catch them
    logits, targets, weights = _batch(device)
    with count_host_syncs() as syncs:
        if device == "cuda":
            with pytest.raises(RuntimeError):  # sync debug mode "error"
                weighted_cross_entropy(logits, targets, weights)
        else:
            weighted_cross_entropy(logits, targets, weights)
    assert syncs.events


def test_unchecked_loss_equals_checked(device):
    logits, targets, weights = _batch(device)
    for kw in ({}, {"label_smoothing": 0.1, "reduction": "none"}):
        assert torch.equal(weighted_cross_entropy(logits, targets, weights, check=False, **kw),
                           weighted_cross_entropy(logits, targets, weights, **kw))


def _images(device, n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g).to(device)


def test_augmenter_step_has_no_host_sync(device):
    images = _images(device)
    index = torch.tensor([3, 1, 1, 7], device=device)
    aug = Augmenter(num_ops=2, copies=2, padding=2, mean=0.5, std=0.25)
    # a CPU generator (parameters go to the GPU through pinned memory) and, on a GPU, a
    # generator on the device (nothing drawn on the host)
    gens = [torch.Generator().manual_seed(0)]
    if device == "cuda":
        gens.append(torch.Generator(device="cuda").manual_seed(0))
    for gen in gens:
        aug(images, index=index, generator=gen, check=False)  # warm-up: magnitude tables cached
        with count_host_syncs() as syncs:
            out = aug(images, index=index, generator=gen, check=False)
        assert syncs.events == []
        assert out.shape == (8, 3, 16, 16)
        assert torch.equal(aug.apply(images, aug.last_params), out)


def test_augmenter_unchecked_draws_what_checked_draws(device):
    images = _images(device)
    index = torch.tensor([3, 1, 7], device=device)
    aug = Augmenter(copies=2)
    a = aug(images, index=index, generator=torch.Generator().manual_seed(5))
    b = aug(images, index=index, generator=torch.Generator().manual_seed(5), check=False)
    assert torch.equal(a, b)
    # the documented stream: sample() draws the same parameters from the same seed
    p = aug.sample(index, 16, 16, generator=torch.Generator().manual_seed(5))
    assert torch.equal(p.ops.cpu(), aug.last_params.ops.cpu())
    assert torch.equal(p.magnitudes.cpu(), aug.last_params.magnitudes.cpu())


def test_unchecked_index_out_of_range_is_never_a_bad_read(device):
    images = _images(device)
    aug = Augmenter(copies=1, out_dtype=torch.uint8)
    call = lambda: aug(images, index=torch.tensor([0, 99], device=device),  # noqa: E731
                       generator=torch.Generator().manual_seed(0), check=False)
    if device == "cpu":  # the CPU op checks indices itself (no sync to save there)
        with pytest.raises(RuntimeError, match="outside"):
            call()
    else:  # the CUDA kernel writes a zero row
        out = call()
        assert torch.equal(out[1], torch.zeros_like(out[1]))


def test_crop_flip_and_apply_augment_have_no_host_sync_unchecked(device):
    images = _images(device)
    offsets = torch.tensor([[0, 4], [2, 2], [4, 0]], device=device)
    flips = torch.tensor([True, False, True], device=device)
    index = torch.tensor([0, 5, 7], device=device)
    ops = torch.tensor([[1, 6], [0, 14], [11, 3]], dtype=torch.int32, device=device)
    mags = torch.tensor([[0.2, 0.5], [0.0, 0.0], [128.0, -3.0]], device=device)
    with count_host_syncs() as syncs:
        a = crop_flip(images, offsets, flips, padding=2, index=index, check=False)
        b = apply_augment(images, ops, mags, index=index, check=False)
    assert syncs.events == []
    assert torch.equal(a, crop_flip(images, offsets, flips, padding=2, index=index))
    assert torch.equal(b, apply_augment(images, ops, mags, index=index))


def test_randaugment_space_and_signs_follow_from_op_ids():
    # _draw relies on these two layouts instead of looking ids up in host tables
    assert Augmenter.SPACE == coreaug_fast.OPS[:len(Augmenter.SPACE)]
    signed = [coreaug_fast.OPS.index(n) for n in Augmenter.SIGNED]
    assert signed == list(range(coreaug_fast.OPS.index("ShearX"), coreaug_fast.OPS.index("Sharpness") + 1))
