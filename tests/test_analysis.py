"""coreaug_fast.analysis: the Jacobian against torch.autograd.functional.jacobian and finite
differences, the spectrum against numpy's SVD, the App. C.1 measures against numpy/scipy,
chunking, determinism, bad input and the command line."""
import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch.func import functional_call

from coreaug_fast import analysis
from coreaug_fast.analysis import cli


def _mlp(d=5, h=7, c=3, dtype=torch.float64, seed=0, device="cpu"):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, h), torch.nn.Tanh(), torch.nn.Linear(h, c)).to(device, dtype)


def _data(n=12, d=5, c=3, dtype=torch.float64, seed=1, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=dtype).to(device),
            torch.randint(0, c, (n,), generator=g).to(device))


def _reference_jacobian(model, x):
    """(n·C, P) float64 via torch.autograd.functional.jacobian of the flat parameter vector."""
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for k, p in model.named_parameters() if p.requires_grad]
    flat = torch.cat([p.detach().reshape(-1) for k, p in model.named_parameters() if p.requires_grad])

    def f(w):
        parts, i = {}, 0
        for k, s in zip(names, shapes):
            parts[k] = w[i:i + s.numel()].view(s)
            i += s.numel()
        return functional_call(model, parts, (x,))

    jac = torch.autograd.functional.jacobian(f, flat)  # (n, C, P)
    return jac.reshape(-1, flat.numel())


def _noise(x):
    return x + 0.05 * torch.randn_like(x)


# ---------------------------------------------------------------- the Jacobian

@pytest.mark.parametrize("chunk_size", [1, 5, 64])
def test_jacobian_matches_autograd_functional(device, chunk_size):
    model, (x, y) = _mlp(device=device), _data(device=device)
    jac = analysis.network_jacobian(model, x, chunk_size=chunk_size)
    ref = _reference_jacobian(model, x)
    assert jac.shape == (12 * 3, 5 * 7 + 7 + 7 * 3 + 3) and jac.dtype == torch.float64
    # same float64 arithmetic in a different order
    torch.testing.assert_close(jac, ref, rtol=0, atol=1e-12)


def test_jacobian_target_rows_are_logit_rows(device):
    model, (x, y) = _mlp(device=device), _data(device=device)
    full = analysis.network_jacobian(model, x)
    tgt = analysis.network_jacobian(model, x, y, output="target", chunk_size=4)
    assert tgt.shape == (12, full.shape[1])
    torch.testing.assert_close(tgt, full.view(12, 3, -1)[torch.arange(12), y.cpu()].to(device), rtol=0, atol=1e-12)


def test_jacobian_matches_central_differences():
    model, (x, _) = _mlp(), _data()
    jac = analysis.network_jacobian(model, x)
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = torch.Generator().manual_seed(3)
    for _ in range(3):
        v = {k: torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in params.items()}
        flat_v = torch.cat([t.reshape(-1) for t in v.values()])
        h = 1e-6

        def f(sign):
            return functional_call(model, {k: params[k] + sign * h * v[k] for k in params}, (x,)).reshape(-1)

        fd = (f(1) - f(-1)) / (2 * h)
        # central differences: truncation O(h²)·f''' ≈ 1e-12, rounding eps64/h ≈ 1e-10
        torch.testing.assert_close(jac @ flat_v, fd, rtol=0, atol=1e-8)


def test_jacobian_float32_close_to_float64():
    m64, (x, _) = _mlp(), _data()
    m32 = _mlp(dtype=torch.float32)
    jac = analysis.network_jacobian(m32, x.float())
    assert jac.dtype == torch.float32
    torch.testing.assert_close(jac.double(), _reference_jacobian(m64, x), rtol=1e-5, atol=1e-6)


