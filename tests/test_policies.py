"""policies and policy_sampler: every policy's tables against the ones torchvision 0.29 holds,
its sampled distribution against torchvision's own transform, rows replayed through
torchvision's transform with the same random draws, and the fused CPU op bit-exact with the
reference twin for every policy."""
import math
from collections import Counter

import pytest
import torch

pytest.importorskip("torchvision")
from torchvision.transforms import v2  # noqa: E402

from conftest import DEVICES  # noqa: E402
from host_syncs import count_host_syncs  # noqa: E402

from coreaug_fast import OPS, Augmenter  # noqa: E402
from coreaug_fast import policies  # noqa: E402
from coreaug_fast.policies import POLICIES  # noqa: E402
from coreaug_fast.policy_sampler import magnitude_table, make_sampler  # noqa: E402
from coreaug_fast.reference import augmenter_reference  # noqa: E402
from coreaug_fast.torchvision_augment import TorchvisionAugment, policy_transform  # noqa: E402

AUTOAUGMENT = {"autoaugment-imagenet": v2.AutoAugmentPolicy.IMAGENET,
               "autoaugment-cifar10": v2.AutoAugmentPolicy.CIFAR10,
               "autoaugment-svhn": v2.AutoAugmentPolicy.SVHN}
SPACES = {"randaugment": (policies.RANDAUGMENT_SPACE, v2.RandAugment),
          "autoaugment": (policies.AUTOAUGMENT_SPACE, v2.AutoAugment),
          "trivialaugment": (policies.TRIVIALAUGMENT_SPACE, v2.TrivialAugmentWide)}


def _torchvision_class(policy):
    return SPACES["autoaugment" if policy.startswith("autoaugment") else policy][1]


