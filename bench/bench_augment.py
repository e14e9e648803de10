"""Augmentation throughput: images/s of r = 4 strong-augmented copies (2 RandAugment ops,
magnitude 9), at 32x32 and 224x224.

Peers, side by side per group:
* augment-op-cpu-*: the op, uint8 in and out: coreaug_fast.Augmenter(out_dtype=uint8, no
  crop/flip) against torchvision v2 RandAugment applied image by image (1 thread, as in a
  DataLoader worker). This is the issue's ">= 5x" comparison.
* augment-cpu-*: the whole pipeline with crop/flip and normalisation to float32: coreaug_fast.Augmenter (one call for the batch; 1 thread and torch's default) against
  the usual DataLoader path, torchvision v2 RandomCrop -> RandomHorizontalFlip -> RandAugment
  -> ToDtype -> Normalize applied image by image, with 1 thread as in a DataLoader worker
  (torch's intra-op threads only slow it down on images this small).
* GPU (skipped without one): the Augmenter on uint8 images already on the device, kornia's
  per-sample RandAugment (if importable), torchvision v2 on the batched GPU tensor (one set
  of parameters per batch), and the memory-bandwidth floor: a copy of the bytes the op must
  read and write (uint8 in, float32 out), whose time the op cannot beat.
* augment-policy-cpu-<policy>-*: for every policy of coreaug_fast.policies.POLICIES, the
  whole pipeline (crop/flip, the policy, normalisation to float32): the Augmenter (1 thread
  and torch's default) against torchvision v2 applied image by image (1 thread, the
  DataLoader path users run) and torchvision v2 applied once to the batch tensor (torch's
  default threads; one set of parameters for the whole batch, so not the same augmentation).
``extra_info["images_per_s"]`` is the figure to compare (output images per second).
"""
import pytest
import torch

import coreaug_fast
from conftest import requires_gpu, sync
from coreaug_fast.policies import POLICIES

COPIES, NUM_OPS, MAGNITUDE = 4, 2, 9
MEAN, STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
# (side, images per call): enough rows to fill the CPU cores, few enough for torchvision
CPU_SIZES = [(32, 256), (224, 16)]
GPU_SIZES = [(32, 4096), (224, 256)]


def _images(n, side, device="cpu"):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g).to(device)


def _info(benchmark, n, side, policy="randaugment", **extra):
    settings = {"num_ops": NUM_OPS} if policy == "randaugment" else {}
    benchmark.extra_info.update(images=n * COPIES, side=side, copies=COPIES, policy=policy, **settings, **extra)


def _median_s(benchmark):
    """The median time, or None under --benchmark-disable (a smoke run keeps no stats)."""
    return benchmark.stats.stats.median if benchmark.stats else None


def _report_rate(benchmark, n):
    if _median_s(benchmark):
        benchmark.extra_info["images_per_s"] = n * COPIES / _median_s(benchmark)


def _time_gpu(benchmark, fn, n, side, rounds, **extra):
    """Time fn (synchronised) on the GPU and record the group's figures."""
    def run():
        out = fn()
        sync()
        return out

    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=2 if rounds > 5 else 1)
    _info(benchmark, n, side, device=torch.cuda.get_device_name(), **extra)
    _report_rate(benchmark, n)


def _policy_settings(policy):
    """The Augmenter's arguments of a policy here: RandAugment's are this file's."""
    return {"num_ops": NUM_OPS, "magnitude": MAGNITUDE} if policy == "randaugment" else {}


def _torchvision_pipeline(side, policy="randaugment"):
    from torchvision.transforms import v2

    from coreaug_fast.torchvision_augment import policy_transform

    return v2.Compose([
        v2.RandomCrop(side, padding=4), v2.RandomHorizontalFlip(),
        policy_transform(policy, **_policy_settings(policy)),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD),
    ])


def _with_threads(threads, fn):
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        fn()
    finally:
        torch.set_num_threads(before)
    return threads or before


def _time_augmenter_cpu(benchmark, aug, images, side, threads):
    """Time one Augmenter call on the whole batch (threads=0: torch's default)."""
    g = torch.Generator().manual_seed(0)
    used = _with_threads(threads, lambda: benchmark.pedantic(lambda: aug(images, generator=g), rounds=7,
                                                             iterations=1, warmup_rounds=1))
    _info(benchmark, images.shape[0], side, policy=aug.policy, threads=used)
    _report_rate(benchmark, images.shape[0])


def _time_per_image(benchmark, transform, images, side, policy="randaugment"):
    """Time COPIES passes of transform over the images one by one, with one thread as in a
    DataLoader worker, and record the group's figures."""
    n = images.shape[0]
    torch.manual_seed(0)

    def run():
        return torch.stack([transform(images[i]) for _ in range(COPIES) for i in range(n)])

    _with_threads(1, lambda: benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1))
    _info(benchmark, n, side, policy=policy, threads=1)
    _report_rate(benchmark, n)


@pytest.mark.parametrize("side,n", CPU_SIZES)
@pytest.mark.parametrize("threads", [1, 0], ids=["1thread", "default_threads"])
def test_op_cpu_coreaug_fast(benchmark, side, n, threads):
    benchmark.group = f"augment-op-cpu-{side}"
    images = _images(n, side)
    aug = coreaug_fast.Augmenter(num_ops=NUM_OPS, magnitude=MAGNITUDE, copies=COPIES, padding=0, flip=False,
                                 out_dtype=torch.uint8)
    _time_augmenter_cpu(benchmark, aug, images, side, threads)


