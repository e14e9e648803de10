"""The ``"train"`` selection pass (coreaug_fast/recording.py): the selection's logits and
features are the training loop's own outputs on the weakly augmented originals of the epoch
before; rows that epoch did not show (subset_only, inplace, an unfinished epoch) get a clean
pass; only forward calls on a yielded batch are recorded; the record survives a state_dict
round trip between its epoch and the selection; the training step stays free of host
synchronisations; data-parallel ranks select one subset."""
import os

import pytest
import torch
import torch.nn as nn

import coreaug_fast.selection_pass as selection_pass
from coreaug_fast import CoresetAugmentation
from host_syncs import training_steps_syncs

pytestmark = pytest.mark.usefixtures("one_thread")

N, C, S = 48, 3, 6


def data():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (N, C, S, S), dtype=torch.uint8, generator=g), torch.arange(N) % 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(C * S * S, 12), nn.ReLU())
        self.fc = nn.Linear(12, 4)

    def forward(self, x):
        return self.fc(self.body(x))


def make(**kw):
    images, labels = data()
    base = dict(fraction=0.25, select_every=2, copies=2, padding=1, mean=[0.5] * C, std=[0.25] * C, seed=0,
                selection_pass="train")
    return CoresetAugmentation(images, labels, **{**base, **kw})


@pytest.fixture
def spy(monkeypatch):
    """What each selection received: the logits (and features) of gradient_embeddings, and the
    rows of every clean forward pass."""
    got = {"emb": [], "clean": []}
    real_emb, real_clean = selection_pass.gradient_embeddings, selection_pass.SelectionPass.clean_forward

    def emb(logits, targets, features=None, **kw):
        got["emb"].append((logits.clone(), None if features is None else features.clone()))
        return real_emb(logits, targets, features, **kw)

    def clean(self, net, device, chunk, rows, labels, epoch):
        got["clean"].append(None if rows is None else rows.clone())
        return real_clean(self, net, device, chunk, rows, labels, epoch)
    monkeypatch.setattr(selection_pass, "gradient_embeddings", emb)
    monkeypatch.setattr(selection_pass.SelectionPass, "clean_forward", clean)
    return got


def train_epoch(aug, model, opt, seen=None, batch_size=10):
    """One epoch of plain weighted SGD; ``seen`` collects (dataset rows, logits, features) of
    every batch's weak rows, as the training step computed them."""
    epoch = aug.epoch(model, batch_size=batch_size)
    index = epoch.rows.index
    for b, (x, y, w) in enumerate(epoch):
        feats = []
        hook = model.fc.register_forward_hook(lambda m, i, o: feats.append(i[0].detach().clone()))
        out = model(x)
        hook.remove()
        n_weak = epoch._weak[b]
        if seen is not None:
            seen.append((index[b * batch_size:b * batch_size + n_weak], out[:n_weak].detach().clone(),
                         feats[0][:n_weak]))
        loss = (nn.functional.cross_entropy(out, y, reduction="none") * w).sum() / w.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return epoch


def dataset_order(seen, n=N):
    logits = torch.full((n, 4), float("nan"))
    feats = torch.full((n, 12), float("nan"))
    for rows, out, f in seen:
        logits[rows], feats[rows] = out, f
    return logits, feats


@pytest.mark.parametrize("features", [False, True])
def test_the_selection_uses_the_training_steps_outputs_on_the_originals(spy, features):
    """Epoch 0 selects from a clean pass (nothing recorded yet); epoch 1 records (the next
    epoch selects); epoch 2 selects from epoch 1's training outputs, in dataset order, with no
    clean pass. Train mode, weights as they were at each step: exactly what the loop computed."""
    model = Net()
    aug = make(features=model.fc if features else None)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_epoch(aug, model, opt)
    assert spy["clean"] == [None] and len(spy["emb"]) == 1
    seen = []
    train_epoch(aug, model, opt, seen)
    assert aug._recording is not None and bool(aug._recording.seen.all())
    train_epoch(aug, model, opt)
    assert spy["clean"] == [None], "the train pass made a clean pass"
    logits, feats = spy["emb"][1]
    want_logits, want_feats = dataset_order(seen)
    assert torch.equal(logits, want_logits)
    if features:
        assert torch.equal(feats, want_feats)
    else:
        assert feats is None
    assert aug.stats["selected"] and aug._recording is None


