"""The CPU-side plumbing of `make gpu-check` (bench/gpu_check.py): with no GPU it exits 0
and writes its report; the report marks each target PASS/FAIL from the figures; the test
plugin picks the CUDA tests, GPU-only ones first."""
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check  # noqa: E402
import gpu_check_plugin  # noqa: E402


def test_without_a_gpu_it_says_so_writes_the_report_and_exits_0(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "no CUDA GPU" in run.stdout
    result = json.loads((tmp_path / "no-gpu.json").read_text())
    assert result["gpu"] is None and result["benchmarks"] == {}
    assert "not measured" in (tmp_path / "no-gpu.md").read_text()


def test_a_phase_keeps_the_figures_it_measured_before_it_died(tmp_path, monkeypatch):
    """The driver kills a phase at its time budget (SIGKILL): each figure must already be in
    the result file when the next measurement starts."""
    seen = {}

    def dies(deadline, out):
        out["first_ms"] = 1.5
        seen["on_disk"] = json.loads(path.read_text())
        raise RuntimeError("killed")

    path = tmp_path / "phase.json"
    monkeypatch.setitem(gpu_check.BENCHES, "selector", dies)
    with pytest.raises(RuntimeError):
        gpu_check.run_phase("selector", str(path), 10.0)
    assert seen["on_disk"] == {"first_ms": 1.5}


def test_bad_phase_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        gpu_check.main(["--phases", "build,nonsense"])
    assert exit_.value.code == 2
    assert "nonsense" in capsys.readouterr().err


def test_report_marks_each_target_from_the_figures(tmp_path):
    result = {
        "started": "now", "gpu": {"name": "NVIDIA H200", "capability": "9.0", "torch": "2.11", "cuda": "13.0"},
        "wall_s": 512.0, "build": {"ok": True, "seconds": 150.0, "why": None},
        "build_info": {"extension": True, "cuda_kernels": True},
        "tests": {"passed": 40, "failed": ["tests/test_x.py::test_y[cuda]"], "skipped": 2, "deselected": 300},
        "benchmarks": {
            "selector": {"selector_cifar10_ms": 12.5, "selector_n10k_d1024_ms": 75.0,
                         "selector_imagenet_ms": 1500.0},
            "augment": {"augment_vs_kornia": 14.0, "augment_vs_floor": 2.5},
            "loss": {"loss_vs_unfused": 1.6},
            "train": {"train_full_epoch_s": 30.0, "train_coreset10_epoch_s": 8.0,
                      "train_coreset30_epoch_s": "failed: RuntimeError: boom"},
            "folder": {"folder_full_vs_torchvision": 4.1, "folder_coreset10_vs_floor": 1.7},
        },
    }
    verdicts = {text: ok for text, _, ok in gpu_check.evaluate(result)}
    assert list(verdicts.values()) == [True, False, True, True, False, True, True, True, False]  # 30 / 8 = 3.75x
    js, md = gpu_check.write_report(result, tmp_path)
    assert js.name == "NVIDIA-H200.json" and json.loads(js.read_text())["wall_s"] == 512.0
    text = md.read_text()
    assert text.count("| PASS |") == 6 and text.count("| FAIL |") == 3
    assert "FAILED tests/test_x.py::test_y[cuda]" in text and "failed: RuntimeError: boom" in text
    empty = {text: ok for text, _, ok in gpu_check.evaluate({"benchmarks": {}})}
    assert set(empty.values()) == {None}


def _item(name, *, reason=None, params=None, triton=False):
    marks = {"skipif": [SimpleNamespace(kwargs={"reason": reason})] if reason else [],
             "triton": [SimpleNamespace(kwargs={})] if triton else []}
    spec = SimpleNamespace(params=params, id="-".join(map(str, params.values()))) if params else None
    item = SimpleNamespace(name=name, iter_markers=lambda kind: iter(marks.get(kind, [])))
    if spec is not None:
        item.callspec = spec
    return item


def test_plugin_runs_gpu_only_tests_first_then_cuda_cases_then_triton():
    items = [_item("cpu_only"), _item("greedy", triton=True), _item("dev_cpu", params={"device": "cpu"}),
             _item("dev_cuda", params={"device": "cuda", "n": 3}), _item("gpu_only", reason="needs a CUDA device"),
             _item("other_skip", reason="needs numpy")]
    first, second, third, rest = gpu_check_plugin.classify(items)
    assert [i.name for i in first] == ["gpu_only"]
    assert [i.name for i in second] == ["dev_cuda"]
    assert [i.name for i in third] == ["greedy"]
    assert [i.name for i in rest] == ["cpu_only", "dev_cpu", "other_skip"]


def test_every_triton_test_module_is_marked_for_the_gpu_run():
    """A Triton test left unmarked would be deselected on the GPU, the one place it compiles."""
    import ast

    tests = Path(__file__).resolve().parent
    for path in sorted(tests.glob("test_*.py")):
        text = path.read_text()
        if "TRITON_DEVICE" not in text:
            continue
        tree = ast.parse(text)
        module_mark = any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)
                          and "triton" in ast.unparse(n.value) for n in tree.body)
        assert module_mark or "pytest.mark.triton" in text, f"{path.name} uses TRITON_DEVICE but has no triton mark"


