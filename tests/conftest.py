"""Shared test set-up.

Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors; the switch
must be set before triton is first imported, hence here, at collection time.
"""
import os

import pytest
import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Every device the compiled ops can run on here.
DEVICES = ["cpu"] + (["cuda"] if HAS_GPU else [])
# Where the Triton kernels run: the GPU, or CPU tensors under the interpreter.
TRITON_DEVICE = "cuda" if HAS_GPU else "cpu"

requires_gpu = pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA device")


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests (small tensors: thread start-up dominates)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
