"""gradient_embeddings: the compiled op against the float64 reference, on every device;
its lazy form (LazyEmbeddings) against the op."""
import numpy as np
import pytest
import torch

import coreaug_fast
from coreaug_fast.reference import gradient_embeddings_reference


def _inputs(n, c, device, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g)).to(device=device, dtype=dtype)
    targets = torch.randint(0, c, (n,), generator=g).to(device)
    return logits, targets


@pytest.mark.parametrize("n,c", [(1, 1), (7, 3), (129, 10), (64, 1000), (3, 40000)])
def test_matches_float64_reference(device, n, c):
    logits, targets = _inputs(n, c, device)
    out = coreaug_fast.gradient_embeddings(logits, targets)
    assert out.dtype == torch.float32 and out.shape == (n, c) and out.device.type == device
    ref = gradient_embeddings_reference(logits, targets)
    torch.testing.assert_close(out.double(), ref.to(out.device), rtol=0, atol=2e-6)
    # each row of p - y sums to zero
    torch.testing.assert_close(out.double().sum(1), torch.zeros(n, dtype=torch.float64, device=device), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-6), (torch.bfloat16, 2e-6), (torch.float64, 1e-7)])
def test_low_and_high_precision_inputs(device, dtype, atol):
    logits, targets = _inputs(50, 12, device, dtype=dtype)
    out = coreaug_fast.gradient_embeddings(logits, targets)
    assert out.dtype == torch.float32
    # the reference sees the same rounded logits, so only the float32 output rounding remains
    torch.testing.assert_close(out.double(), gradient_embeddings_reference(logits, targets), rtol=0, atol=atol)


def test_non_contiguous_and_int32_targets(device):
    logits, targets = _inputs(40, 6, device)
    wide = torch.cat([logits, logits], 1)[:, ::2]  # strided view
    out = coreaug_fast.gradient_embeddings(wide, targets.int())
    torch.testing.assert_close(out.double(), gradient_embeddings_reference(wide, targets), rtol=0, atol=2e-6)


def test_factored_embeddings(device):
    logits, targets = _inputs(9, 4, device)
    h = torch.randn(9, 5, device=device)
    emb = coreaug_fast.gradient_embeddings(logits, targets, features=h)
    assert isinstance(emb, coreaug_fast.FactoredEmbeddings)
    full = emb.materialize()
    assert full.shape == (9, 20)
    ref = gradient_embeddings_reference(logits, targets)
    torch.testing.assert_close(full.double(), (ref[:, :, None] * h.double()[:, None, :]).reshape(9, 20), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("with_features", [False, True])
def test_lazy_embeddings_keep_the_inputs_and_give_the_same_bits(device, with_features):
    logits, targets = _inputs(30, 7, device)
    h = torch.randn(30, 4, device=device) if with_features else None
    logits.requires_grad_(True)
    lazy = coreaug_fast.gradient_embeddings(logits, targets.int(), h, lazy=True)
    assert isinstance(lazy, coreaug_fast.LazyEmbeddings)
    assert lazy.logits.data_ptr() == logits.data_ptr() and not lazy.logits.requires_grad  # no copy
    assert lazy.targets.dtype == torch.long and lazy.shape == (30, 7) and lazy.device == logits.device
    eager = coreaug_fast.gradient_embeddings(logits, targets, h)
    full = lazy.materialize()
    if with_features:
        assert isinstance(full, coreaug_fast.FactoredEmbeddings)
        assert torch.equal(full.grad, eager.grad) and torch.equal(full.features, eager.features)
        eager = eager.grad
    else:
        assert torch.equal(full, eager)
    rows = torch.tensor([29, 0, 5, 5], device=device)
    assert torch.equal(lazy.grad_rows(rows), eager[rows])


def test_detached_from_autograd(device):
    logits, targets = _inputs(5, 3, device)
    logits.requires_grad_(True)
    assert not coreaug_fast.gradient_embeddings(logits, targets).requires_grad


@pytest.mark.parametrize("logits,targets,features,match", [
    (torch.zeros(4), torch.zeros(4, dtype=torch.long), None, "logits must have 2 dimensions"),
    (torch.zeros(4, 3, dtype=torch.long), torch.zeros(4, dtype=torch.long), None, "logits must be a floating"),
    (torch.zeros(4, 3), torch.zeros(4), None, "targets must be an integer"),
    (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), None, "targets has 5 rows, expected 4"),
    (torch.zeros(4, 3), torch.tensor([0, 1, 3, 0]), None, r"targets has value 3, outside \[0, 3\)"),
    (torch.zeros(4, 3), torch.tensor([0, -1, 2, 0]), None, r"targets has value -1"),
    (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), torch.zeros(3, 2), "features has 3 rows"),
    ([[1.0]], torch.zeros(1, dtype=torch.long), None, "logits must be a torch.Tensor"),
    # a list or array for features: a type error before any device check reads .device
    (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), [[1.0], [2.0]], "features must be a torch.Tensor, got list"),
    (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), np.ones((2, 1)), "features must be a torch.Tensor, got ndarray"),
])
def test_bad_input_raises_value_error(logits, targets, features, match):
    with pytest.raises(ValueError, match=match):
        coreaug_fast.gradient_embeddings(logits, targets, features)
    with pytest.raises(ValueError, match=match):  # lazy: the same checks, at once
        coreaug_fast.gradient_embeddings(logits, targets, features, lazy=True)
    with pytest.raises(ValueError, match="lazy must be True or False, got 1"):
        coreaug_fast.gradient_embeddings(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), lazy=1)


def test_raw_op_rejects_bad_targets_on_cpu():
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.coreaug.gradient_embeddings(torch.zeros(2, 3), torch.tensor([0, 5]))


def test_opcheck(device):
    logits, targets = _inputs(17, 5, device)
    torch.library.opcheck(torch.ops.coreaug.gradient_embeddings.default, (logits, targets))


def test_torch_compile_traces_the_op():
    logits, targets = _inputs(12, 4, "cpu")

    @torch.compile(backend="eager", fullgraph=True)
    def f(x, t):
        return torch.ops.coreaug.gradient_embeddings(x * 2, t) + 1

    torch.testing.assert_close(f(logits, targets), coreaug_fast.gradient_embeddings(logits * 2, targets) + 1)


@pytest.mark.parametrize("which", ["logits", "features"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_inputs_are_refused_by_name(which, bad):
    """NaN or inf would come out as NaN rows (and then be refused by the selection as
    "embeddings contains NaN", an argument the caller never passed)."""
    logits, targets = _inputs(5, 3, "cpu")
    features = torch.randn(5, 4)
    (logits if which == "logits" else features)[2, 1] = bad
    with pytest.raises(ValueError, match=f"^{which} contains NaN or inf"):
        coreaug_fast.gradient_embeddings(logits, targets, features)


def test_meta_tensors_are_named():
    logits, targets = _inputs(5, 3, "cpu")
    with pytest.raises(ValueError, match="^logits is on the meta device"):
        coreaug_fast.gradient_embeddings(logits.to("meta"), targets.to("meta"))