def test_the_report_is_on_disk_after_every_phase(tmp_path, monkeypatch):
    """The device tool kills a command at 10 minutes: whatever phases finished before a kill
    must already be in the report (it was written only at the end)."""
    gpu = {"name": "NVIDIA H100", "capability": "9.0", "torch": "2.11", "cuda": "13.0"}
    monkeypatch.setattr(gpu_check, "_gpu", lambda: gpu)
    monkeypatch.setattr(gpu_check, "phase_build", lambda budget, result: True)
    monkeypatch.setattr(gpu_check, "_build_info", lambda: {"extension": True})
    monkeypatch.setattr(gpu_check, "install_peer_wheels", lambda result: None)

    def bench(name, budget, result, out_dir):
        if name == "augment":  # the driver is killed during the second benchmark phase
            raise KeyboardInterrupt
        result["benchmarks"][name] = {"selector_cifar10_ms": 3.0}

    monkeypatch.setattr(gpu_check, "phase_bench", bench)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main(["--out", str(tmp_path), "--phases", "build,selector,augment"])
    report = json.loads((tmp_path / "NVIDIA-H100.json").read_text())
    assert report["benchmarks"] == {"selector": {"selector_cifar10_ms": 3.0}}
    assert "selector_cifar10_ms" in (tmp_path / "NVIDIA-H100.md").read_text()


def test_a_peer_that_fails_on_the_stack_is_a_figure_not_the_end_of_the_phase(monkeypatch):
    import torch

    class Broken:
        def __getattr__(self, name):
            raise ImportError("numba needs numpy < 2.5")

    monkeypatch.setitem(sys.modules, "apricot", Broken())
    monkeypatch.setattr(gpu_check, "_importable", lambda module: True)  # found, but fails on import
    out = {}
    gpu_check._peer_ms(out, "selector_cifar10_apricot_ms", "apricot",
                       lambda: gpu_check._apricot_ms(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), {}))
    assert out["selector_cifar10_apricot_ms"].startswith("failed: ImportError: numba needs numpy < 2.5")


def test_the_phase_budgets_leave_the_report_time_inside_ten_minutes():
    """budget() gives each phase what is left of TOTAL_S (start-up and the peers' install
    count as spent); the last phase may run GRACE_S past it before it is killed: the worst case
    must still leave the report time before the device tool's 600 s."""
    worst = gpu_check.TOTAL_S + gpu_check.GRACE_S
    assert sum(gpu_check.BUDGET_S.values()) >= gpu_check.TOTAL_S  # budget() shares the total out
    assert worst <= 560
