"""``CoresetAugmentation``: the rows and weights of each epoch, when it selects, the clean
eval-mode forward pass and the ``features=`` hook, exact resumption from ``state_dict``,
host-resident images, the torchvision baseline's rows, host synchronisations of a training
step, and clear errors for bad arguments."""
import math
import sys
import types

import pytest
import torch
import torch.nn as nn

import coreaug_fast.coreset_augmentation as ca
import coreaug_fast.selection_pass as selection_pass
from coreaug_fast import CoresetAugmentation

from host_syncs import count_host_syncs, training_steps_syncs

N, C, S = 60, 3, 8  # 60 images of 3x8x8, 5 classes x 12


pytestmark = pytest.mark.usefixtures("one_thread")


def data(n=N, classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, C, S, S), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % classes
    return images, labels


class Net(nn.Module):
    def __init__(self, classes=5, hidden=16):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(C * S * S, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc(self.body(x))


def make(**kw):
    images, labels = data()
    base = dict(fraction=0.25, select_every=2, copies=3, num_ops=2, padding=1, flip=True,
                mean=[0.5] * C, std=[0.25] * C, seed=0)
    return CoresetAugmentation(images, labels, **{**base, **kw})


def collect(batches):
    xs, ys, ws = zip(*batches)
    return torch.cat(xs), torch.cat(ys), torch.cat(ws)


@pytest.fixture
def selections(monkeypatch):
    """Every selection result, as the selector returned it."""
    got = []
    for name in ("select_coreset", "select_random", "select_max_loss"):
        real = getattr(selection_pass, name)

        def f(*a, _real=real, _name=name, **kw):
            out = _real(*a, **kw)
            got.append((_name, out))
            return out
        monkeypatch.setattr(selection_pass, name, f)
    return got


# ------------------------------------------------------------------ rows and weights

@pytest.mark.parametrize("weights", ["gamma", "normalized", "uniform"])
def test_rows_are_n_plus_r_k_with_the_documented_weights(weights, selections):
    aug = make(weights=weights)
    x, y, w = collect(aug.epoch(Net(), batch_size=16))
    ((_, cs),) = selections
    k, r = cs.indices.numel(), 3
    assert k == 5 * math.ceil(0.25 * 12)
    assert x.shape == (N + r * k, C, S, S) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert aug.stats["rows"] == N + r * k and aug.stats["selected"]
    gamma = cs.weights.float()
    assert len(set(gamma.tolist())) > 1, "equal gammas would hide a wrong scaling"
    wj = {"gamma": gamma, "normalized": gamma / gamma.mean(), "uniform": torch.ones_like(gamma)}[weights]
    labels = data()[1]
    want = sorted([(int(labels[i]), 1.0) for i in range(N)] +
                  [(int(labels[j]), float(v)) for j, v in zip(cs.indices, wj / r)] * r)
    got = sorted(zip(y.tolist(), w.tolist()))
    assert [a for a, _ in got] == [a for a, _ in want]
    assert [b for _, b in got] == pytest.approx([b for _, b in want], rel=1e-6)


def test_default_weights_are_the_documented_default():
    assert make().weights == ca.DEFAULT_WEIGHTS
    assert f'"{ca.DEFAULT_WEIGHTS}"' in CoresetAugmentation.__doc__


@pytest.mark.parametrize("method,rows", [("none", N), ("full", 4 * N)])
def test_baselines_none_and_full(method, rows):
    aug = make(method=method)
    x, y, w = collect(aug.epoch(Net(), batch_size=32))
    assert x.shape[0] == rows and torch.all(w == 1.0) and aug.selection is None
    assert aug.stats["fraction_never_selected"] == (None if method == "none" else 0.0)


def test_subset_only_and_inplace(selections):
    aug = make(method="random", subset_only=True, weights="gamma")
    _, _, w = collect(aug.epoch(Net(), batch_size=32))
    k = selections[0][1].indices.numel()
    assert w.numel() == 4 * k and sorted(w.tolist()) == pytest.approx(sorted([1.0] * k + [1 / 3] * (3 * k)))
    aug = make(method="random", aug_mode="inplace")
    x, _, _ = collect(aug.epoch(Net(), batch_size=32))
    assert x.shape[0] == N - k + 3 * k


def test_an_epoch_whose_row_tables_would_not_fit_is_refused_before_they_are_built(monkeypatch):
    """full with r = 3: 60 + 180 rows of rows.ROW_BYTES each; one byte less than that is
    available -> a ValueError naming copies; exactly that -> the epoch is built."""
    from coreaug_fast import rows

    need = (N + 3 * N) * rows.ROW_BYTES
    monkeypatch.setattr(rows, "_available_bytes", lambda: need - 1)
    aug = make(method="full")
    with pytest.raises(ValueError, match=r"^copies: an epoch of 240 rows \(60 originals \+ 180 strong copies\)"):
        aug.epoch(Net(), batch_size=32)
    assert aug.epoch_index == 0  # refused before the epoch counted
    monkeypatch.setattr(rows, "_available_bytes", lambda: need)
    assert len(aug.epoch(Net(), batch_size=32)) == math.ceil(4 * N / 32)


def test_reselects_exactly_at_epochs_0_R_2R(selections):
    aug = make(select_every=3)
    model = Net()
    picked = []
    for e in range(7):
        before = len(selections)
        for _ in aug.epoch(model, batch_size=32):
            pass
        picked.append(len(selections) > before)
        assert aug.stats["selected"] == picked[-1] and aug.stats["epoch"] == e
    assert picked == [True, False, False, True, False, False, True]


def test_selection_pass_is_clean_eval_mode_and_restores_the_mode(monkeypatch):
    """The selection sees un-augmented, normalised images in eval mode; the mode comes back."""
    aug = make(method="max-loss")
    model = Net()
    seen = []
    real_forward = model.forward

    def forward(x):
        seen.append((model.training, x.clone()))
        return real_forward(x)
    monkeypatch.setattr(model, "forward", forward)
    model.train()
    batches = aug.epoch(model, batch_size=16)
    assert model.training and seen and all(not training for training, _ in seen)
    clean = torch.cat([x for _, x in seen])
    torch.testing.assert_close(clean, (data()[0].float() / 255 - 0.5) / 0.25, rtol=0, atol=0)
    model.eval()
    aug2 = make(method="max-loss")
    aug2.epoch(model, batch_size=16)
    assert not model.training
    del batches


def test_features_hook_gives_the_factored_embedding(monkeypatch):
    """features=model.fc: the selector gets (softmax - onehot, penultimate activations)."""
    model = Net()
    model.eval()
    got = {}
    real = selection_pass.gradient_embeddings

    def spy(logits, targets, features=None, **kw):
        got["features"] = features
        return real(logits, targets, features, **kw)
    monkeypatch.setattr(selection_pass, "gradient_embeddings", spy)
    aug = make(features=model.fc)
    assert aug.embedding == "last-layer-features"
    aug.epoch(model, batch_size=16)
    images = data()[0]
    with torch.no_grad():
        want = model.body(aug.transform_eval(images))
    torch.testing.assert_close(got["features"], want)
    make().epoch(model, batch_size=16)  # no features=: last-layer embeddings
    assert got["features"] is None


def test_a_hooked_module_that_runs_twice_is_reported():
    class Twice(Net):
        def forward(self, x):
            h = self.body(x)
            return self.fc(h) + 0 * self.fc(h)
    model = Twice()
    with pytest.raises(ValueError, match="features"):
        make(features=model.fc).epoch(model, batch_size=16)


# ------------------------------------------------------------------ resuming, host-resident images

@pytest.mark.parametrize("method", ["coreset", "random"])
def test_state_dict_round_trip_reproduces_the_next_epoch_bit_for_bit(tmp_path, method):
    model = Net()
    a = make(method=method, select_every=2)
    for _ in range(3):  # epoch 3 is not a selection epoch: the subset comes from the state
        collect(a.epoch(model, batch_size=16))
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = make(method=method, select_every=2)
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(2):  # a non-selection epoch, then a selection epoch
        xa, ya, wa = collect(a.epoch(model, batch_size=16))
        xb, yb, wb = collect(b.epoch(model, batch_size=16))
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)
    untimed = [{k: v for k, v in x.stats.items() if not k.endswith("_s")} for x in (a, b)]
    assert untimed[0] == untimed[1] and untimed[0]["epoch"] == 4


