"""The reference training loop and ``coreaug-train``: every method end to end on tiny
synthetic data, the weights that reach the loss, subset-only training, exact resume,
comparison tables, and one-line errors for bad arguments."""
import dataclasses
import json
import math

import pytest
import torch

import coreaug_fast.coreset_augmentation as ca
import coreaug_fast.selection_pass as selection_pass
from coreaug_fast.selection import picks_for_fraction
from coreaug_fast.train import TrainConfig, Trainer, epoch_rows, main, train
from coreaug_fast.train import ddp, loop
from coreaug_fast.train.data import load_dataset
from coreaug_fast.train.models import build_model

N_TRAIN = 120  # 10 classes x 12
TINY = dict(dataset="synthetic", train_size=N_TRAIN, image_size=8, epochs=1, batch_size=32,
            device="cpu", quiet=True, copies=2, num_ops=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: on a shared CPU, several OpenMP threads spin-waiting on each
    other cost far more than they bring, so the module runs single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(tmp_path, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "out": str(tmp_path / "run"), **kw})


def per_class_budget(labels, fraction):
    return sum(picks_for_fraction(fraction, int(c)) for c in torch.bincount(labels) if c > 0)


@pytest.fixture
def recorder(monkeypatch):
    """Intercept what the loop hands the library: every loss call (targets, weights), every
    weak/strong gather (dataset rows) and every selection result (each where the library
    calls it: the loss in the loop, the Augmenter in :class:`CoresetAugmentation`, the
    selectors in its selection pass)."""
    rec = {"loss": [], "weak": [], "strong": [], "selected": []}

    real_loss = loop.weighted_cross_entropy
    def loss(logits, targets, weights=None, **kw):
        rec["loss"].append((targets.detach().cpu().clone(), weights.detach().cpu().clone(), kw))
        return real_loss(logits, targets, weights, **kw)

    class Augmenter(ca.Augmenter):
        def batch(self, images, weak, index=None, generator=None, *, check=True):
            rec["weak"].append(index[:weak].cpu().clone())
            rec["strong"].append(index[weak:].cpu().clone())
            return super().batch(images, weak, index=index, generator=generator, check=check)

    def wrap(fn):
        def f(*a, **kw):
            out = fn(*a, **kw)
            rec["selected"].append(out)
            return out
        return f

    monkeypatch.setattr(loop, "weighted_cross_entropy", loss)
    monkeypatch.setattr(ca, "Augmenter", Augmenter)
    for name in ("select_coreset", "select_random"):
        monkeypatch.setattr(selection_pass, name, wrap(getattr(selection_pass, name)))
    return rec


EPOCH_FIELDS = {"epoch", "train_loss", "test_acc", "selection_s", "augment_s", "train_s",
                "fraction_never_selected", "maxloss_intersection"}
SUMMARY_FIELDS = {"method", "fraction", "test_acc", "epochs", "total_s", "config"}