def _images(n, c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), dtype=torch.uint8, generator=g)
    x[: max(1, n // 4)] = x[: max(1, n // 4)] // 6 + 90  # low contrast: AutoContrast/Equalize matter
    return x


def _threshold(fraction: float) -> float:
    """torchvision's Solarize threshold (255 * fraction, compared as float32), in pixels."""
    return float(torch.tensor(255 * fraction, dtype=torch.float32))


# ---- the tables ----------------------------------------------------------------------------

@pytest.mark.parametrize("policy", sorted(AUTOAUGMENT))
def test_subpolicies_are_torchvisions(policy):
    theirs = v2.AutoAugment(AUTOAUGMENT[policy])._policies
    assert [tuple(sub) for sub in theirs] == list(policies.AUTOAUGMENT_SUBPOLICIES[policy])


@pytest.mark.parametrize("space", sorted(SPACES))
@pytest.mark.parametrize("bins,h,w", [(10, 32, 32), (31, 224, 224), (31, 24, 40), (5, 17, 3), (2, 331, 1)])
def test_magnitude_tables_are_torchvisions(space, bins, h, w):
    ours, cls = SPACES[space]
    theirs = cls._AUGMENTATION_SPACE
    assert list(ours) == list(theirs)  # the order ops are drawn in
    assert {n for n in theirs if theirs[n][1]} <= set(policies.SIGNED)
    assert {n for n in theirs if theirs[n][1]} == {n for n in ours if n in policies.SIGNED}
    table = magnitude_table(ours, bins, h, w)
    assert table.shape == (len(OPS), bins) and table.dtype == torch.float32
    for name in OPS:
        fn = theirs.get(name, (lambda *_: None, False))[0]
        values = fn(bins, h, w)
        want = [0.0] * bins if values is None else [float(v) for v in values]
        if name == "Solarize":
            want = [_threshold(v) for v in want]
        assert table[OPS.index(name)].tolist() == want, name  # bit for bit


def test_policy_names_are_one_list():
    assert POLICIES == ("randaugment", "autoaugment-imagenet", "autoaugment-cifar10", "autoaugment-svhn",
                        "trivialaugment")
    assert set(policies.AUTOAUGMENT_SUBPOLICIES) == {p for p in POLICIES if p.startswith("autoaugment")}
    for subs in policies.AUTOAUGMENT_SUBPOLICIES.values():
        for name, p, b in (step for sub in subs for step in sub):
            assert name in policies.AUTOAUGMENT_SPACE and 0 <= p <= 1
            assert (b is None) == (policies.AUTOAUGMENT_SPACE[name] is None)


# ---- the sampled distribution against torchvision's transform --------------------------------

N_DRAWS = 30_000


def _torchvision_sequences(policy, n, h, w):
    """What torchvision's transform applies to n images: each a tuple of (op, magnitude in
    our units), in order, from its own forward with the op calls recorded, not made."""
    transform = policy_transform(policy)
    calls = []

    def record(image, transform_id, magnitude, interpolation, fill):
        calls.append((transform_id, _threshold(magnitude) if transform_id == "Solarize" else float(magnitude)))
        return image

    transform._apply_image_or_video_transform = record
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        for _ in range(n):
            calls.clear()
            transform(image)
            out.append(tuple(calls))
    return out


def _our_sequences(policy, n, h, w):
    aug = Augmenter(policy=policy, copies=1, padding=0, flip=False)
    p = aug.sample(torch.arange(n), h, w, generator=torch.Generator().manual_seed(1))
    skipped_is_identity = policy.startswith("autoaugment")  # Identity is no AutoAugment op
    out = []
    for ops, mags in zip(p.ops.tolist(), p.magnitudes.tolist()):
        out.append(tuple((OPS[o], m) for o, m in zip(ops, mags) if not (skipped_is_identity and o == 0)))
    return out


def _z(a: int, b: int) -> float:
    """Two equal-sized Poisson counts: (a - b) / sd."""
    return (a - b) / math.sqrt(a + b) if a + b else 0.0


@pytest.mark.parametrize("policy", POLICIES)
def test_sampled_distribution_matches_torchvisions_transform(policy):
    # 24x40: translations scale with the width (X) and the height (Y), which must not swap
    h, w = 24, 40
    ours, theirs = _our_sequences(policy, N_DRAWS, h, w), _torchvision_sequences(policy, N_DRAWS, h, w)
    # each applied sequence (sub-policy, steps applied, magnitudes, signs), within 5 sd; a
    # sequence seen >= 25 times on one side only (a wrong bin or op) fails that too
    a, b = Counter(ours), Counter(theirs)
    bad = {k: (a[k], b[k]) for k in set(a) | set(b) if abs(_z(a[k], b[k])) > 5}
    assert not bad, bad
    # readable marginals: how often each op is applied, the magnitudes seen, the sign rate
    ops_a = Counter(name for seq in ours for name, _ in seq)
    ops_b = Counter(name for seq in theirs for name, _ in seq)
    assert set(ops_a) == set(ops_b)
    for name in ops_b:
        assert abs(_z(ops_a[name], ops_b[name])) < 5, (name, ops_a[name], ops_b[name])
    mags_a = Counter((name, abs(m)) for seq in ours for name, m in seq)
    mags_b = Counter((name, abs(m)) for seq in theirs for name, m in seq)
    assert {k for k, c in mags_a.items() if c >= 25} <= set(mags_b)
    assert {k for k, c in mags_b.items() if c >= 25} <= set(mags_a)
    for name in policies.SIGNED:
        neg_a = sum(1 for seq in ours for n, m in seq if n == name and m < 0)
        neg_b = sum(1 for seq in theirs for n, m in seq if n == name and m < 0)
        assert abs(_z(neg_a, neg_b)) < 5, (name, neg_a, neg_b)


def test_a_skipped_step_is_identity_with_magnitude_zero():
    aug = Augmenter(policy="autoaugment-cifar10", copies=1, padding=0, flip=False)
    p = aug.sample(torch.arange(20_000), 32, 32, generator=torch.Generator().manual_seed(0))
    assert p.ops.shape == (20_000, 2) and p.ops.dtype == torch.int32 and p.magnitudes.dtype == torch.float32
    skipped = p.ops == 0
    assert bool((p.magnitudes[skipped] == 0).all()) and not bool(torch.signbit(p.magnitudes[skipped]).any())
    # CIFAR10 steps are applied with probability 0.58 on average (sum of p / 50)
    steps = [step for sub in policies.AUTOAUGMENT_SUBPOLICIES["autoaugment-cifar10"] for step in sub]
    expected = 1 - sum(p for _, p, _ in steps) / len(steps)
    assert abs(skipped.float().mean().item() - expected) < 5 * math.sqrt(0.25 / skipped.numel())


# ---- rows replayed through torchvision's own transform -----------------------------------------

def _script(policy, rows, h, w, seed, bins=31):
    """For each row, the values torchvision's forward would draw (torch.randint and torch.rand
    calls, in its order) to make the choices our sampler made from ``seed``: re-drawn here
    from the stream documented in coreaug_fast.policy_sampler."""
    g = torch.Generator().manual_seed(seed)
    cls = _torchvision_class(policy)
    space = cls._AUGMENTATION_SPACE
    scripts = []
    if policy == "randaugment":
        picks = torch.randint(0, 14, (rows, 2), generator=g)
        negate = torch.randint(0, 2, (rows, 2), generator=g)
        for r in range(rows):
            ints, floats = [], []
            for k in range(2):
                name = list(space)[int(picks[r, k])]
                ints.append((len(space), int(picks[r, k])))
                if space[name][0](bins, h, w) is not None and space[name][1]:
                    floats.append(0.25 if negate[r, k] else 0.75)
            scripts.append((ints, floats))
    elif policy == "trivialaugment":
        picks = torch.randint(0, 14, (rows, 1), generator=g)
        drawn_bins = torch.randint(0, bins, (rows, 1), generator=g)
        sign_u = torch.rand((rows, 1), generator=g)
        for r in range(rows):
            name = list(space)[int(picks[r, 0])]
            ints, floats = [(len(space), int(picks[r, 0]))], []
            if space[name][0](bins, h, w) is not None:
                ints.append((bins, int(drawn_bins[r, 0])))
                if space[name][1]:
                    floats.append(float(sign_u[r, 0]))
            scripts.append((ints, floats))
    else:
        subs = v2.AutoAugment(AUTOAUGMENT[policy])._policies
        sub = torch.randint(0, len(subs), (rows,), generator=g)
        applied_u = torch.rand((rows, 2), generator=g)
        sign_u = torch.rand((rows, 2), generator=g)
        for r in range(rows):
            ints, floats = [(len(subs), int(sub[r]))], []
            for k, (name, p, _) in enumerate(subs[int(sub[r])]):
                floats.append(float(applied_u[r, k]))
                if bool(applied_u[r, k] <= p) and space[name][0](10, h, w) is not None and space[name][1]:
                    floats.append(float(sign_u[r, k]))
            scripts.append((ints, floats))
    return scripts


def _replay(transform, image, script, monkeypatch):
    ints, floats = list(script[0]), list(script[1])

    def randint(high, size):
        want_high, value = ints.pop(0)
        assert (high, tuple(size)) == (want_high, ()), (high, size, want_high)
        return torch.tensor(value)

    def rand(size):
        assert tuple(size) == ()
        return torch.tensor(floats.pop(0), dtype=torch.float32)

    with monkeypatch.context() as m:
        m.setattr(torch, "randint", randint)
        m.setattr(torch, "rand", rand)
        out = transform(image)
    assert ints == [] and floats == [], "torchvision drew other values than the script"
    return out


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("c,h,w", [(3, 32, 32), (1, 24, 40)])
def test_rows_equal_torchvisions_transform_given_the_same_draws(policy, c, h, w, monkeypatch):
    rows = 60
    images = _images(rows, c, h, w, seed=c + h)
    fill = [3, 120, 250][:c]
    aug = Augmenter(policy=policy, copies=1, padding=0, flip=False, out_dtype=torch.uint8, fill=fill)
    out = aug(images, generator=torch.Generator().manual_seed(7))
    transform = policy_transform(policy, fill=fill)
    scripts = _script(policy, rows, h, w, seed=7)
    for r in range(rows):
        want = _replay(transform, images[r], scripts[r], monkeypatch)
        assert torch.equal(out[r], want), (policy, r, aug.last_params.ops[r].tolist(),
                                           aug.last_params.magnitudes[r].tolist())


# ---- the fused CPU op against the reference twin, bit for bit -------------------------------

@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("c,side,n", [(3, 32, 12), (1, 32, 12), (3, 224, 3), (1, 224, 3)])
def test_cpu_op_is_bit_exact_with_the_reference_for_every_policy(policy, c, side, n):
    images = _images(n, c, side, side, seed=side + c)
    fill = [9, 200, 77][:c] if c == 3 else 131
    aug = Augmenter(policy=policy, copies=3, padding=side // 8, out_dtype=torch.uint8, fill=fill)
    out = aug(images, index=torch.arange(n).flip(0), generator=torch.Generator().manual_seed(side + c))
    assert out.shape == (3 * n, c, side, side)
    assert torch.equal(out, augmenter_reference(aug, images, aug.last_params))


@pytest.mark.parametrize("policy", POLICIES)
def test_normalised_output_matches_the_reference_for_every_policy(policy):
    images = _images(8, 3, 32, 32, seed=5)
    aug = Augmenter(policy=policy, copies=2, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    out = aug(images, generator=torch.Generator().manual_seed(3))
    assert out.dtype == torch.float32
    assert torch.equal(out, augmenter_reference(aug, images, aug.last_params))


# ---- sampling on the device -------------------------------------------------------------------

@pytest.mark.parametrize("policy", POLICIES)
def test_policy_step_has_no_host_sync_and_tables_move_once(device, policy):
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=g).to(device)
    index = torch.tensor([3, 1, 1, 7], device=device)
    aug = Augmenter(policy=policy, copies=2, padding=2, mean=0.5, std=0.25)
    gens = [torch.Generator().manual_seed(0)] + ([torch.Generator(device="cuda").manual_seed(0)]
                                                 if device == "cuda" else [])
    for gen in gens:
        aug(images, index=index, generator=gen, check=False)  # warm-up: tables moved to the device
        tables = dict(aug._tables)
        with count_host_syncs() as syncs:
            out = aug(images, index=index, generator=gen, check=False)
        assert syncs.events == []
        assert aug._tables.keys() == tables.keys()
        assert all(a is b for key in tables for a, b in zip(tables[key].values(), aug._tables[key].values()))
        assert torch.equal(aug.apply(images, aug.last_params), out)


@pytest.mark.parametrize("policy", POLICIES)
def test_draws_are_deterministic_per_generator(policy):
    aug = Augmenter(policy=policy)
    a = aug.sample(torch.arange(64), 32, 32, generator=torch.Generator().manual_seed(3))
    b = aug.sample(torch.arange(64), 32, 32, generator=torch.Generator().manual_seed(3))
    c = aug.sample(torch.arange(64), 32, 32, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a.magnitudes, c.magnitudes)
    assert a.ops.shape == (4 * 64, aug.ops_per_row)


def test_randaugment_stream_is_the_documented_one():
    # the training loop's batches depend on it: op picks, sign bits, offsets, flips
    aug = Augmenter(num_ops=3, magnitude=7, copies=2, padding=3)
    p = aug.sample(torch.arange(10), 20, 30, generator=torch.Generator().manual_seed(11))
    g = torch.Generator().manual_seed(11)
    picks = torch.randint(0, 14, (20, 3), generator=g)
    negate = torch.randint(0, 2, (20, 3), generator=g).bool()
    offsets = torch.randint(0, 7, (20, 2), generator=g)
    flips = torch.randint(0, 2, (20,), generator=g).bool()
    table = magnitude_table(policies.RANDAUGMENT_SPACE, 31, 20, 30)[:, 7]
    signed = torch.tensor([OPS[o] in policies.SIGNED for o in picks.flatten().tolist()]).view(20, 3)
    assert torch.equal(p.ops, picks.int())
    assert torch.equal(p.magnitudes, torch.where(negate & signed, -table[picks], table[picks]))
    assert torch.equal(p.offsets, offsets) and torch.equal(p.flips, flips)


# ---- arguments ----------------------------------------------------------------------------------

def test_defaults_and_settings_per_policy():
    a = Augmenter()
    assert (a.policy, a.num_ops, a.magnitude, a.num_magnitude_bins, a.ops_per_row) == ("randaugment", 2, 9, 31, 2)
    t = Augmenter(policy="trivialaugment", num_magnitude_bins=11)
    assert (t.num_ops, t.magnitude, t.num_magnitude_bins, t.ops_per_row) == (None, None, 11, 1)
    s = Augmenter(policy="autoaugment-svhn")
    assert (s.num_ops, s.magnitude, s.num_magnitude_bins, s.ops_per_row) == (None, None, None, 2)
    assert "policy='autoaugment-svhn'" in repr(s) and "num_ops" not in repr(s)


@pytest.mark.parametrize("kwargs,match", [
    ({"policy": "autoaugment"}, r"policy must be one of \['randaugment', 'autoaugment-imagenet'"),
    ({"policy": None}, "policy must be one of"),
    ({"policy": "autoaugment-cifar10", "num_ops": 2}, "num_ops is not a setting of policy 'autoaugment-cifar10'"),
    ({"policy": "autoaugment-imagenet", "magnitude": 9}, "magnitude is not a setting of policy"),
    ({"policy": "autoaugment-svhn", "num_magnitude_bins": 31}, "num_magnitude_bins is not a setting of policy"),
    ({"policy": "trivialaugment", "num_ops": 1}, "num_ops is not a setting of policy 'trivialaugment'"),
    ({"policy": "trivialaugment", "magnitude": 3}, "magnitude is not a setting of policy 'trivialaugment'"),
    ({"policy": "trivialaugment", "num_magnitude_bins": 1}, r"num_magnitude_bins must be in \[2, 65536\]"),
    ({"num_magnitude_bins": 5}, r"magnitude must be in \[0, 4\], got 9"),
])
def test_policy_arguments_are_checked(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Augmenter(**kwargs)
    with pytest.raises(ValueError, match=match):
        make_sampler(**kwargs)


@pytest.mark.parametrize("policy", POLICIES)
def test_torchvision_augment_uses_the_policys_torchvision_transform(policy):
    images = _images(5, 3, 12, 10, seed=0)
    tv = TorchvisionAugment(images, policy=policy, padding=2, flip=True, mean=[0.5] * 3, std=[0.25] * 3,
                            num_workers=0)
    want = _torchvision_class(policy)
    strong = [t for t in tv.strong_tf.transforms if isinstance(t, want)]
    assert len(strong) == 1
    if policy in AUTOAUGMENT:
        assert strong[0].policy == AUTOAUGMENT[policy]
    if policy == "randaugment":
        assert (strong[0].num_ops, strong[0].magnitude, strong[0].num_magnitude_bins) == (2, 9, 31)
    with pytest.raises(ValueError, match="is not a setting of policy" if policy != "randaugment" else "magnitude"):
        TorchvisionAugment(images, policy=policy, magnitude=40, padding=2, flip=True, mean=[0.5] * 3,
                           std=[0.25] * 3)
