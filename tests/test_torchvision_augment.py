"""The torchvision baseline pipeline: each row equals torchvision's own transforms applied
one after another under that row's seed, whatever the batching and worker count."""
import pytest
import torch

pytest.importorskip("torchvision")
from torchvision.transforms import v2  # noqa: E402

from coreaug_fast.torchvision_augment import TorchvisionAugment, sample_seed  # noqa: E402

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
SETTINGS = dict(num_ops=2, magnitude=9, padding=2, flip=True, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def images():
    return torch.randint(0, 256, (7, 3, 12, 10), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def direct(images, position, image, strong, seed):
    """Independent twin: the functional steps of torchvision's transforms, called by hand."""
    torch.manual_seed(sample_seed(seed, position))
    x = images[image]
    x = v2.RandomCrop(list(images.shape[-2:]), padding=SETTINGS["padding"], fill=0)(x)
    x = v2.RandomHorizontalFlip(p=0.5)(x)
    if strong:
        x = v2.RandAugment(num_ops=SETTINGS["num_ops"], magnitude=SETTINGS["magnitude"])(x)
    x = x.to(torch.float32) / 255.0
    return (x - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)


def run(images, index, strong, batch_size, seed, workers):
    aug = TorchvisionAugment(images, **SETTINGS, num_workers=workers)
    return list(aug.batches(index, strong, batch_size, seed=seed, device="cpu"))


def test_rows_equal_torchvision_applied_per_image_with_the_row_seed(images):
    index = torch.tensor([3, 0, 3, 6, 1, 1])
    strong = torch.tensor([False, True, True, False, True, False])
    out = torch.cat(run(images, index, strong, 4, seed=11, workers=0))
    assert out.dtype == torch.float32 and out.shape == (6, 3, 12, 10)
    with torch.random.fork_rng(devices=[]):
        want = torch.stack([direct(images, i, int(index[i]), bool(strong[i]), 11) for i in range(6)])
    torch.testing.assert_close(out, want, rtol=0, atol=1e-6)


def test_batches_keep_the_order_and_sizes(images):
    index, strong = torch.arange(7), torch.zeros(7, dtype=torch.bool)
    parts = run(images, index, strong, 3, seed=0, workers=0)
    assert [p.shape[0] for p in parts] == [3, 3, 1]


def test_weak_rows_without_crop_or_flip_are_normalised_images(images):
    aug = TorchvisionAugment(images, num_ops=2, magnitude=9, padding=0, flip=False, mean=MEAN, std=STD, num_workers=0)
    (x,) = aug.batches(torch.arange(7), torch.zeros(7, dtype=torch.bool), 16, seed=3)
    want = (images.double() / 255 - torch.tensor(MEAN, dtype=torch.float64).view(1, -1, 1, 1)) \
        / torch.tensor(STD, dtype=torch.float64).view(1, -1, 1, 1)
    torch.testing.assert_close(x.double(), want, rtol=0, atol=1e-6)


def test_deterministic_independent_of_workers_and_batching_and_leaves_global_rng(images):
    index = torch.randint(0, 7, (20,), generator=torch.Generator().manual_seed(0))
    strong = torch.arange(20) % 3 == 0
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = torch.cat(run(images, index, strong, 5, seed=7, workers=0))
    assert torch.equal(torch.get_rng_state(), state)
    b = torch.cat(run(images, index, strong, 8, seed=7, workers=2))
    c = torch.cat(run(images, index, strong, 5, seed=8, workers=0))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_strong_rows_are_augmented(images):
    index = torch.zeros(16, dtype=torch.long)
    weak = torch.cat(run(images, index, torch.zeros(16, dtype=torch.bool), 16, seed=1, workers=0))
    strong = torch.cat(run(images, index, torch.ones(16, dtype=torch.bool), 16, seed=1, workers=0))
    assert not torch.equal(weak, strong)


@pytest.mark.parametrize("kw,needle", [
    (dict(num_ops=17), "num_ops"), (dict(magnitude=31), "magnitude"), (dict(padding=-1), "padding"),
    (dict(mean=[0.5]), "mean and std"), (dict(std=[0.2, 0.0, 0.3]), "std"),
    (dict(mean=[float("nan"), 0.5, 0.5]), "mean"), (dict(num_workers=-1), "num_workers"),
])
def test_bad_settings_name_the_argument(images, kw, needle):
    with pytest.raises(ValueError, match=needle):
        TorchvisionAugment(images, **{**SETTINGS, **kw})


def test_bad_inputs_name_the_argument(images):
    with pytest.raises(ValueError, match="images_u8"):
        TorchvisionAugment(images.float(), **SETTINGS)
    aug = TorchvisionAugment(images, **SETTINGS, num_workers=0)
    with pytest.raises(ValueError, match="index"):
        next(aug.batches(torch.tensor([7]), torch.tensor([True]), 4, seed=0))
    with pytest.raises(ValueError, match="strong"):
        next(aug.batches(torch.tensor([1, 2]), torch.tensor([1, 0]), 4, seed=0))
    with pytest.raises(ValueError, match="rows"):
        next(aug.batches(torch.tensor([1, 2]), torch.tensor([True]), 4, seed=0))


def test_sample_seeds_are_distinct_and_in_range():
    seeds = {sample_seed(s, i) for s in range(4) for i in range(1000)}
    assert len(seeds) == 4000 and all(0 <= s < 2**63 for s in seeds)


@pytest.mark.parametrize("policy,make", [
    ("autoaugment-cifar10", lambda: v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)),
    ("autoaugment-imagenet", lambda: v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET)),
    ("trivialaugment", lambda: v2.TrivialAugmentWide()),
    ("randaugment", lambda: v2.RandAugment(num_ops=3, magnitude=5, num_magnitude_bins=11)),
])
def test_strong_rows_use_the_policys_own_torchvision_transform(images, policy, make):
    settings = dict(num_ops=3, magnitude=5, num_magnitude_bins=11) if policy == "randaugment" else {}
    aug = TorchvisionAugment(images, policy=policy, **settings, padding=2, flip=True, mean=MEAN, std=STD,
                             num_workers=0)
    index, strong = torch.tensor([3, 0, 6, 6, 2]), torch.tensor([True, True, True, False, True])
    out = torch.cat(list(aug.batches(index, strong, 2, seed=5)))
    want = []
    with torch.random.fork_rng(devices=[]):
        for i in range(5):
            torch.manual_seed(sample_seed(5, i))
            x = v2.RandomCrop(list(images.shape[-2:]), padding=2, fill=0)(images[int(index[i])])
            x = v2.RandomHorizontalFlip(p=0.5)(x)
            if strong[i]:
                x = make()(x)
            x = x.to(torch.float32) / 255.0
            want.append((x - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1))
    torch.testing.assert_close(out, torch.stack(want), rtol=0, atol=1e-6)


@pytest.mark.parametrize("kw,needle", [
    (dict(policy="autoaugment-svhn"), "num_ops is not a setting of policy 'autoaugment-svhn'"),
    (dict(policy="nope"), "policy must be one of"),
    (dict(flip="no"), "flip must be a bool"),
])
def test_bad_policy_settings_name_the_argument(images, kw, needle):
    with pytest.raises(ValueError, match=needle):
        TorchvisionAugment(images, **{**SETTINGS, **kw})
