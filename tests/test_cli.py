"""coreaug-train's argument contract: bad values end in one line naming the option (exit 2),
never a traceback or a silent run; --help shows every default."""
import pytest

from coreaug_fast.train import TrainConfig, main
from coreaug_fast.train.cli import build_parser
from coreaug_fast.train.config import UsageError

TINY = ["--dataset", "synthetic", "--train-size", "20", "--image-size", "8", "--epochs", "1", "--quiet",
        "--device", "cpu"]


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "1e308"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--weight-decay", "inf"], "--weight-decay"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--momentum", "nan"], "--momentum"),
    (["--momentum", "1"], "--momentum"),
    (["--num-ops", "17"], "--num-ops"),
    (["--num-ops", "0"], "--num-ops"),
    (["--seed", "-1"], "--seed"),
    (["--seed", str(2**32)], "--seed"),
    (["--label-noise", "nan"], "--label-noise"),
    (["--imbalance", "nan"], "--imbalance"),
    (["--imbalance", "inf"], "--imbalance"),
    (["--augment-impl", "pil"], "--augment-impl"),
    (["--group-batches", "-1"], "--group-batches"),
    (["--copies", "100000000"], "--copies"),
    (["compare", "--methods", "random,coreset", "--seeds", "0,0"], "distinct"),
    (["compare", "--methods", "random,coreset", "--seeds", "0,1", "--stop-after", "3"], "--stop-after"),
])
def test_bad_values_exit_2_with_one_line_before_training(argv, needle, capsys, tmp_path):
    out = tmp_path / "x"
    compare = argv[:1] == ["compare"]
    code = main((argv[:1] + TINY + argv[1:] if compare else TINY + argv) + ["--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("coreaug-train: error:") and needle in err and "Traceback" not in err
    assert not any(out.rglob("summary.json"))


@pytest.mark.parametrize("out", ["/proc/coreaug-x", "/proc/coreaug-x/y"])
@pytest.mark.parametrize("compare", [False, True])
def test_unwritable_out_is_a_usage_error(out, compare, capsys):
    argv = (["compare", "--methods", "random", "--seeds", "0"] if compare else []) + TINY + ["--out", out]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out" in err and "Traceback" not in err


def test_config_checks_accept_numpy_scalars_and_refuse_non_finite():
    np = pytest.importorskip("numpy")
    c = TrainConfig(lr=np.float32(0.05), weight_decay=np.float64(1e-4), seed=np.int64(3), num_ops=np.int32(2)).resolved()
    assert isinstance(c.lr, float) and c.lr == pytest.approx(0.05) and c.seed == 3 and c.num_ops == 2
    for bad in (dict(lr=float("nan")), dict(weight_decay=float("inf")), dict(seed=True), dict(lr="0.1")):
        with pytest.raises(UsageError):
            TrainConfig(**bad).resolved()


def test_valid_edges_are_accepted():
    TrainConfig(lr=10.0, weight_decay=0.0, momentum=0.0, num_ops=16, seed=2**32 - 1).resolved()


def test_help_shows_every_default(capsys):
    assert main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--batch-size BATCH_SIZE rows per SGD step (default: 128)", "(default: 0.1)",
                   "SGD momentum, in [0, 1) (default: 0.9)", "(default: 0.0001)", "(default: fused)",
                   "(default: random)", "(default coreset)", "(default: digits)"):
        assert needle in text, needle
    # every option with a value to state states it, in the help text or the appended default
    for action in build_parser()._actions:
        if action.option_strings and action.default not in (None, False, "==SUPPRESS=="):
            assert "default" in (build_parser().formatter_class("p")._get_help_string(action) or ""), action.dest


def test_single_run_with_bad_lr_never_trains(monkeypatch, tmp_path):
    from coreaug_fast.train import loop

    monkeypatch.setattr(loop, "train", lambda *a, **k: pytest.fail("trained"))
    assert main(TINY + ["--lr", "nan", "--out", str(tmp_path / "r")]) == 2


def test_mnist5k_is_a_dataset_choice_with_the_cnn_default():
    assert TrainConfig(dataset="mnist5k").resolved().model == "cnn"
    assert "mnist5k" in build_parser().format_help()


@pytest.mark.parametrize("command, prog", [
    (["-m", "coreaug_fast.train", "--help"], "coreaug-train"),
    (["-m", "coreaug_fast.analysis"], "python -m coreaug_fast.analysis"),
    (["coreaug-train", "--help"], "coreaug-train"),
])
def test_ctrl_c_while_importing_is_one_line_and_exit_130(tmp_path, command, prog):
    """Ctrl-C during `import coreaug_fast` (in practice: during `import torch`), simulated by
    a `torch` that raises KeyboardInterrupt on import, placed first on the path."""
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise KeyboardInterrupt\n")
    if command[0] == "coreaug-train":
        script = shutil.which("coreaug-train", path=os.path.dirname(sys.executable))
        if script is None:
            pytest.skip("the coreaug-train script is not installed beside this interpreter")
        command = [script, *command[1:]]
    else:
        command = [sys.executable, *command]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    p = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert p.returncode == 130 and p.stderr == f"{prog}: interrupted\n", (p.returncode, p.stderr)
    # a program that only imports the library keeps Python's own KeyboardInterrupt
    p = subprocess.run([sys.executable, "-c", "import coreaug_fast"], capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert p.returncode != 130 and "Traceback" in p.stderr


@pytest.mark.parametrize("flag,value", [("--image-size", "64"), ("--workers", "3")])
def test_a_flag_of_another_dataset_is_refused_not_ignored(flag, value, capsys, tmp_path):
    """digits has its own 8×8 images and is held in memory: --image-size and --workers would
    change nothing yet be recorded in summary.json as if they had."""
    code = main(["--dataset", "digits", flag, value, "--epochs", "1", "--quiet", "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"coreaug-train: error: {flag} applies to --dataset")
    assert not (tmp_path / "x").exists()
