"""Loop bounds that are runtime scalars (a kernel argument, a value loaded from memory), the
pattern of every ``range(0, DA, BLOCK_D)`` in kernels/: compiled on a GPU, and under the
interpreter with the conversion conftest.py gives Triton <= 3.6 on NumPy >= 2.4."""
import pytest
import torch
import triton
import triton.language as tl

from conftest import TRITON_DEVICE

pytestmark = pytest.mark.triton


@triton.jit
def _strided_sums_kernel(X, LEN, OUT, n, BLOCK: tl.constexpr):
    # OUT[0]: sum of X[:n] over a loop bounded by an argument; OUT[1]: over a loop bounded
    # by a loaded value (LEN[0]), as the greedy bounds its loops by a class's row count
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i0 in range(0, n, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        acc += tl.load(X + i, mask=i < n, other=0.0)
    tl.store(OUT, tl.sum(acc, axis=0))
    m = tl.load(LEN)
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for i0 in range(0, m, BLOCK):
        i = i0 + tl.arange(0, BLOCK)
        acc += tl.load(X + i, mask=i < m, other=0.0)
    tl.store(OUT + 1, tl.sum(acc, axis=0))


@pytest.mark.parametrize("n,m", [(1, 1), (37, 16), (64, 5)])
def test_runtime_loop_bounds_from_an_argument_and_from_memory(n, m):
    x = torch.arange(1, n + 1, dtype=torch.float32, device=TRITON_DEVICE)  # small integers: sums are exact
    out = torch.full((2,), -1.0, device=TRITON_DEVICE)
    length = torch.tensor([min(m, n)], dtype=torch.int32, device=TRITON_DEVICE)
    _strided_sums_kernel[(1,)](x, length, out, n, BLOCK=16)
    assert out.tolist() == [n * (n + 1) / 2, min(m, n) * (min(m, n) + 1) / 2]