def test_a_state_is_a_copy_that_later_epochs_leave_alone():
    """state_dict() hands out copies: the live never-selected flags, subset and selection of
    later epochs do not reach into a state taken earlier."""
    model = Net()
    aug = make(method="random", select_every=1, fraction=0.1)
    collect(aug.epoch(model, batch_size=16))
    state = aug.state_dict()
    before = {k: state[k].clone() for k in ("ever_selected", "subset", "weights")}
    gains = state["coreset"]["gains"].clone()
    for _ in range(3):  # re-selects each epoch: more examples become ever-selected
        collect(aug.epoch(model, batch_size=16))
    assert int(aug.state_dict()["ever_selected"].sum()) > int(before["ever_selected"].sum())
    for k, v in before.items():
        assert torch.equal(state[k], v), k
    assert torch.equal(state["coreset"]["gains"], gains)
    for k in ("ever_selected", "subset", "weights"):
        assert state[k].data_ptr() != aug.state_dict()[k].data_ptr()


@pytest.mark.parametrize("field, value", [
    ("coreset", {"indices": torch.zeros(1, dtype=torch.long)}),
    ("recording", {"seen": torch.zeros(64, dtype=torch.bool), "logits": None, "features": torch.ones(64)}),
    ("recording", [1, 2]),
])
def test_a_refused_state_changes_nothing(field, value):
    """Every field is checked before any is restored: after a refused load the object's next
    epoch is the one it would have had."""
    images, labels = data(64)
    model = Net()
    aug = CoresetAugmentation(images, labels, method="coreset", fraction=0.25, select_every=1, seed=0)
    twin = CoresetAugmentation(images, labels, method="coreset", fraction=0.25, select_every=1, seed=0)
    saved = twin.state_dict()
    for a in (aug, twin):
        list(a.epoch(model, batch_size=16))
    with pytest.raises(ValueError, match=f"state: {field}"):
        aug.load_state_dict({**saved, field: value})
    assert aug.state_dict()["epoch"] == 1
    for (x, y, w), (x2, y2, w2) in zip(aug.epoch(model, batch_size=16), twin.epoch(model, batch_size=16)):
        assert torch.equal(x, x2) and torch.equal(y, y2) and torch.equal(w, w2)


