"""weighted_cross_entropy: the fused op against F.cross_entropy(..., reduction="none") * w in
float64, on every device.

Tolerances: float32 logits are compared with the float64 expression evaluated on the same
values, losses to 1e-5 relative (float32 accumulation), logit gradients to 2e-6 absolute on
gradients of size ≲ |g·w|. float16/bfloat16 logits accumulate in float32, so their losses
(float32) keep the float32 tolerance; their gradients come back in the logits' dtype and are
allowed one unit of its rounding (2^-10 and 2^-7 of the largest gradient).
"""
import pytest
import torch
import torch.nn.functional as F

import coreaug_fast
from coreaug_fast import _ext
from coreaug_fast.reference import weighted_cross_entropy_reference as reference

wce = coreaug_fast.weighted_cross_entropy


def _inputs(n, c, device, dtype=torch.float32, seed=0, weights=True):
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, c, generator=g)).to(device=device, dtype=dtype)
    targets = torch.randint(0, c, (n,), generator=g).to(device)
    # non-uniform, some exactly zero
    w = torch.rand(n, generator=g) * 2
    w[::5] = 0
    return logits, targets, (w.to(device) if weights else None)


def _grads(fn, logits, weights, upstream):
    """Gradients of Σ upstream·fn(logits, weights) w.r.t. both (weights may be None)."""
    x = logits.detach().clone().requires_grad_(True)
    w = None if weights is None else weights.detach().clone().requires_grad_(True)
    out = fn(x, w)
    (out * upstream.to(out.dtype)).sum().backward()
    return out.detach(), x.grad, (None if w is None else w.grad)


def _compare(logits, targets, weights, upstream, *, atol_grad=2e-6, **kw):
    out, gx, gw = _grads(lambda x, w: wce(x, targets, w, **kw), logits, weights, upstream)
    ref, rx, rw = _grads(lambda x, w: reference(x.double(), targets, w, **kw), logits.double(), weights, upstream.double())
    assert out.dtype == (torch.float64 if logits.dtype == torch.float64 else torch.float32)
    assert out.device == logits.device and gx.dtype == logits.dtype and gx.shape == logits.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(gx.double(), rx, rtol=1e-5, atol=atol_grad)
    if weights is not None:
        torch.testing.assert_close(gw.double(), rw.double(), rtol=1e-5, atol=1e-5)


# --- forward and gradients -------------------------------------------------------------

@pytest.mark.parametrize("n,c", [(1, 1), (1, 7), (7, 3), (129, 10), (33, 17), (64, 100), (40, 1000),
                                 (3, 1025), (2, 32768), (2, 40000)])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_none_with_non_uniform_upstream_gradient(device, n, c, label_smoothing):
    # the case public fused kernels got wrong: each row's gradient must carry its own g_i
    logits, targets, weights = _inputs(n, c, device)
    upstream = torch.randn(n, generator=torch.Generator().manual_seed(1)).to(device)
    _compare(logits, targets, weights, upstream, reduction="none", label_smoothing=label_smoothing)


@pytest.mark.parametrize("reduction,normalize", [("sum", "weights"), ("mean", "weights"), ("mean", "count")])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("with_weights", [True, False])
def test_reductions_match_reference(device, reduction, normalize, label_smoothing, with_weights):
    logits, targets, weights = _inputs(50, 13, device, weights=with_weights)
    upstream = torch.tensor(1.7, device=device)
    _compare(logits, targets, weights, upstream, reduction=reduction, normalize=normalize,
             label_smoothing=label_smoothing)


def test_label_smoothing_is_f_cross_entropys(device):
    # independent of the reference: F.cross_entropy itself, unweighted, mean over rows
    logits, targets, _ = _inputs(20, 6, device)
    for eps in (0.0, 0.1, 0.6):
        torch.testing.assert_close(wce(logits, targets, label_smoothing=eps).double(),
                                   F.cross_entropy(logits.double(), targets, label_smoothing=eps),
                                   rtol=1e-6, atol=1e-6)
        # and the definition written out: (1-ε)·nll + ε·mean_j(-log p_j)
        logp = torch.log_softmax(logits.double(), 1)
        manual = -(1 - eps) * logp.gather(1, targets[:, None]).squeeze(1) - eps * logp.mean(1)
        torch.testing.assert_close(wce(logits, targets, reduction="none", label_smoothing=eps).double(),
                                   manual, rtol=1e-6, atol=1e-6)