@pytest.mark.parametrize("method", ["none", "full", "random", "max-loss", "coreset"])
def test_each_method_trains_one_epoch_and_logs_the_paper_fields(tmp_path, method):
    cfg = tiny(tmp_path, method=method, fraction=0.25)
    s = train(cfg)
    labels = load_dataset(cfg.resolved()).train_y
    k = per_class_budget(labels, 0.25)
    expected_rows = {"none": N_TRAIN, "full": 3 * N_TRAIN}.get(method, N_TRAIN + 2 * k)
    (rec,) = s["epochs"]
    assert SUMMARY_FIELDS <= s.keys() and EPOCH_FIELDS <= rec.keys()
    assert s["method"] == method and s["complete"] and rec["rows"] == expected_rows
    assert 0.0 <= s["test_acc"] <= 100.0 and math.isfinite(rec["train_loss"])
    assert s["config"]["dataset"] == "synthetic" and s["implementation"]["weighted_cross_entropy"]
    if method in ("random", "max-loss", "coreset"):
        assert rec["selected"] and rec["subset_size"] == k
        assert rec["fraction_never_selected"] == pytest.approx(1 - k / N_TRAIN)
        assert 0.0 <= rec["maxloss_intersection"] <= 1.0
    if method == "max-loss":
        assert rec["maxloss_intersection"] == 1.0
    assert rec["fraction_never_selected"] == {"none": None, "full": 0.0}.get(method, rec["fraction_never_selected"])
    lines = (tmp_path / "run" / "epochs.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["test_acc"] == s["test_acc"]


def test_loss_receives_selector_gamma_over_r_with_matching_targets(tmp_path, recorder):
    """Every original row reaches the loss with weight 1 and every selected j's r copies
    with gamma_j / r (the selector's raw weights), each paired with j's label."""
    cfg = tiny(tmp_path, method="coreset", fraction=0.2, copies=3, subset_weights="gamma")
    train(cfg)
    (coreset,) = recorder["selected"]
    gamma = coreset.weights
    assert len(set(gamma.tolist())) > 1, "all weights equal: the test would not see a wrong scaling"
    labels = load_dataset(cfg.resolved()).train_y
    got = sorted((int(t), float(w)) for ts, ws, _ in recorder["loss"] for t, w in zip(ts, ws))
    want = [(int(labels[i]), 1.0) for i in range(N_TRAIN)]
    rho = (gamma.float() / 3).tolist()  # float32, as the loss receives it
    want += [(int(labels[j]), g) for j, g in zip(coreset.indices, rho)] * 3
    assert got == sorted(want)
    assert all(kw.get("reduction") == "mean" for _, _, kw in recorder["loss"])


@pytest.mark.parametrize("how", ["normalized", "uniform"])
def test_subset_weights_rescale_gamma(tmp_path, recorder, how):
    train(tiny(tmp_path, method="coreset", fraction=0.2, copies=2, subset_weights=how))
    gamma = recorder["selected"][0].weights
    w = gamma / gamma.mean() if how == "normalized" else torch.ones_like(gamma)
    strong = torch.cat([ws for _, ws, _ in recorder["loss"]])
    strong = strong[strong != 1.0] if how == "normalized" else strong
    want = (w / 2).repeat(2)
    want = want[want != 1.0] if how == "normalized" else torch.cat([torch.ones(N_TRAIN), want])
    assert sorted(strong.tolist()) == pytest.approx(sorted(want.tolist()))


def test_baseline_copies_carry_one_over_r(tmp_path, recorder):
    train(tiny(tmp_path, method="random", fraction=0.2, copies=4))
    weights = torch.cat([w for _, w, _ in recorder["loss"]])
    k = recorder["selected"][0].indices.numel()
    assert (weights == 1.0).sum() == N_TRAIN and (weights == 0.25).sum() == 4 * k


def test_subset_only_trains_on_nothing_but_the_augmented_subset(tmp_path, recorder):
    cfg = tiny(tmp_path, method="coreset", fraction=0.2, copies=2, subset_only=True, subset_weights="gamma")
    s = train(cfg)
    (coreset,) = recorder["selected"]
    subset = sorted(coreset.indices.tolist())
    weak = sorted(torch.cat(recorder["weak"]).tolist())
    strong = sorted(torch.cat(recorder["strong"]).tolist())
    assert weak == subset and strong == sorted(subset * 2)
    assert s["epochs"][0]["rows"] == 3 * len(subset) < N_TRAIN
    weights = sorted(torch.cat([w for _, w, _ in recorder["loss"]]).tolist())
    g = coreset.weights.tolist()
    assert weights == pytest.approx(sorted(g + [x / 2 for x in g] * 2))


def test_inplace_replaces_the_selected_originals(tmp_path, recorder):
    train(tiny(tmp_path, method="random", fraction=0.25, aug_mode="inplace"))
    subset = set(recorder["selected"][0].indices.tolist())
    weak = torch.cat(recorder["weak"]).tolist()
    assert len(weak) == N_TRAIN - len(subset) and not subset & set(weak)


def test_epoch_rows_compositions():
    sub, w = torch.tensor([3, 7]), torch.tensor([5.0, 2.0])
    r = epoch_rows(10, "coreset", subset=sub, subset_weights=w, copies=2)
    assert r.index.tolist() == list(range(10)) + [3, 7, 3, 7]
    assert r.strong.sum() == 4 and r.weight[10:].tolist() == [2.5, 1.0, 2.5, 1.0]
    r = epoch_rows(10, "coreset", subset=sub, subset_weights=w, copies=2, aug_mode="inplace")
    assert sorted(r.index[~r.strong].tolist()) == [0, 1, 2, 4, 5, 6, 8, 9]
    r = epoch_rows(10, "coreset", subset=sub, subset_weights=w, copies=0, subset_only=True)
    assert r.index.tolist() == [3, 7] and r.weight.tolist() == [5.0, 2.0] and not r.strong.any()
    r = epoch_rows(4, "full", copies=3)
    assert r.index.numel() == 16 and (r.weight == 1).all() and r.strong.sum() == 12
    with pytest.raises(ValueError, match="subset"):
        epoch_rows(4, "random")


@pytest.mark.parametrize("method,select_every", [("coreset", 2), ("random", 1)])
def test_resume_equals_uninterrupted(tmp_path, method, select_every):
    """Stop after one epoch, resume: every record and the final weights match a run that was
    never interrupted (selection state, RNG streams, momentum and schedule all restored)."""
    kw = dict(method=method, fraction=0.3, epochs=3, select_every=select_every, warmup_epochs=1)
    a = train(tiny(tmp_path, out=str(tmp_path / "a"), **kw))
    part = train(tiny(tmp_path, out=str(tmp_path / "b"), stop_after=1, **kw))
    assert not part["complete"] and len(part["epochs"]) == 1
    b = train(tiny(tmp_path, out=str(tmp_path / "b"), resume="auto", **kw))
    assert b["complete"]
    keys = ("train_loss", "test_acc", "lr", "rows", "fraction_never_selected", "maxloss_intersection", "subset_size")
    assert [[e[k] for k in keys] for e in a["epochs"]] == [[e[k] for k in keys] for e in b["epochs"]]
    ma = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)["model"]
    mb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["model"]
    assert all(torch.equal(ma[k], mb[k]) for k in ma)
    assert len((tmp_path / "b" / "epochs.jsonl").read_text().splitlines()) == 3