def test_frozen_parameters_buffers_and_mode():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6), torch.nn.ReLU(),
                                torch.nn.Linear(6, 2)).double()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model[0].weight.requires_grad_(False)
    model.train()
    x = torch.rand(9, 4, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    jac = analysis.network_jacobian(model, x, chunk_size=4)
    assert model.training  # mode restored
    for k, v in model.state_dict().items():  # batch-norm statistics untouched (eval mode)
        assert torch.equal(v, before[k]), k
    model.eval()
    ref = _reference_jacobian(model, x)  # only the trainable parameters: 6 + 6 + 6 + 12 + 2
    assert jac.shape == (18, 6 + 6 + 6 + 12 + 2)
    torch.testing.assert_close(jac, ref, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- the spectrum

@pytest.mark.parametrize("method,n,h", [("gram", 12, 7), ("svd", 12, 7), ("auto", 40, 3), ("auto", 12, 7)])
def test_spectrum_matches_numpy_svd(method, n, h):
    # (n, h) = (40, 3): 120 rows > 34 parameters, the auto route takes the SVD of J
    model, (x, y) = _mlp(h=h), _data(n=n)
    res = analysis.jacobian_spectrum(model, x, y, max_examples=n, method=method, progress=False)
    jac = _reference_jacobian(model, x).numpy()
    u_ref, s_ref, _ = np.linalg.svd(jac, full_matrices=False)
    s, u = res.original.singular_values.numpy(), res.original.left_vectors.numpy()
    r = min(jac.shape)
    assert s.shape == (r,) and u.shape == (jac.shape[0], r)
    assert np.all(np.diff(s) <= 0)
    # the Gram route squares the spectrum: absolute error ≈ √eps64·σ_max at the bottom
    np.testing.assert_allclose(s, s_ref, rtol=0, atol=(1e-7 if method != "svd" else 1e-12) * s_ref[0])
    np.testing.assert_allclose(u.T @ u, np.eye(r), atol=1e-10)
    # vectors of well-resolved values: same one-dimensional subspaces (signs are arbitrary)
    k = int((s_ref > 1e-4 * s_ref[0]).sum())
    np.testing.assert_allclose(np.abs(np.sum(u[:, :k] * u_ref[:, :k], 0)), 1.0, atol=1e-6)
    assert res.original.rank == int((s_ref > res.original.tol).sum())


def test_rank_tolerance_keeps_resolved_values_and_drops_zeros():
    # rank-3 float32 Jacobian: a linear model whose inputs lie in a 2-dimensional subspace
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    basis = torch.randn(2, 4)
    x = torch.randn(30, 2) @ basis
    res = analysis.jacobian_spectrum(model, x, torch.zeros(30, dtype=torch.long), progress=False)
    assert res.original.rank == 3  # two input directions and the bias


def test_chunking_does_not_change_the_result():
    model, (x, y) = _mlp(), _data(n=20)
    kw = dict(augment=_noise, max_examples=15, num_bins=4, progress=False)
    a = analysis.jacobian_spectrum(model, x, y, chunk_size=1, **kw)
    b = analysis.jacobian_spectrum(model, x, y, chunk_size=6, **kw)
    c = analysis.jacobian_spectrum(model, x, y, chunk_size=100, **kw)
    for other in (b, c):
        torch.testing.assert_close(other.original.singular_values, a.original.singular_values, rtol=0, atol=1e-12)
        torch.testing.assert_close(other.augmented.singular_values, a.augmented.singular_values, rtol=0, atol=1e-12)
        torch.testing.assert_close(other.measures.value_diff, a.measures.value_diff, rtol=0, atol=1e-12)
        torch.testing.assert_close(other.measures.angle, a.measures.angle, rtol=0, atol=1e-8)


def test_deterministic_under_seed_and_leaves_global_rng_alone():
    model, (x, y) = _mlp(), _data(n=40)
    kw = dict(augment=_noise, max_examples=10, num_bins=5, progress=False)
    state = torch.get_rng_state()
    a = analysis.jacobian_spectrum(model, x, y, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    b = analysis.jacobian_spectrum(model, x, y, seed=7, **kw)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(a.augmented.singular_values, b.augmented.singular_values)
    assert torch.equal(a.measures.angle, b.measures.angle)
    c = analysis.jacobian_spectrum(model, x, y, seed=8, **kw)
    assert not torch.equal(a.indices, c.indices)


def test_identity_augmentation_changes_nothing():
    model, (x, y) = _mlp(), _data()
    res = analysis.jacobian_spectrum(model, x, y, augment=lambda t: t.clone(), num_bins=6, progress=False)
    assert torch.equal(res.measures.value_diff, torch.zeros(6, dtype=torch.float64))
    assert float(res.measures.angle.max()) < 1e-6


def test_subsample_classes_and_count():
    y = torch.arange(100) % 5
    idx = analysis.subsample(y, 12, seed=3, classes=[0, 2])
    assert idx.numel() == 12 and torch.all(idx[1:] > idx[:-1])
    assert set(y[idx].tolist()) <= {0, 2}
    assert torch.equal(analysis.subsample(y, 1000, classes=[4]), torch.arange(4, 100, 5))
    model, (x, _) = _mlp(c=5), _data(n=100)
    res = analysis.jacobian_spectrum(model, x, y, max_examples=12, classes=[0, 2], seed=3, progress=False)
    assert torch.equal(res.indices, idx) and res.num_rows == 12 * 5 and res.num_classes == 5


# ---------------------------------------------------------------- the measures

def _orthonormal(m, k, g):
    return np.linalg.qr(g.standard_normal((m, k)))[0]


def test_binned_measures_match_numpy_and_scipy():
    g = np.random.default_rng(0)
    r, m, bins = 97, 120, 30
    s0, s1 = g.exponential(size=r), g.exponential(size=r)
    u0, u1 = _orthonormal(m, r, g), _orthonormal(m, r, g)
    res = analysis.binned_measures(s0, s1, u0, u1, num_bins=bins)
    o0, o1 = np.argsort(s0), np.argsort(s1)
    parts0, parts1 = np.array_split(np.arange(r), bins), np.array_split(np.arange(r), bins)
    want_diff = [s1[o1][p].mean() - s0[o0][p].mean() for p in parts1]
    want_angle = [scipy.linalg.subspace_angles(u0[:, o0[p]], u1[:, o1[q]]).mean() for p, q in zip(parts0, parts1)]
    assert res.bounds.tolist() == [0] + np.cumsum([len(p) for p in parts0]).tolist()
    np.testing.assert_allclose(res.value_diff.numpy(), want_diff, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.original_mean.numpy(), [s0[o0][p].mean() for p in parts0], rtol=1e-13)
    np.testing.assert_allclose(res.angle.numpy(), want_angle, rtol=0, atol=1e-10)
    d = res.to_dict()
    assert len(d["angle_deg"]) == bins and json.dumps(d)


@pytest.mark.parametrize("k,l,scale", [(4, 4, 1.0), (3, 6, 1.0), (5, 2, 1e-9), (6, 6, 1e-5)])
def test_principal_angles_match_scipy_including_tiny_ones(k, l, scale):
    g = np.random.default_rng(k * 10 + l)
    m = 30
    a = _orthonormal(m, k, g)
    # b's first min(k, l) columns lie within `scale` of span(a): angles of order `scale`,
    # which arccos alone cannot resolve
    near = np.concatenate([a, _orthonormal(m, l, g)], 1)[:, :l]
    b = np.linalg.qr(near + scale * g.standard_normal((m, l)))[0]
    got = analysis.principal_angles(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = np.sort(scipy.linalg.subspace_angles(a, b))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-14)


def test_bin_bounds_equal_counts():
    assert analysis.bin_bounds(10, 3).tolist() == [0, 4, 7, 10]
    assert analysis.bin_bounds(30, 30).tolist() == list(range(31))


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs,match", [
    (dict(max_examples=0), "max_examples"),
    (dict(max_examples=-3), "max_examples"),
    (dict(max_examples=2.5), "max_examples"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(output="probs"), "output"),
    (dict(method="qr"), "method"),
    (dict(augment=3), "augment must be callable"),
    (dict(augment=lambda t: t[:-1]), "one output per input"),
    (dict(augment=lambda t: t.numpy()), "must return a torch.Tensor"),
    (dict(augment=_noise, num_bins=1000), "num_bins"),
    (dict(num_bins=0), "num_bins"),
    (dict(classes=[9]), "classes"),
])
def test_bad_arguments_raise(kwargs, match):
    model, (x, y) = _mlp(), _data()
    kwargs.setdefault("progress", False)
    with pytest.raises(ValueError, match=match):
        analysis.jacobian_spectrum(model, x, y, **kwargs)


def test_bad_tensors_and_models_raise():
    model, (x, y) = _mlp(), _data()
    with pytest.raises(ValueError, match="rows"):
        analysis.jacobian_spectrum(model, x, y[:-1], progress=False)
    with pytest.raises(ValueError, match="targets"):
        analysis.jacobian_spectrum(model, x, y.double(), progress=False)
    with pytest.raises(ValueError, match="targets"):
        analysis.jacobian_spectrum(model, x, y + 3, output="target", progress=False)
    bad = x.clone()
    bad[:] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        analysis.jacobian_spectrum(model, bad, y, progress=False)
    with pytest.raises(ValueError, match=r"\(b, C\)"):
        flat_output = torch.nn.Sequential(torch.nn.Linear(5, 3), torch.nn.Flatten(0)).double()
        analysis.jacobian_spectrum(flat_output, x, y, progress=False)
    with pytest.raises(ValueError, match="trainable"):
        analysis.jacobian_spectrum(_mlp().requires_grad_(False), x, y, progress=False)
    with pytest.raises(ValueError, match="model must be"):
        analysis.jacobian_spectrum(lambda t: t, x, y, progress=False)


def test_binned_measures_bad_input():
    s = torch.rand(10, dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(12, 10, dtype=torch.float64))[0]
    with pytest.raises(ValueError, match="values"):
        analysis.binned_measures(s, s[:-1], num_bins=5)
    with pytest.raises(ValueError, match="both"):
        analysis.binned_measures(s, s, u, num_bins=5)
    with pytest.raises(ValueError, match="one column per singular value"):
        analysis.binned_measures(s, s, u[:, :-1], u[:, :-1], num_bins=5)
    with pytest.raises(ValueError, match="num_bins"):
        analysis.binned_measures(s, s, num_bins=11)
    with pytest.raises(ValueError, match="NaN"):
        analysis.binned_measures(s, s * float("nan"), num_bins=5)


# ---------------------------------------------------------------- command line

def test_cli_writes_json_and_plots(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("sklearn")
    rc = cli.main(["--out", str(tmp_path), "--epochs", "1", "--hidden", "8", "--max-examples", "12",
                   "--bins", "5", "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "spectrum.json").read_text())
    res = report["result"]
    assert res["num_examples"] == 12 and res["num_rows"] == 120 and res["num_params"] == 64 * 8 + 8 + 8 * 10 + 10
    assert len(res["measures"]["value_diff"]) == 5 and len(res["original"]["singular_values"]) == 120
    for name in ("histogram.png", "bins.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean principal angle" in capsys.readouterr().out


def test_cli_user_data_model_and_augment(tmp_path, monkeypatch):
    x, y = _data(n=30, dtype=torch.float32)
    torch.save({"images": x, "targets": y}, tmp_path / "d.pt")
    (tmp_path / "mymod.py").write_text(
        "import torch\n"
        "def net():\n    torch.manual_seed(0)\n    return torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))\n"
        "def aug(x):\n    return x + 0.1 * torch.randn_like(x)\n")
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["--data", "d.pt", "--model", "mymod:net", "--augment", "mymod:aug", "--classes",
                   "--bins", "3", "--output", "target", "--no-plots", "--quiet", "--out", "o"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "spectrum.json").read_text())["result"]
    assert res["num_rows"] == 30 and res["output"] == "target"
    # --weights loads a state_dict into --model: scaled weights give other singular values
    from mymod import net
    trained = net()
    with torch.no_grad():
        for p in trained.parameters():
            p.mul_(3)
    torch.save(trained.state_dict(), tmp_path / "w.pt")
    rc = cli.main(["--data", "d.pt", "--model", "mymod:net", "--weights", "w.pt", "--augment", "mymod:aug",
                   "--classes", "--bins", "3", "--output", "target", "--no-plots", "--quiet", "--out", "w"])
    assert rc == 0
    loaded = json.loads((tmp_path / "w" / "spectrum.json").read_text())["result"]
    direct = analysis.jacobian_spectrum(trained, x, y, lambda v: v + 0.1 * torch.randn_like(v), 900,
                                        output="target", num_bins=3, progress=False)
    assert loaded["original"]["singular_values"] == pytest.approx(direct.original.singular_values.tolist())
    assert loaded["original"]["singular_values"] != pytest.approx(res["original"]["singular_values"])


def _bad_data_files(tmp):
    x, y = _data(n=10, dtype=torch.float32)
    torch.save({"images": x, "targets": y}, tmp / "good.pt")
    whole = (tmp / "good.pt").read_bytes()
    (tmp / "truncated.pt").write_bytes(whole[:len(whole) // 2])
    (tmp / "garbage.pt").write_bytes(b"this is not a checkpoint\n" * 20)
    (tmp / "garbage.npz").write_bytes(b"PK\x03\x04 not really a zip" * 10)
    np.savez(tmp / "good.npz", images=x.numpy(), targets=y.numpy())
    whole = (tmp / "good.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(whole[:len(whole) // 2])
    torch.save({"images": x}, tmp / "no-targets.pt")
    np.savez(tmp / "no-targets.npz", images=x.numpy())
    torch.save({"images": x, "targets": y.float()}, tmp / "float-targets.pt")
    torch.save([x, y, y], tmp / "triple.pt")


@pytest.mark.parametrize("name,match", [
    ("missing.pt", "no such file"),
    ("truncated.pt", "not a readable .pt file"),
    ("garbage.pt", "not a readable .pt file"),
    ("garbage.npz", "not a readable .npz file"),
    ("truncated.npz", "not a readable .npz file"),
    ("no-targets.pt", "no 'targets' in the file"),
    ("no-targets.npz", "no 'targets' in the file"),
    ("float-targets.pt", "targets must be a 1-D integer array"),
    ("triple.pt", "expected a dict with 'images' and 'targets'"),
])
def test_cli_bad_data_files_give_one_line_errors(tmp_path, capsys, name, match):
    _bad_data_files(tmp_path)
    rc = cli.main(["--data", str(tmp_path / name), "--no-plots", "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert match in err and name in err


@pytest.mark.parametrize("argv", [["--bins", "0"], ["--max-examples", "0"], ["--chunk-size", "0"],
                                  ["--hidden", "0"], ["--classes", "99"], ["--weights", "w.pt"],
                                  ["--augment", "os:nothere"]])
def test_cli_refuses_bad_values_before_pretraining(argv, tmp_path, monkeypatch, capsys):
    def no_training(*args, **kwargs):
        raise AssertionError("pretrained before refusing the arguments")

    monkeypatch.setattr(cli, "train", no_training)
    rc = cli.main([*argv, "--quiet", "--no-plots", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and argv[0].lstrip("-") in err, err
    assert not (tmp_path / "o").exists()
