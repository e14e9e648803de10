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


def _interpreter_loop_bounds_as_ints() -> None:
    """Let Triton 3.6's interpreter take a runtime scalar as a loop bound under NumPy >= 2.4.

    The interpreter holds a scalar (a kernel argument such as ``DA``, a loaded row count)
    as a 1-element array and turns it into an index with ``int(array)``, which NumPy 2.4
    refuses for arrays of ndim > 0: every ``range(0, DA, BLOCK_D)`` in the kernels fails
    with "only 0-dimensional arrays can be converted to Python scalars". Newer interpreters
    (Triton 3.8 here) squeeze the array first (triton-lang/triton#9172); this gives older
    ones that conversion, and newer ones the one they have. Compiled kernels never see it:
    on a GPU the interpreter is not used."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return
    try:
        from triton.runtime import interpreter
    except ImportError:
        return
    patch_tensor = getattr(interpreter, "_patch_lang_tensor", None)
    if patch_tensor is None or getattr(patch_tensor, "_coreaug_shim", False):
        return

    def patch_lang_tensor(tensor, scope):
        patch_tensor(tensor, scope)
        # set after the interpreter's own: the scope restores in reverse order
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor._coreaug_shim = True
    interpreter._patch_lang_tensor = patch_lang_tensor


_interpreter_loop_bounds_as_ints()

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