def test_weighted_mean_is_weighted_average(device):
    logits, targets, weights = _inputs(30, 5, device)
    per_row = wce(logits, targets, reduction="none")
    torch.testing.assert_close(wce(logits, targets, weights), (per_row * weights).sum() / weights.sum())
    # "count" divides by the rows that carry weight (24 of these 30; all 30 without weights)
    assert int((weights > 0).sum()) == 24
    torch.testing.assert_close(wce(logits, targets, weights, normalize="count"), (per_row * weights).sum() / 24)
    torch.testing.assert_close(wce(logits, targets, normalize="count"), per_row.sum() / 30)
    torch.testing.assert_close(wce(logits, targets, weights, reduction="sum"), (per_row * weights).sum())


@pytest.mark.parametrize("dtype,grad_ulp", [(torch.float16, 2.0 ** -10), (torch.bfloat16, 2.0 ** -7)])
@pytest.mark.parametrize("c", [10, 100, 1000, 4099])
def test_half_and_bfloat16_accumulate_in_float32(device, dtype, grad_ulp, c):
    logits, targets, weights = _inputs(37, c, device, dtype=dtype)
    upstream = torch.randn(37, generator=torch.Generator().manual_seed(2)).to(device)
    # the reference sees the same rounded logits; only the output rounding differs
    atol = grad_ulp * float((upstream * weights).abs().max())
    _compare(logits, targets, weights, upstream, atol_grad=atol, reduction="none", label_smoothing=0.1)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16bit_logits_are_float32_maths_rounded_once(device, dtype):
    # the 16-bit kernels must equal the float32 kernels on the same values, rounded to the
    # dtype by torch (round to nearest even): bit for bit, denormals, zeros and inf included
    g = torch.Generator().manual_seed(3)
    x = (3 * torch.randn(300, 1037, generator=g)).to(dtype)
    x[0, :5] = torch.tensor([1e-7, -3e-6, 6e-5, 6.5e4, -6.5e4]).to(dtype)
    x, y = x.to(device), torch.randint(0, 1037, (300,), generator=g).to(device)
    up = (torch.randn(300, generator=g) * torch.logspace(-8, 6, 300)).to(device)  # into inf
    loss16, lse16 = torch.ops.coreaug.weighted_cross_entropy(x, y, None, 0.1)
    loss32, lse32 = torch.ops.coreaug.weighted_cross_entropy(x.float(), y, None, 0.1)
    assert torch.equal(loss16, loss32) and torch.equal(lse16, lse32)
    grad16 = torch.ops.coreaug.weighted_cross_entropy_backward(up, x, y, None, lse16, 0.1)
    grad32 = torch.ops.coreaug.weighted_cross_entropy_backward(up, x.float(), y, None, lse32, 0.1)
    assert torch.equal(grad16.view(torch.int16), grad32.to(dtype).view(torch.int16))
    if dtype == torch.float16:  # the cases above do occur: underflow to 0, denormals, overflow
        assert (grad16 == 0).any() and ((grad16 != 0) & (grad16.abs() < 6e-5)).any()
        assert torch.isinf(grad16).any()
    # every finite 16-bit pattern is read exactly
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype).reshape(-1, 16)
    bits = bits[torch.isfinite(bits).all(1)].to(device)
    zeros = torch.zeros(len(bits), dtype=torch.long, device=device)
    assert torch.equal(torch.ops.coreaug.weighted_cross_entropy(bits, zeros, None, 0.0)[1],
                       torch.ops.coreaug.weighted_cross_entropy(bits.float(), zeros, None, 0.0)[1])