def test_host_resident_images_give_the_same_batches_as_device_resident():
    """Host path: rows gathered on the host into a staging buffer, copied, then augmented
    (forced here, as this machine's only device is the host)."""
    model = Net()
    a, b = make(), make()
    b.source.staged = True
    for _ in range(2):
        xa, ya, wa = collect(a.epoch(model, batch_size=16))
        xb, yb, wb = collect(b.epoch(model, batch_size=16))
        assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_resident_images_on_cuda_match_device_resident():
    model = Net().cuda()
    images, labels = data()
    kw = dict(fraction=0.25, select_every=2, copies=3, padding=1, mean=[0.5] * C, std=[0.25] * C, seed=0)
    a = CoresetAugmentation(images.cuda(), labels.cuda(), **kw)
    b = CoresetAugmentation(images, labels, pin_memory=True, **kw)
    xa, ya, wa = collect(a.epoch(model, batch_size=16))
    xb, yb, wb = collect(b.epoch(model, batch_size=16))
    assert xb.is_cuda and torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(wa, wb)


def test_batches_are_on_the_model_device_in_out_dtype_and_transform_eval_matches():
    aug = make(out_dtype=torch.bfloat16)
    x, y, w = next(iter(aug.epoch(Net(), batch_size=16)))
    assert x.dtype == torch.bfloat16 and w.dtype == torch.float32 and x.shape[0] == 16
    images = data()[0][:4]
    want = ((images.float() / 255 - 0.5) / 0.25).to(torch.bfloat16)
    assert torch.equal(aug.transform_eval(images), want)


@pytest.mark.parametrize("group_batches", [0, 1, 2])
def test_each_rank_draws_its_own_augmentation(monkeypatch, group_batches):
    """Ranks share one seed; their crops and flips must still differ (one image repeated, so
    equal batches mean equal draws). Ranks are faked: the rows do not need a process group."""
    images = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8).repeat(64, 1, 1, 1)
    labels = torch.arange(64) % 4
    model = nn.Sequential(nn.Flatten(), nn.Linear(768, 4))
    batches = []
    for rank in (0, 1):
        monkeypatch.setattr(ca.args, "rank_world", lambda group, rank=rank: (rank, 2))
        aug = CoresetAugmentation(images, labels, method="none", seed=0, group_batches=group_batches)
        batches.append([x for x, _, _ in aug.epoch(model, batch_size=8)])
    assert len(batches[0]) == len(batches[1]) == 4
    assert not any(torch.equal(a, b) for a, b in zip(*batches))


