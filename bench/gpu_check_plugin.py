"""pytest plugin of `make gpu-check` (bench/gpu_check.py): keeps the tests that exercise
CUDA, GPU-only ones first, then every test parametrised over devices in its CUDA case, then
the Triton kernels' tests (marked ``triton``; on a GPU they compile for it, so they come last:
compiling is what they spend their time on); deselects the CPU-only rest (CI runs those);
stops cleanly at a time budget; records the outcome as JSON.

Environment: ``GPU_CHECK_RECORD`` (JSON file to write), ``GPU_CHECK_BUDGET_S`` (seconds
after which no further test starts).
"""
from __future__ import annotations

import json
import os
import time

_state = {"passed": 0, "failed": [], "skipped": 0, "deselected": 0, "gpu_only": 0, "device_cases": 0,
          "triton": 0, "stopped": False}
_start = time.time()


def _gpu_only(item) -> bool:
    """Marked to skip without a GPU (conftest's ``requires_gpu`` and the like)."""
    for mark in item.iter_markers("skipif"):
        reason = str(mark.kwargs.get("reason", "")).lower()
        if "cuda" in reason or "gpu" in reason:
            return True
    return False


def _cuda_case(item) -> bool:
    spec = getattr(item, "callspec", None)
    if spec is None:
        return False
    return any(str(v).startswith("cuda") for v in spec.params.values()) or "cuda" in spec.id.split("-")


def _triton(item) -> bool:
    return any(True for _ in item.iter_markers("triton"))


def classify(items):
    """(GPU-only tests, CUDA cases of device-parametrised tests, Triton tests, the rest), in
    input order."""
    first, second, third, rest = [], [], [], []
    for item in items:
        group = first if _gpu_only(item) else second if _cuda_case(item) else third if _triton(item) else rest
        group.append(item)
    return first, second, third, rest


def pytest_collection_modifyitems(session, config, items):
    first, second, third, rest = classify(items)
    _state.update(gpu_only=len(first), device_cases=len(second), triton=len(third), deselected=len(rest))
    if rest:
        config.hook.pytest_deselected(items=rest)
    items[:] = first + second + third


def _write() -> None:
    path = os.environ.get("GPU_CHECK_RECORD")
    if path:
        with open(path, "w") as f:
            json.dump(_state, f, indent=1)


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        if report.passed:
            _state["passed"] += 1
        elif report.skipped:
            _state["skipped"] += 1
        else:
            _state["failed"].append(report.nodeid)
    elif report.when == "teardown" and report.failed:
        _state["failed"].append(report.nodeid + " (teardown)")
    _write()


def pytest_runtest_teardown(item, nextitem):
    budget = float(os.environ.get("GPU_CHECK_BUDGET_S", "inf"))
    if nextitem is not None and time.time() - _start > budget:
        _state["stopped"] = True
        item.session.shouldstop = f"gpu-check: time budget of {budget:.0f} s reached"


def pytest_sessionfinish(session, exitstatus):
    _write()