def test_float64_is_exact_to_rounding(device):
    logits, targets, weights = _inputs(25, 9, device, dtype=torch.float64)
    upstream = torch.randn(25, dtype=torch.float64, device=device)
    out, gx, gw = _grads(lambda x, w: wce(x, targets, w, reduction="none", label_smoothing=0.2), logits, weights, upstream)
    ref, rx, rw = _grads(lambda x, w: reference(x, targets, w, reduction="none", label_smoothing=0.2), logits, weights, upstream)
    for a, b in ((out, ref), (gx, rx), (gw, rw)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_gradcheck_float64(device, reduction, label_smoothing):
    logits, targets, _ = _inputs(6, 5, device, dtype=torch.float64)
    # weights kept away from 0 so that the finite differences stay in the valid domain
    weights = torch.rand(6, dtype=torch.float64, device=device) + 0.5
    logits.requires_grad_(True)
    weights.requires_grad_(True)
    fn = lambda x, w: wce(x, targets, w, reduction=reduction, label_smoothing=label_smoothing)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits, weights))


def test_second_derivatives_under_create_graph(device):
    logits, targets, _ = _inputs(5, 4, device, dtype=torch.float64)
    weights = torch.rand(5, dtype=torch.float64, device=device) + 0.5
    logits.requires_grad_(True)
    weights.requires_grad_(True)
    fn = lambda x, w: wce(x, targets, w, reduction="none", label_smoothing=0.2)  # noqa: E731
    assert torch.autograd.gradgradcheck(fn, (logits, weights))


def test_weights_are_constants_unless_they_require_grad(device):
    logits, targets, weights = _inputs(8, 4, device)
    x = logits.clone().requires_grad_(True)
    loss = wce(x, targets, weights)
    loss.backward()
    assert weights.grad is None and not weights.requires_grad
    # ∂(Σ w_i CE_i)/∂w_i = CE_i exactly
    w = weights.clone().requires_grad_(True)
    wce(logits, targets, w, reduction="sum").backward()
    torch.testing.assert_close(w.grad, wce(logits, targets, reduction="none"), rtol=1e-6, atol=1e-6)


def test_zero_weights_give_zero_rows(device):
    logits, targets, _ = _inputs(10, 6, device)
    weights = torch.zeros(10, device=device)
    weights[3] = 2.0
    x = logits.clone().requires_grad_(True)
    out = wce(x, targets, weights, reduction="none")
    out.sum().backward()
    assert (out[torch.arange(10) != 3] == 0).all()
    assert (x.grad[torch.arange(10, device=device) != 3] == 0).all()
    assert x.grad[3].abs().sum() > 0
    # all zero: the weighted mean is 0/0, as F.cross_entropy's with zero class weights
    assert torch.isnan(wce(logits, targets, torch.zeros(10, device=device)))
    assert wce(logits, targets, torch.zeros(10, device=device), reduction="sum") == 0


def test_empty_batch(device):
    logits = torch.zeros(0, 5, device=device, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long, device=device)
    weights = torch.zeros(0, device=device)
    none = wce(logits, targets, weights, reduction="none")
    assert none.shape == (0,)
    total = wce(logits, targets, weights, reduction="sum")
    assert total.item() == 0
    total.backward()
    assert logits.grad.shape == (0, 5)
    # like F.cross_entropy on an empty batch: the mean is NaN
    assert torch.isnan(wce(logits, targets)) and torch.isnan(F.cross_entropy(logits, targets))


def test_single_class_has_zero_loss(device):
    logits = torch.randn(4, 1, device=device, requires_grad=True)
    out = wce(logits, torch.zeros(4, dtype=torch.long, device=device), reduction="sum")
    out.backward()
    assert out.item() == 0 and (logits.grad == 0).all()


def test_extreme_logits(device):
    logits, targets, weights = _inputs(16, 40, device)
    upstream = torch.randn(16).to(device)
    # a large common offset (cancels exactly) and -inf masking of non-target classes
    _compare(logits + 1000, targets, weights, upstream, reduction="none", label_smoothing=0.1)
    masked = logits.clone()
    masked[torch.arange(16) % 2 == 0, :] = float("-inf")
    masked[torch.arange(16, device=device), targets] = logits[torch.arange(16, device=device), targets]
    _compare(masked, targets, weights, upstream, reduction="none")