def test_same_seed_same_batches_other_seed_differs():
    model = Net()
    xs = [collect(make(seed=s).epoch(model, batch_size=16))[0] for s in (1, 1, 2)]
    assert torch.equal(xs[0], xs[1]) and not torch.equal(xs[0], xs[2])


# ------------------------------------------------------------------ torchvision baseline

def test_torchvision_impl_takes_the_same_rows(monkeypatch):
    """augment_impl="torchvision": the same selection, order, y and w; x from
    ``TorchvisionAugment.batches`` given exactly those rows (a stand-in records them)."""
    calls = {}

    class Fake:
        def __init__(self, images_u8, *, num_ops, magnitude, padding, flip, mean, std, num_workers=2):
            assert images_u8.dtype == torch.uint8 and images_u8.device.type == "cpu"
            calls["init"] = dict(num_ops=num_ops, magnitude=magnitude, padding=padding, flip=flip)

        def batches(self, index, strong, batch_size, *, seed, device):
            calls["rows"] = (index.clone(), strong.clone())
            for i in range(0, index.numel(), batch_size):
                part = index[i:i + batch_size]
                yield torch.zeros(part.numel(), C, S, S, device=device) + part.view(-1, 1, 1, 1).float()

    mod = types.ModuleType("coreaug_fast.torchvision_augment")
    mod.TorchvisionAugment = Fake
    monkeypatch.setitem(sys.modules, "coreaug_fast.torchvision_augment", mod)
    model = Net()
    fused = collect(make().epoch(model, batch_size=16))
    tv = collect(make(augment_impl="torchvision").epoch(model, batch_size=16))
    assert torch.equal(fused[1], tv[1]) and torch.equal(fused[2], tv[2])
    index, strong = calls["rows"]
    assert torch.equal(tv[0][:, 0, 0, 0].long(), index) and int(strong.sum()) == 3 * 15
    assert torch.equal(data()[1][index], tv[1])
    assert calls["init"] == dict(num_ops=2, magnitude=9, padding=1, flip=True)


# ------------------------------------------------------------------ host synchronisations

LIBRARY_OPS = ("augment.py", "loss.py")  # value checks being made sync-free in the ops themselves


@pytest.fixture
def chains(monkeypatch):
    """Events name every coreaug_fast frame on the stack (innermost first), so a sync can be
    told apart by whether it happens inside a library op or in the loop's own code."""
    import traceback

    import host_syncs

    def where():
        frames = [f"{f.filename}:{f.lineno}" for f in traceback.extract_stack()[:-2] if "coreaug_fast" in f.filename]
        return " < ".join(reversed(frames)) or "outside coreaug_fast"
    monkeypatch.setattr(host_syncs, "_where", where)


def _ours(events):
    return [e for e in events if not any(f"coreaug_fast/{op}" in e for op in LIBRARY_OPS)]


def _step_syncs(aug, model):
    batches = aug.epoch(model, batch_size=16)  # selection: allowed to synchronise
    return training_steps_syncs(batches, model)


@pytest.mark.parametrize("staged", [False, True])
def test_batches_and_training_step_do_not_synchronise_the_host(staged, chains):
    aug = make()
    aug.source.staged = staged
    events = _step_syncs(aug, Net())
    assert _ours(events) == [], _ours(events)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("host_images", [False, True])
def test_cuda_training_step_under_sync_debug_mode(host_images, chains):
    """On CUDA, count_host_syncs also turns torch's sync debug mode to "error"; images on the
    device, or in host memory with pinned staging."""
    images, labels = data()
    aug = CoresetAugmentation(images if host_images else images.cuda(), labels, fraction=0.25, copies=3, padding=1,
                              mean=[0.5] * C, std=[0.25] * C)
    events = _step_syncs(aug, Net().cuda())
    assert _ours(events) == [], _ours(events)


def test_training_step_has_no_host_synchronisation_at_all():
    """The whole step, library ops included (the loss with check=False, as the Trainer calls it)."""
    assert _step_syncs(make(), Net()) == []


