"""Shared benchmark set-up: every JSON report records how coreaug_fast was built and on
what device, so figures from different machines are never mixed up."""
import pytest
import torch

import coreaug_fast

HAS_GPU = torch.cuda.is_available()
requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["coreaug_fast"] = coreaug_fast.build_info()


def sync():
    """Wait for queued GPU work so a benchmark round times the kernels, not their launch."""
    if HAS_GPU:
        torch.cuda.synchronize()