def test_resume_refuses_a_checkpoint_with_other_settings(tmp_path, capsys):
    base = ["--dataset", "synthetic", "--train-size", "60", "--image-size", "8", "--epochs", "2",
            "--quiet", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert main(base + ["--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--resume", "--lr", "0.05"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr" in err[0]


def test_same_seed_repeats_and_other_seed_differs(tmp_path):
    runs = [train(tiny(tmp_path, out=str(tmp_path / f"s{i}"), seed=s, method="random", fraction=0.3))
            for i, s in enumerate((5, 5, 6))]
    losses = [r["epochs"][0]["train_loss"] for r in runs]
    assert losses[0] == losses[1] != losses[2]


def test_label_noise_flips_the_requested_share_to_other_classes():
    cfg = TrainConfig(**{**TINY, "label_noise": 0.5}).resolved()
    clean = load_dataset(dataclasses.replace(cfg, label_noise=0.0))
    noisy = load_dataset(cfg)
    changed = clean.train_y != noisy.train_y
    assert int(changed.sum()) == N_TRAIN // 2 and torch.equal(changed, noisy.noisy)


def test_imbalance_makes_a_long_tail():
    ds = load_dataset(TrainConfig(dataset="synthetic", train_size=1000, image_size=8, imbalance=10).resolved())
    counts = torch.bincount(ds.train_y, minlength=10)
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.15) and (counts[:-1] >= counts[1:]).all()


def test_digits_is_built_in_and_never_flipped():
    ds = load_dataset(TrainConfig(dataset="digits").resolved())
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.shape[1:] == (1, 8, 8)
    assert ds.train_y.numel() + ds.test_y.numel() == 1797 and not ds.flip


@pytest.mark.parametrize("name,params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("wrn-28-10", 36.5e6)])
def test_paper_models_have_their_published_sizes(name, params):
    m = build_model(name, 10, (3, 32, 32))
    count = sum(p.numel() for p in m.parameters())
    assert count == pytest.approx(params, rel=0.03)
    if name != "wrn-28-10":  # a forward pass of WRN on CPU is slow and adds nothing here
        m.eval()
        with torch.no_grad():
            assert m.embed(torch.zeros(2, 3, 32, 32)).shape == (2, 64) and m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_last_layer_features_embedding_runs(tmp_path):
    s = train(tiny(tmp_path, method="coreset", embedding="last-layer-features", fraction=0.2))
    assert s["epochs"][0]["selected"]


@pytest.mark.parametrize("argv,needle", [
    (["--fraction", "0"], "--fraction"),
    (["--fraction", "1.5"], "--fraction"),
    (["--model", "resnet99"], "--model"),
    (["--dataset", "cifar10"], "--data-dir"),
    (["--dataset", "cifar10", "--data-dir", "/nonexistent/coreaug"], "--download"),
    (["--dataset", "svhn", "--data-dir", "/nonexistent/coreaug"], "--download"),
    (["--method", "full", "--subset-only"], "--subset-only"),
    (["compare", "--methods", "none,bogus"], "bogus"),
    (["--epochs", "0"], "--epochs"),
    (["--resume", "/nonexistent/ckpt.pt", "--dataset", "synthetic", "--train-size", "20", "--image-size", "8"],
     "checkpoint"),
])
def test_bad_arguments_exit_with_one_line(argv, needle, capsys, tmp_path):
    code = main(argv + ["--quiet", "--out", str(tmp_path / "x")])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert lines[0].startswith("coreaug-train: error:") and needle in lines[0] and "Traceback" not in captured.err


def test_module_entry_point_reports_bad_arguments_in_one_line():
    """The real process (``python -m coreaug_fast.train``, what the console script runs)."""
    import subprocess
    import sys
    p = subprocess.run([sys.executable, "-m", "coreaug_fast.train", "--fraction", "2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--fraction" in p.stderr, p.stderr


# ------------------------------------------------------------------ resume: safety and extension

class _RunsCode:
    """Unpickling this runs code (writes a file): what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, capsys):
    base = ["--dataset", "synthetic", "--train-size", "60", "--image-size", "8", "--epochs", "2",
            "--quiet", "--device", "cpu", "--out", str(tmp_path / "r")]
    assert main(base + ["--stop-after", "1"]) == 0
    ckpt = tmp_path / "r" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)  # what the loop writes loads safely
    marker = tmp_path / "pwned"
    state["records"].append(_RunsCode(str(marker)))
    torch.save(state, ckpt)
    capsys.readouterr()
    assert main(base + ["--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert not marker.exists(), "loading the checkpoint ran code"
    assert len(err) == 1 and "refusing" in err[0] and "Traceback" not in err[0]


def test_resume_rejects_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a checkpoint")
    code = main(["--dataset", "synthetic", "--train-size", "20", "--image-size", "8", "--quiet", "--device", "cpu",
                 "--out", str(tmp_path / "x"), "--resume", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "junk.pt" in err[0]


def test_resume_extends_a_finished_run(tmp_path):
    """--epochs larger than the checkpoint's continues a finished run; fewer than it has
    done is refused."""
    kw = dict(method="coreset", fraction=0.3, select_every=2)
    done = train(tiny(tmp_path, epochs=2, **kw))
    assert done["complete"] and len(done["epochs"]) == 2
    more = train(tiny(tmp_path, epochs=3, resume="auto", **kw))
    assert more["complete"] and [e["epoch"] for e in more["epochs"]] == [1, 2, 3]
    assert more["epochs"][:2] == done["epochs"]
    assert more["epochs"][2]["selected"]  # epoch index 2 = R: the schedule of selections continues
    with pytest.raises(ValueError, match="epochs"):
        train(tiny(tmp_path, epochs=2, resume="auto", **kw))


def test_progress_bars_only_on_a_terminal(tmp_path, capsys):
    """Not quiet, output captured (not a tty): the per-epoch line, but no progress bar."""
    train(tiny(tmp_path, method="random", fraction=0.3, quiet=False))
    captured = capsys.readouterr()
    assert "batch" not in captured.err and "\r" not in captured.err, captured.err[:300]
    assert "epoch 1/1" in captured.out


def test_trainer_takes_a_user_model_and_optimises_its_parameters(tmp_path):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 32), torch.nn.ReLU())
            self.fc = torch.nn.Linear(32, 10)

        def forward(self, x):
            return self.fc(self.body(x))

    net = Net()
    before = [p.detach().clone() for p in net.parameters()]
    t = Trainer(tiny(tmp_path, method="coreset", fraction=0.2, embedding="last-layer-features"), model=net,
                features=net.fc)
    assert t.model is net
    assert {id(p) for g in t.optimizer.param_groups for p in g["params"]} == {id(p) for p in net.parameters()}
    rec = t.run_epoch(progress=False)
    assert rec["selected"] and all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    with pytest.raises(ValueError, match="model"):
        Trainer(tiny(tmp_path), model="resnet20")


# ------------------------------------------------------------------ DDP training (moved from test_distributed)

def test_shard_takes_every_wth_row_and_pads_with_weight_zero():
    from coreaug_fast.rows import EpochRows, shard
    rows = EpochRows(torch.arange(10, 17), torch.zeros(7, dtype=torch.bool), torch.ones(7))
    parts = [shard(rows, r, 3) for r in range(3)]
    assert [p.index.numel() for p in parts] == [3, 3, 3]
    assert sorted(torch.cat([p.index[p.weight > 0] for p in parts]).tolist()) == list(range(10, 17))
    assert float(sum(p.weight.sum() for p in parts)) == 7.0  # the two padding rows weigh nothing


def test_ddp_epoch_under_torchrun(tmp_path):
    """One epoch of coreaug-train on 2 gloo ranks: it finishes, both ranks log the same
    coreset (SHA-256 of indices and weights), and that coreset is the one a single process
    selects from the same initial model (CPU conv results do not depend on the batch)."""
    import os
    import subprocess
    import sys
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--train-size", "120", "--image-size", "8", "--epochs", "1",
            "--batch-size", "32", "--device", "cpu", "--copies", "2", "--quiet", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "coreaug_fast.train", *args], capture_output=True, text=True, env=env, timeout=240)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.count("test acc") == 1  # one line, from rank 0
    lines = [json.loads((out / "ranks" / f"rank{r}.jsonl").read_text()) for r in range(2)]
    assert lines[0]["subset_sha256"] == lines[1]["subset_sha256"]
    assert lines[0]["subset_size"] == 20 and lines[0]["world_size"] == 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["subset_sha256"] == lines[0]["subset_sha256"]
    sel = torch.load(out / "checkpoint.pt", weights_only=True)["selection"]
    assert ddp.fingerprint(sel["subset"], sel["weights"]) == lines[0]["subset_sha256"]

    cfg = TrainConfig(dataset="synthetic", train_size=120, image_size=8, epochs=1, batch_size=32, device="cpu")
    t = Trainer(cfg)
    t.augmentation.epoch(t.model, 32)  # selects (epoch 0) without training
    one = t.augmentation.state_dict()
    assert torch.equal(one["subset"], sel["subset"]) and torch.equal(one["weights"], sel["weights"])
    # the overlap with the max-loss subset needs every rank's losses, gathered in row order
    assert sel["maxloss_intersection"] == one["maxloss_intersection"]


# ------------------------------------------------------------------ folders of images (--dataset folder)

@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    from image_folders import make_imagenet_layout

    return make_imagenet_layout(tmp_path_factory.mktemp("imagenet-layout"), per_class=8, classes=3)


def test_cli_trains_one_epoch_on_a_folder(image_root, tmp_path, capsys):
    """--dataset folder: ImageFolders of train/ and val/, images of any size read in 2 workers,
    torchvision's resnet18, AutoAugment; the run's files as for the built-in datasets."""
    out = tmp_path / "run"
    code = main(["--dataset", "folder", "--data-dir", str(image_root), "--image-size", "32", "--workers", "2",
                 "--model", "resnet18", "--policy", "autoaugment-imagenet", "--epochs", "1", "--batch-size", "8",
                 "--fraction", "0.25", "--copies", "2", "--device", "cpu", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    (rec,) = summary["epochs"]
    assert summary["config"]["weak"] == "resized-crop" and summary["config"]["policy"] == "autoaugment-imagenet"
    assert rec["rows"] == 24 + 2 * 3 * 2 and rec["selected"] and 0 <= rec["test_acc"] <= 100
    assert (out / "checkpoint.pt").is_file()


def test_weights_start_the_model_and_skip_a_classifier_of_another_size(image_root, tmp_path, capsys):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(1)
    imagenet = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pt"
    torch.save(imagenet.state_dict(), path)
    cfg = TrainConfig(dataset="folder", data_dir=str(image_root), image_size=32, workers=0, model="resnet18",
                      weights=str(path), epochs=1, device="cpu", quiet=True)
    trainer = Trainer(cfg)
    assert trainer.weights_skipped == ["fc.bias", "fc.weight"]
    got = trainer.model.state_dict()
    assert torch.equal(got["conv1.weight"], imagenet.state_dict()["conv1.weight"])
    assert got["fc.weight"].shape == (3, 512)
    # the CLI says which entries it kept
    code = main(["--dataset", "folder", "--data-dir", str(image_root), "--image-size", "16", "--workers", "0",
                 "--model", "resnet18", "--weights", str(path), "--epochs", "1", "--device", "cpu",
                 "--method", "none", "--out", str(tmp_path / "run")])
    assert code == 0
    assert f"--weights {path}: kept the model's own fc.bias, fc.weight (another shape there)" in capsys.readouterr().out


def test_weights_of_another_architecture_are_refused(image_root, tmp_path, capsys):
    path = tmp_path / "cnn.pt"
    torch.save(build_model("cnn", 3, (3, 16, 16)).state_dict(), path)
    code = main(["--dataset", "folder", "--data-dir", str(image_root), "--image-size", "16", "--model", "resnet18",
                 "--weights", str(path), "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "do not match --model's" in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_resume_does_not_read_the_weights_the_checkpoint_replaces(image_root, tmp_path):
    path = tmp_path / "r18.pt"
    torch.save(build_model("resnet18", 3, (3, 16, 16)).state_dict(), path)
    run = ["--dataset", "folder", "--data-dir", str(image_root), "--image-size", "16", "--model", "resnet18",
           "--weights", str(path), "--epochs", "2", "--device", "cpu", "--method", "none", "--quiet",
           "--out", str(tmp_path / "run")]
    assert main(run + ["--stop-after", "1"]) == 0
    path.unlink()
    assert main(run + ["--resume"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["complete"]


@pytest.mark.parametrize("content", [b"hello world", b"some text", b"", b"PK\x03\x04 broken zip"])
def test_weights_that_are_not_a_state_dict_are_one_line(image_root, tmp_path, capsys, content):
    path = tmp_path / "junk.pt"
    path.write_bytes(content)
    code = main(["--dataset", "folder", "--data-dir", str(image_root), "--image-size", "16", "--model", "resnet18",
                 "--weights", str(path), "--device", "cpu", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"coreaug-train: error: --weights {path}: not a state dict of tensors")
    assert err.count("\n") == 1


@pytest.mark.parametrize("policy", ["autoaugment-cifar10", "trivialaugment"])
def test_a_policy_trains_end_to_end_and_is_recorded(tmp_path, policy, recorder):
    """--policy: the strong copies are the named policy's (its ops width: AutoAugment 2,
    TrivialAugment 1), and the run's configuration records it."""
    s = train(tiny(tmp_path, method="coreset", fraction=0.25, policy=policy, num_ops=None))
    assert s["config"]["policy"] == policy and s["config"]["num_ops"] is None and s["complete"]
    assert sum(idx.numel() for idx in recorder["strong"]) == 2 * per_class_budget(load_dataset(
        tiny(tmp_path).resolved()).train_y, 0.25)