def test_trainer_step_does_not_synchronise_the_host(tmp_path, chains):
    from coreaug_fast.train import TrainConfig, Trainer
    t = Trainer(TrainConfig(dataset="synthetic", train_size=60, image_size=8, epochs=1, batch_size=16,
                            device="cpu", quiet=True, copies=2, out=str(tmp_path)))
    batches = t.augmentation.epoch(t.model, 16)
    with count_host_syncs() as syncs:
        for b, (x, y, w) in enumerate(batches):
            t.train_step(x, y, w, b / len(batches))
    assert syncs.events == [], syncs.events


# ------------------------------------------------------------------ bad arguments

@pytest.mark.parametrize("kw,needle", [
    (dict(method="coresets"), "method"),
    (dict(fraction=0.0), "fraction"),
    (dict(fraction=1.5), "fraction"),
    (dict(select_every=0), "select_every"),
    (dict(copies=-1), "copies"),
    (dict(method="full", copies=0), "copies"),
    (dict(aug_mode="replace"), "aug_mode"),
    (dict(weights="gamma/r"), "weights"),
    (dict(embedding="penultimate"), "embedding"),
    (dict(embedding="last-layer-features"), "features"),
    (dict(features="fc"), "features"),
    (dict(similarity="cosine"), "similarity"),
    (dict(optimizer="greedy"), "optimizer"),
    (dict(out_dtype=torch.int32), "out_dtype"),
    (dict(augment_impl="kornia"), "augment_impl"),
    (dict(mean=[0.5] * C, std=None), "std"),
    (dict(mean=[0.5, 0.5], std=[0.2, 0.2]), "mean"),
    (dict(std=[0.0] * C), "std"),
    (dict(subset_only=True, method="none"), "subset_only"),
    (dict(seed=-1), "seed"),
    (dict(padding=-1), "padding"),
])
def test_bad_arguments_name_the_argument(kw, needle):
    with pytest.raises(ValueError, match=needle):
        make(**kw)


@pytest.mark.parametrize("images,labels,needle", [
    (torch.zeros(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), "images"),
    (torch.zeros(4, 3, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "images"),
    (torch.zeros(4, 2, 8, 8, dtype=torch.uint8), torch.zeros(4, dtype=torch.long), "channels"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), "labels"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.zeros(4), "labels"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), -torch.ones(4, dtype=torch.long), "labels"),
])
def test_bad_images_or_labels(images, labels, needle):
    with pytest.raises(ValueError, match=needle):
        CoresetAugmentation(images, labels)


def test_bad_epoch_arguments_and_single_iteration():
    aug = make()
    with pytest.raises(ValueError, match="batch_size"):
        aug.epoch(Net(), batch_size=0)
    with pytest.raises(ValueError, match="model"):
        aug.epoch(lambda x: x, batch_size=4)
    batches = aug.epoch(Net(), batch_size=16)
    assert len(list(batches)) == len(batches) == math.ceil((N + 3 * 15) / 16)
    assert list(batches) == []  # one pass per epoch
    with pytest.raises(ValueError, match="state"):
        aug.load_state_dict({"epoch": 1})


@pytest.mark.parametrize("k", [1, 3])
def test_group_batches_keeps_an_examples_rows_in_one_window_and_defaults_off_for_tensors(k):
    """group_batches=k: an example's 4 rows lie within one window of k batches (bar the
    examples at a window boundary); 0, the tensor default, is the uniform row shuffle."""
    assert make().group_batches == 0
    aug = make(method="full", copies=3, group_batches=k)
    epoch = aug.epoch(Net(), batch_size=8)
    x, y, w = collect(epoch)
    index = epoch.rows.index
    windows = [set(index[lo:lo + 8 * k].tolist()) for lo in range(0, index.numel(), 8 * k)]
    assert sum(len(b) for b in windows) <= N + len(windows) - 1
    assert x.shape[0] == 4 * N and sorted(index.tolist()) == sorted(list(range(N)) * 4)
    if k > 1:  # mixed within the window: batches hold rows of more examples than with k = 1
        batches = [len(set(index[lo:lo + 8].tolist())) for lo in range(0, index.numel(), 8)]
        assert sum(batches) / len(batches) > 8 / 4 + 1
    with pytest.raises(ValueError, match="group_batches must be in"):
        make(group_batches=-1)