def test_nan_logits_give_nan_rows_as_in_pytorch(device):
    logits, targets, _ = _inputs(5, 20, device)
    logits[2, 7] = float("nan")
    x = logits.clone().requires_grad_(True)
    out = wce(x, targets, reduction="none")
    out.sum().backward()
    assert torch.isnan(out[2]) and torch.isfinite(out[[0, 1, 3, 4]]).all()
    assert torch.isnan(x.grad[2]).all() and torch.isfinite(x.grad[[0, 1, 3, 4]]).all()


def test_strided_logits_and_other_integer_and_weight_dtypes(device):
    logits, targets, weights = _inputs(40, 6, device)
    wide = torch.cat([logits, logits], 1)[:, ::2]  # non-contiguous view
    shifted = torch.cat([logits.new_zeros(1, 6), logits])[1:]  # contiguous, offset storage
    upstream = torch.randn(40).to(device)
    for x in (wide, shifted):
        _compare(x, targets, weights, upstream, reduction="none")
    torch.testing.assert_close(wce(logits, targets.int(), weights.double(), reduction="none"),
                               wce(logits, targets, weights, reduction="none"))


def test_deterministic_and_independent_of_thread_count():
    logits, targets, weights = _inputs(300, 77, "cpu")
    x = logits.clone().requires_grad_(True)
    runs = []
    threads = torch.get_num_threads()
    try:
        for t in (1, 2, 1):
            torch.set_num_threads(t)
            x.grad = None
            out = wce(x, targets, weights, reduction="none")
            out.sum().backward()
            runs.append((out.detach().clone(), x.grad.clone()))
    finally:
        torch.set_num_threads(threads)
    for out, grad in runs[1:]:
        assert torch.equal(out, runs[0][0]) and torch.equal(grad, runs[0][1])