@pytest.mark.parametrize("kw,unseen", [
    (dict(subset_only=True), "unselected"),
    (dict(aug_mode="inplace"), "selected"),
])
def test_rows_the_epoch_did_not_show_get_a_clean_pass(spy, kw, unseen):
    """Only weak originals are recorded: with subset_only the unselected examples, with
    inplace the selected ones (their copies replace the original) are passed clean."""
    model = Net()
    aug = make(method="max-loss", **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_epoch(aug, model, opt)
    subset = set(aug.subset[0].tolist())
    train_epoch(aug, model, opt)
    spy["clean"].clear()
    train_epoch(aug, model, opt)
    (rows,) = spy["clean"]
    want = subset if unseen == "selected" else set(range(N)) - subset
    assert set(rows.tolist()) == want and len(rows) == len(want)


def test_an_unfinished_epoch_leaves_its_rest_to_the_clean_pass(spy):
    model = Net()
    aug = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_epoch(aug, model, opt)
    epoch = aug.epoch(model, batch_size=10)
    it = iter(epoch)
    x, y, w = next(it)
    model(x)  # one step's forward, then the loop stops
    shown = set(epoch.rows.index[:epoch._weak[0]].tolist())
    spy["clean"].clear()
    train_epoch(aug, model, opt)
    (rows,) = spy["clean"]
    assert set(rows.tolist()) == set(range(N)) - shown


def test_only_forward_calls_on_a_yielded_batch_are_recorded():
    model = Net()
    aug = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_epoch(aug, model, opt)
    epoch = aug.epoch(model, batch_size=10)
    for x, y, w in epoch:
        model(x[:3])          # part of a batch: not the step
        model(x.clone())      # equal values, another tensor: not the step
    assert not bool(aug._recording.seen.any())


def test_a_state_between_the_recording_epoch_and_the_selection_resumes_bit_for_bit(tmp_path):
    model = Net()
    a = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):  # epoch 1 records for epoch 2's selection
        train_epoch(a, model, opt)
    torch.save(a.state_dict(), tmp_path / "s.pt")
    b = make()
    b.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for aug in (a, b):
        aug.epoch(model, batch_size=10)
    assert torch.equal(a.subset[0], b.subset[0]) and torch.equal(a.subset[1], b.subset[1])
    assert torch.equal(a.selection.gains, b.selection.gains)
    # and the record differs from a clean pass: without it the selection would differ
    c = make(selection_pass="clean")
    c.load_state_dict({**torch.load(tmp_path / "s.pt", weights_only=True), "config": None, "recording": None})
    c.epoch(model, batch_size=10)
    assert not torch.equal(c.selection.gains, a.selection.gains)


def test_recording_adds_no_host_synchronisation_to_the_training_step():
    model = Net()
    aug = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    train_epoch(aug, model, opt)
    batches = aug.epoch(model, batch_size=10)  # a recording epoch
    assert aug._recording is not None
    assert training_steps_syncs(batches, model) == []
    assert bool(aug._recording.seen.all())


def test_selection_pass_is_validated_and_part_of_the_state():
    with pytest.raises(ValueError, match=r"selection_pass must be one of \['clean', 'train'\], got 'eval'"):
        make(selection_pass="eval")
    with pytest.raises(ValueError, match="state: selection_pass is 'train' there and 'clean' here"):
        make(selection_pass="clean").load_state_dict(make().state_dict())


# ------------------------------------------------------------------ data-parallel

def _ddp_worker(rank, init, out):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        model = Net()
        aug = make(group=dist.group.WORLD)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in range(3):
            train_epoch(aug, model, opt)
        torch.save({"subset": aug.subset, "selected": aug.stats["selected"]}, os.path.join(out, f"r{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ranks_select_one_subset_from_their_own_records(tmp_path):
    """Each rank records the rows it trained on; the lowest rank that saw a row keeps it and
    the rows nobody saw are passed clean, shared: every rank gets the same subset."""
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(f"file://{tmp_path}/init", str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    a, b = (torch.load(tmp_path / f"r{r}.pt", weights_only=False) for r in range(2))
    assert a["selected"] and torch.equal(a["subset"][0], b["subset"][0]) and torch.equal(a["subset"][1],
                                                                                          b["subset"][1])
    assert a["subset"][0].numel() == 4 * 3  # ceil(0.25 * 12) per class