@pytest.mark.parametrize("side,n", CPU_SIZES)
def test_op_cpu_torchvision_per_image(benchmark, side, n):
    v2 = pytest.importorskip("torchvision.transforms.v2")
    benchmark.group = f"augment-op-cpu-{side}"
    images = _images(n, side)
    randaugment = v2.RandAugment(num_ops=NUM_OPS, magnitude=MAGNITUDE)
    _time_per_image(benchmark, randaugment, images, side)


@pytest.mark.parametrize("side,n", CPU_SIZES)
@pytest.mark.parametrize("threads", [1, 0], ids=["1thread", "default_threads"])
def test_cpu_coreaug_fast(benchmark, side, n, threads):
    benchmark.group = f"augment-cpu-{side}"
    images = _images(n, side)
    aug = coreaug_fast.Augmenter(num_ops=NUM_OPS, magnitude=MAGNITUDE, copies=COPIES, mean=MEAN, std=STD)
    _time_augmenter_cpu(benchmark, aug, images, side, threads)


@pytest.mark.parametrize("side,n", CPU_SIZES)
def test_cpu_torchvision_per_image(benchmark, side, n):
    pytest.importorskip("torchvision")
    benchmark.group = f"augment-cpu-{side}"
    images = _images(n, side)
    pipeline = _torchvision_pipeline(side)
    _time_per_image(benchmark, pipeline, images, side)


@pytest.mark.parametrize("side,n", CPU_SIZES)
@pytest.mark.parametrize("threads", [1, 0], ids=["1thread", "default_threads"])
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_cpu_coreaug_fast(benchmark, policy, side, n, threads):
    benchmark.group = f"augment-policy-cpu-{policy}-{side}"
    images = _images(n, side)
    aug = coreaug_fast.Augmenter(policy=policy, **_policy_settings(policy), copies=COPIES, mean=MEAN, std=STD)
    _time_augmenter_cpu(benchmark, aug, images, side, threads)


@pytest.mark.parametrize("side,n", CPU_SIZES)
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_cpu_torchvision_per_image(benchmark, policy, side, n):
    pytest.importorskip("torchvision")
    benchmark.group = f"augment-policy-cpu-{policy}-{side}"
    _time_per_image(benchmark, _torchvision_pipeline(side, policy), _images(n, side), side, policy)


@pytest.mark.parametrize("side,n", CPU_SIZES)
@pytest.mark.parametrize("policy", POLICIES)
def test_policy_cpu_torchvision_batched(benchmark, policy, side, n):
    pytest.importorskip("torchvision")
    benchmark.group = f"augment-policy-cpu-{policy}-{side}"
    pipeline = _torchvision_pipeline(side, policy)
    batch = _images(n, side).repeat(COPIES, 1, 1, 1)
    torch.manual_seed(0)
    benchmark.pedantic(lambda: pipeline(batch), rounds=7, iterations=1, warmup_rounds=1)
    _info(benchmark, n, side, policy=policy, threads=torch.get_num_threads(), parameters="per batch")
    _report_rate(benchmark, n)


@requires_gpu
@pytest.mark.parametrize("side,n", GPU_SIZES)
def test_gpu_coreaug_fast(benchmark, side, n):
    benchmark.group = f"augment-gpu-{side}"
    images = _images(n, side, "cuda")
    aug = coreaug_fast.Augmenter(num_ops=NUM_OPS, magnitude=MAGNITUDE, copies=COPIES, mean=MEAN, std=STD)
    g = torch.Generator(device="cuda").manual_seed(0)
    _time_gpu(benchmark, lambda: aug(images, generator=g), n, side, rounds=20)


@requires_gpu
@pytest.mark.parametrize("side,n", GPU_SIZES)
def test_gpu_kornia_per_sample(benchmark, side, n):
    kornia = pytest.importorskip("kornia")
    benchmark.group = f"augment-gpu-{side}"
    images = _images(n, side, "cuda")
    aug = torch.nn.Sequential(
        kornia.augmentation.RandomCrop((side, side), padding=4),
        kornia.augmentation.RandomHorizontalFlip(),
        kornia.augmentation.auto.RandAugment(n=NUM_OPS, m=MAGNITUDE),
        kornia.augmentation.Normalize(torch.tensor(MEAN), torch.tensor(STD)),
    ).cuda()
    batch = images.repeat(COPIES, 1, 1, 1)
    _time_gpu(benchmark, lambda: aug(batch.float() / 255), n, side, rounds=5)


@requires_gpu
@pytest.mark.parametrize("side,n", GPU_SIZES)
def test_gpu_torchvision_batched(benchmark, side, n):
    pytest.importorskip("torchvision")
    benchmark.group = f"augment-gpu-{side}"
    images = _images(n, side, "cuda")
    pipeline = _torchvision_pipeline(side)
    batch = images.repeat(COPIES, 1, 1, 1)
    # one set of parameters for the whole batch
    _time_gpu(benchmark, lambda: pipeline(batch), n, side, rounds=20, parameters="per batch")


@requires_gpu
@pytest.mark.parametrize("side,n", GPU_SIZES)
def test_gpu_bandwidth_floor(benchmark, side, n):
    """Copy as many bytes as the op must move: uint8 in (one read per copy) + float32 out."""
    benchmark.group = f"augment-gpu-{side}"
    nbytes = n * COPIES * 3 * side * side * (1 + 4)
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)

    _time_gpu(benchmark, lambda: dst.copy_(src), n, side, rounds=20, bytes_moved=nbytes)  # nbytes/2 each way
    if _median_s(benchmark):
        benchmark.extra_info["bandwidth_GBps"] = nbytes / _median_s(benchmark) / 1e9