@pytest.mark.parametrize("isa", ["baseline", "avx2"])
def test_every_cpu_vector_width_passes_the_cpu_tests(isa):
    """The CPU op is built for 16, 8 and 4 lanes and runs the widest the machine has; this
    run of the file's CPU cases covers a narrower one (COREAUG_CPU_ISA, read once per
    process, hence a subprocess). A machine without AVX2 runs the baseline twice."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, COREAUG_CPU_ISA=isa)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
                          "cpu and not gradcheck and not opcheck and not vector_width"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


# --- bad input --------------------------------------------------------------------------

_L, _T = torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)


@pytest.mark.parametrize("args,kwargs,match", [
    ((torch.zeros(4), _T), {}, "logits must have 2 dimensions"),
    ((torch.zeros(4, 3, dtype=torch.long), _T), {}, "logits must be a floating"),
    (([[1.0]], _T), {}, "logits must be a torch.Tensor"),
    ((_L, torch.zeros(4)), {}, "targets must be an integer"),
    ((_L, torch.zeros(4, 1, dtype=torch.long)), {}, "targets must have 1 dimensions"),
    ((_L, torch.zeros(5, dtype=torch.long)), {}, "targets has 5 rows, expected 4"),
    ((_L, torch.tensor([0, 1, 3, 0])), {}, r"targets has value 3, outside \[0, 3\)"),
    ((_L, torch.tensor([0, -1, 2, 0])), {}, r"targets has value -1"),
    ((_L, _T, torch.ones(5)), {}, "weights has 5 rows, expected 4"),
    ((_L, _T, torch.ones(4, 1)), {}, "weights must have 1 dimensions"),
    ((_L, _T, torch.ones(4, dtype=torch.long)), {}, "weights must be a floating"),
    ((_L, _T, torch.tensor([1.0, -0.5, 1.0, 1.0])), {}, r"weights must be finite and >= 0, got -0.5"),
    ((_L, _T, torch.tensor([1.0, float("nan"), 1.0, 1.0])), {}, r"weights must be finite and >= 0, got nan"),
    ((_L, _T, torch.tensor([1.0, float("inf"), 1.0, 1.0])), {}, r"weights must be finite and >= 0, got inf"),
    ((_L, _T), {"reduction": "avg"}, "reduction must be one of"),
    ((_L, _T), {"normalize": "rows"}, "normalize must be one of"),
    ((_L, _T), {"label_smoothing": 1.5}, r"label_smoothing must be a number in \[0, 1\]"),
    ((_L, _T), {"label_smoothing": -0.1}, r"label_smoothing must be a number in \[0, 1\]"),
    ((torch.zeros(4, 0), _T), {}, "at least one class column"),
])
def test_bad_input_raises_value_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        wce(*args, **kwargs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bad_target_on_gpu_raises_before_any_kernel():
    logits = torch.zeros(4, 3, device="cuda")
    with pytest.raises(ValueError, match="outside"):
        wce(logits, torch.tensor([0, 1, 3, 0], device="cuda"))
    with pytest.raises(ValueError, match="one device"):
        wce(logits, _T)
    # the context is still usable
    assert wce(logits, _T.cuda()).item() == pytest.approx(torch.log(torch.tensor(3.0)).item())
    # the raw op, which cannot raise without a sync, marks the row NaN instead of trapping
    loss, lse = torch.ops.coreaug.weighted_cross_entropy(logits, torch.tensor([0, 1, 3, 0], device="cuda"), None, 0.0)
    assert torch.isnan(loss[2]) and torch.isfinite(loss[[0, 1, 3]]).all()


def test_raw_ops_check_their_arguments():
    with pytest.raises(RuntimeError, match="outside"):
        torch.ops.coreaug.weighted_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 5]), None, 0.0)
    with pytest.raises(RuntimeError, match="weights must be Float"):
        torch.ops.coreaug.weighted_cross_entropy(torch.zeros(2, 3), torch.tensor([0, 1]), torch.ones(2, dtype=torch.float64), 0.0)
    with pytest.raises(RuntimeError, match="lse must have shape"):
        torch.ops.coreaug.weighted_cross_entropy_backward(torch.ones(2), torch.zeros(2, 3), torch.tensor([0, 1]), None, torch.zeros(3), 0.0)


def test_missing_extension_raises_one_clear_error(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "_IMPORT_ERROR", ImportError("No module named 'coreaug_fast._C'"))
    with pytest.raises(coreaug_fast.ExtensionNotBuiltError, match="weighted_cross_entropy"):
        wce(_L, _T)
    assert reference(_L, _T).item() == pytest.approx(float(torch.log(torch.tensor(3.0))))


# --- torch.library integration ---------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_opcheck_forward(device, dtype):
    logits, targets, weights = _inputs(17, 5, device, dtype=dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    logits.requires_grad_(True)
    w = weights.to(acc).requires_grad_(True)
    torch.library.opcheck(torch.ops.coreaug.weighted_cross_entropy.default, (logits, targets, w, 0.1))
    torch.library.opcheck(torch.ops.coreaug.weighted_cross_entropy.default, (logits, targets, None, 0.0))


def test_opcheck_backward(device):
    logits, targets, weights = _inputs(17, 5, device)
    _, lse = torch.ops.coreaug.weighted_cross_entropy(logits, targets, weights, 0.1)
    grad = torch.randn(17, device=device)
    op = torch.ops.coreaug.weighted_cross_entropy_backward.default
    torch.library.opcheck(op, (grad, logits, targets, weights, lse, 0.1))
    # the broadcast upstream gradient of a .sum()
    torch.library.opcheck(op, (torch.ones((), device=device).expand(17), logits, targets, None, lse, 0.0))


def test_traced_backward_is_the_fused_op():
    """AOTAutograd's backward graph holds the fused backward op, not the create_graph
    fallback (log_softmax, one_hot)."""
    from functorch.compile import aot_function, make_boxed_func

    logits, targets, weights = _inputs(12, 7, "cpu")
    graphs = []

    def keep(gm, _):
        graphs.append(gm)
        return make_boxed_func(gm.forward)

    def raw(x, t, w):
        loss, _ = torch.ops.coreaug.weighted_cross_entropy(x, t, w, 0.1)
        return loss.sum()

    f = aot_function(raw, fw_compiler=keep, bw_compiler=keep)
    f(logits.clone().requires_grad_(True), targets, weights.clone().requires_grad_(True)).backward()
    backward_ops = {str(n.target) for n in graphs[-1].graph.nodes if n.op == "call_function"}
    assert "coreaug.weighted_cross_entropy_backward.default" in backward_ops
    assert not any("log_softmax" in t or "one_hot" in t for t in backward_ops), backward_ops


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_torch_compile(backend):
    logits, targets, weights = _inputs(12, 7, "cpu")
    upstream = torch.randn(12)

    def step(x, w):
        # the public function: its value checks (one host sync) break the graph there
        return (coreaug_fast.weighted_cross_entropy(x * 2, targets, w, reduction="none") * upstream).sum()

    def raw(x, w):  # the op alone traces into one graph
        loss, _ = torch.ops.coreaug.weighted_cross_entropy(x * 2, targets, w, 0.1)
        return (loss * upstream).sum() / w.sum()

    # inductor compiles C++ on the CPU (tens of seconds here): only the one-graph case
    cases = ((step, False), (raw, True)) if backend == "eager" else ((raw, True),)
    for fn, full in cases:
        torch._dynamo.reset()
        compiled = torch.compile(fn, backend=backend, fullgraph=full)
        x1, w1 = logits.clone().requires_grad_(True), weights.clone().requires_grad_(True)
        x2, w2 = logits.clone().requires_grad_(True), weights.clone().requires_grad_(True)
        # inductor's on-disk cache does not see a rebuilt extension; a stale entry would
        # test the old op
        with torch._inductor.config.patch(fx_graph_cache=False), \
                torch._functorch.config.patch(enable_autograd_cache=False):
            out = compiled(x1, w1)
        ref = fn(x2, w2)
        out.backward()
        ref.backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(x1.grad, x2.grad)
        torch.testing.assert_close(w1.grad, w2.grad)


# ---- values that change in the cast, NumPy scalars ----------------------------------------

def test_float64_weights_that_overflow_float32_are_rejected(device):
    logits, targets, _ = _inputs(4, 3, device)
    weights = torch.tensor([1.0, 1e300, 1.0, 1.0], dtype=torch.float64, device=device)
    with pytest.raises(ValueError, match=r"weights must be finite and >= 0, got inf \(the torch.float64 weights"):
        wce(logits, targets, weights)
    # float64 logits compute in float64: the same weights are fine there
    assert torch.isfinite(wce(logits.double(), targets, weights, reduction="none")).all()


def test_numpy_label_smoothing_is_accepted(device):
    np = pytest.importorskip("numpy")
    logits, targets, weights = _inputs(6, 5, device)
    assert torch.equal(wce(logits, targets, weights, label_smoothing=np.float32(0.25)),
                       wce(logits, targets, weights, label_smoothing=0.25))
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\]"):
        wce(logits, targets, weights, label_smoothing=np.float64(1.5))
    with pytest.raises(ValueError, match=r"label_smoothing must be a number in \[0, 1\]"):
        wce(logits, targets, weights, label_smoothing="0.1")


# ---- range: sums that overflow, weights the cast loses; the meta device --------------------

@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_weights_whose_sum_overflows_are_refused(device, reduction):
    """Four weights of 3e38 are finite, their float32 sum is not: the mean would be
    inf / inf = NaN and the sum inf. Refused, naming weights."""
    logits, targets, _ = _inputs(4, 3, device)
    weights = torch.full((4,), 3e38, device=device)
    with pytest.raises(ValueError, match=r"^weights sum to inf in torch.float32, the dtype the loss computes in"):
        wce(logits, targets, weights, reduction=reduction)
    # the documented way out: the "weights" mean does not change when all weights are scaled
    assert torch.equal(wce(logits, targets, weights * 2.0 ** -100), wce(logits, targets, torch.ones(4, device=device)))


def test_unsummed_losses_of_huge_weights_are_returned_as_unfused(device):
    """reduction="none" forms no sum: weights whose sum overflows (or that float32 flushes)
    give the per-row losses the unfused expression gives, not an error."""
    logits, targets, _ = _inputs(4, 3, device)
    for weights in (torch.full((4,), 3e38, device=device),
                    torch.full((4,), 1e-320, dtype=torch.float64, device=device)):
        want = F.cross_entropy(logits, targets, reduction="none") * weights.float()
        torch.testing.assert_close(wce(logits, targets, weights, reduction="none"), want, rtol=1e-6, atol=0)


def test_float64_weights_that_underflow_float32_are_refused(device):
    logits, targets, _ = _inputs(4, 3, device)
    weights = torch.full((4,), 1e-320, dtype=torch.float64, device=device)
    assert bool((weights.float() == 0).all())  # what the cast makes of them: 0 / 0 = NaN
    with pytest.raises(ValueError, match=r"^weights has nonzero torch.float64 values that are 0 as torch.float32"):
        wce(logits, targets, weights)
    # one such weight among ordinary ones would silently drop its row: refused too
    with pytest.raises(ValueError, match=r"^weights has nonzero torch.float64"):
        wce(logits, targets, torch.tensor([1.0, 1e-320, 1.0, 1.0], dtype=torch.float64, device=device))
    # exact zeros are weights of 0, not lost values
    wce(logits, targets, torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64, device=device))


def test_one_weighted_loss_beyond_float32_is_inf_as_unfused(device):
    """The documented rule: a finite weight sum is required, a single w·CE past 3.4e38 is
    inf in float32 exactly as F.cross_entropy(...) * w gives."""
    logits = torch.tensor([[0.0, 5.0], [0.0, 0.0]], device=device)
    targets = torch.tensor([0, 0], device=device)
    weights = torch.tensor([3e38, 1.0], device=device)
    unfused = F.cross_entropy(logits, targets, reduction="none") * weights
    out = wce(logits, targets, weights, reduction="none")
    assert torch.isinf(unfused[0]) and torch.isinf(out[0]) and out[1] == pytest.approx(float(unfused[1]))
    assert torch.isinf(wce(logits, targets, weights, reduction="sum"))


def test_meta_tensors_are_named_before_values_are_read():
    logits, targets, weights = (t.to("meta") for t in _inputs(4, 3, "cpu"))
    with pytest.raises(ValueError, match=r"^logits is on the meta device"):
        wce(logits, targets, weights)
    # with check=False nothing is read: shapes propagate, as through any torch op
    assert wce(logits, targets, weights, check=False).shape == ()


# ---- one definition of the batch loss: one process and 2 gloo ranks -------------------------

def _batch():
    """An odd-sized global batch (so the second rank's shard is padded with a weight-0 row, as
    the data-parallel sampler pads) with one real row of weight 0."""
    g = torch.Generator().manual_seed(11)
    logits, targets = torch.randn(9, 4, generator=g), torch.randint(0, 4, (9,), generator=g)
    weights = torch.rand(9, generator=g) + 0.5
    weights[3] = 0.0
    return logits, targets, weights


def _two_ranks(rank, init, out):
    import torch.distributed as dist
    from coreaug_fast.train import ddp

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        logits, targets, weights = _batch()
        rows = torch.arange(rank, 10, 2)  # 5 rows each; row 9 is padding
        x = torch.cat([logits, torch.zeros(1, 4)])[rows].requires_grad_()
        y, w = torch.cat([targets, targets[:1]])[rows], torch.cat([weights, torch.zeros(1)])[rows]
        res = {}
        for how in ("weights", "count"):
            x.grad = None
            loss = ddp.batch_loss(x, y, w, how, ddp.active())
            loss.backward()
            total = loss.detach().clone()
            dist.all_reduce(total)
            res[how] = (total / 2, x.grad / 2, rows)  # DDP averages the ranks' gradients
        torch.save(res, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_one_process_and_two_ranks_give_the_same_loss(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_two_ranks, args=(f"file://{tmp_path}/init", str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    logits, targets, weights = _batch()
    for how in ("weights", "count"):
        x = logits.clone().requires_grad_()
        one = wce(x, targets, weights, normalize=how)
        one.backward()
        one = one.detach()
        ref = reference(logits.double(), targets, weights, normalize=how)
        assert float(one) == pytest.approx(float(ref), rel=1e-6)
        for res in ranks:
            loss, grad, rows = res[how]
            assert float(loss) == pytest.approx(float(one), rel=1e-6), how
            real = rows < 9
            torch.testing.assert_close(grad[real], x.grad[rows[real]], rtol=1e-5, atol=1e-7)
    # "count" divides by the 8 rows that carry weight: neither the padding nor row 3
    total = (F.cross_entropy(logits.double(), targets, reduction="none") * weights.double()).sum()
    assert float(wce(logits, targets, weights, normalize="count")) == pytest.approx(float(total / 8), rel=1e-6)
