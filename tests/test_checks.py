"""The shared argument checks, and the host-sync counter the sync-free tests rely on."""
import numpy as np
import pytest
import torch

from coreaug_fast import checks
from host_syncs import count_host_syncs


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3), torch.tensor(3)])
def test_check_int_accepts_what_operator_index_accepts(value):
    out = checks.check_int("k", value, low=0)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, 3.0, "3", None, np.float32(3), torch.tensor([3])])
def test_check_int_rejects_non_integers(value):
    with pytest.raises(ValueError, match="^k must be an integer"):
        checks.check_int("k", value)


def test_check_int_bounds_name_the_argument():
    with pytest.raises(ValueError, match=r"padding must be in \[0, 255\], got 4294967296"):
        checks.check_int("padding", 2**32, low=0, high=255)


@pytest.mark.parametrize("value", [0.1, np.float32(0.1), np.float64(0.1), 1, torch.tensor(0.1)])
def test_check_float_accepts_real_scalars(value):
    assert checks.check_float("eps", value) == pytest.approx(0.1 if value != 1 else 1.0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.float64("-inf")])
def test_check_float_rejects_non_finite(value):
    with pytest.raises(ValueError, match="^lr must be finite"):
        checks.check_float("lr", value)


@pytest.mark.parametrize("value", [True, "0.1", None, [0.1]])
def test_check_float_rejects_non_numbers(value):
    with pytest.raises(ValueError, match="^lr must be a real number"):
        checks.check_float("lr", value)


@pytest.mark.parametrize("value,channels,want", [
    (0.5, 3, [0.5, 0.5, 0.5]), ([0.1, 0.2, 0.3], 3, [0.1, 0.2, 0.3]), (np.float32(0.25), 1, [0.25]),
    (torch.tensor([0.1, 0.2, 0.3]), 3, [0.1, 0.2, 0.3]), (np.array([[0.1, 0.2, 0.3]]), 3, [0.1, 0.2, 0.3]),
    ((0.5,), None, [0.5]), (torch.tensor(0.5), None, [0.5]),
])
def test_per_channel_values_from_numbers_sequences_arrays_and_tensors(value, channels, want):
    got = checks.check_per_channel("mean", value, channels)
    assert got == pytest.approx(want) and all(type(v) is float for v in got)


@pytest.mark.parametrize("value,channels,match", [
    ("a", 3, "mean must be a finite float or one per channel, got 'a'"),
    ([], None, r"mean must be a finite float or one per channel, got \[\]"),
    ([0.5, float("inf")], 2, "mean must be a finite float or one per channel"),
    ([0.5, 0.5], 3, "mean has 2 values for 3 channels"),
])
def test_per_channel_refuses_what_is_not_one_finite_float_per_channel(value, channels, match):
    with pytest.raises(ValueError, match=match):
        checks.check_per_channel("mean", value, channels)


def test_one_std_rule_for_every_normalisation():
    """std nonzero, as torchvision's Normalize: every entry point that normalises refuses 0
    and takes a negative std (which flips the sign), with one message."""
    from coreaug_fast import Augmenter, CoresetAugmentation, crop_flip
    from coreaug_fast.torchvision_augment import TorchvisionAugment

    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    labels = torch.zeros(2, dtype=torch.long)
    offsets, flips = torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, dtype=torch.bool)
    entries = [
        lambda std: Augmenter(mean=[0.5] * 3, std=std),
        lambda std: crop_flip(images, offsets, flips, out_dtype=torch.float32, mean=[0.5] * 3, std=std),
        lambda std: TorchvisionAugment(images, padding=0, flip=False, mean=[0.5] * 3, std=std, num_workers=0),
        lambda std: CoresetAugmentation(images, labels, mean=[0.5] * 3, std=std),
    ]
    for make in entries:
        make([-0.25, 0.25, 0.25])
        with pytest.raises(ValueError, match=r"^std must be nonzero, got \[0.25, 0.0, 0.25\]"):
            make([0.25, 0.0, 0.25])


def test_sync_counter_sees_value_reads_and_data_dependent_shapes():
    x = torch.arange(6.0)
    with count_host_syncs() as syncs:
        x.sum().item()
        bool(x.max() > 2)
        x.tolist()
        x[x > 2]
        torch.nonzero(x)
        torch.repeat_interleave(x, torch.ones(6, dtype=torch.long))
    assert len(syncs.events) == 6, syncs.events


def test_sync_counter_is_quiet_on_sync_free_code():
    x = torch.arange(6.0)
    with count_host_syncs() as syncs:
        y = (x * 2).softmax(0).cpu()
        torch.repeat_interleave(x, torch.ones(6, dtype=torch.long), output_size=6)
        torch.where(x > 2, x, y)
    assert syncs.events == []
    assert torch.Tensor.tolist is not None and x.tolist() == [0, 1, 2, 3, 4, 5]


def test_value_checks_read_the_device_once():
    """check_range and check_finite run on every checked call: one host sync each, however
    the values turn out."""
    for ok in (True, False):
        with count_host_syncs() as syncs:
            try:
                checks.check_range("index", torch.tensor([0, 3, 1]), 0, 4 if ok else 3)
            except ValueError:
                pass
        assert len(syncs.events) == 1, syncs.events
        with count_host_syncs() as syncs:
            try:
                checks.check_finite("logits", torch.tensor([0.5, 1.0 if ok else float("nan")]))
            except ValueError:
                pass
        assert len(syncs.events) == 1, syncs.events
    with pytest.raises(ValueError, match=r"^index has value -1, outside \[0, 4\)"):
        checks.check_range("index", torch.tensor([2, -1], dtype=torch.int32), 0, 4)
