"""Count the places where code would make the host wait for the device.

On a GPU, ``torch.cuda.set_sync_debug_mode("error")`` catches synchronising CUDA calls.
Without one, the same code runs on CPU tensors where nothing synchronises, so this counter
records what *would* synchronise on a GPU:

- reading a tensor's value on the host: ``aten._local_scalar_dense`` (``.item()``,
  ``bool(t)``, ``int(t)``, ``float(t)``), and ``Tensor.tolist()`` / ``.numpy()`` / ``.cpu()``
  (which, on CPU tensors, dispatch no op, hence the patched methods);
- ops whose output size depends on the data (``nonzero``, ``masked_select``, ``unique``,
  boolean-mask indexing, ``repeat_interleave`` without ``output_size``), which copy a size
  back to the host on CUDA.

Usage::

    with count_host_syncs() as syncs:
        step()
    assert syncs.events == [], syncs.events
"""
from __future__ import annotations

import contextlib
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

_DATA_DEPENDENT = {
    aten._local_scalar_dense.default: "value read on the host (.item()/bool/int/float)",
    aten.nonzero.default: "nonzero (data-dependent size)",
    aten.masked_select.default: "masked_select (data-dependent size)",
    aten._unique2.default: "unique (data-dependent size)",
    aten.unique_dim.default: "unique (data-dependent size)",
    aten.unique_consecutive.default: "unique_consecutive (data-dependent size)",
    aten.repeat_interleave.Tensor: "repeat_interleave without output_size (data-dependent size)",
}
_PATCHED = ("tolist", "numpy", "cpu")


def _where() -> str:
    """The innermost frame of coreaug_fast that led here, for a readable failure."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if "coreaug_fast" in frame.filename or "/kernels/" in frame.filename:
            return f"{frame.filename}:{frame.lineno} {frame.line}"
    return "outside coreaug_fast"


class _Mode(TorchDispatchMode):
    def __init__(self, events):
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        what = _DATA_DEPENDENT.get(func)
        if func is aten.repeat_interleave.Tensor and kwargs.get("output_size") is not None:
            what = None
        if what is None and func is aten.index.Tensor:
            if any(t is not None and t.dtype == torch.bool for t in args[1]):
                what = "boolean-mask indexing (data-dependent size)"
        if what is not None:
            self.events.append(f"{what} at {_where()}")
        return func(*args, **kwargs)


class HostSyncs:
    def __init__(self):
        self.events: list = []


@contextlib.contextmanager
def count_host_syncs():
    """Record every would-be host synchronisation inside the block (see the module
    docstring); on CUDA also turn torch's sync debug mode to "error"."""
    record = HostSyncs()
    originals = {name: getattr(torch.Tensor, name) for name in _PATCHED}

    def patched(name):
        def method(self, *args, **kwargs):
            if name != "cpu" or self.device.type != "cpu":
                record.events.append(f"Tensor.{name}() at {_where()}")
            return originals[name](self, *args, **kwargs)
        return method

    cuda_mode = torch.cuda.get_sync_debug_mode() if torch.cuda.is_available() else None
    for name in _PATCHED:
        setattr(torch.Tensor, name, patched(name))
    try:
        if cuda_mode is not None:
            torch.cuda.set_sync_debug_mode("error")
        with _Mode(record.events):
            yield record
    finally:
        if cuda_mode is not None:
            torch.cuda.set_sync_debug_mode(cuda_mode)
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


def training_steps_syncs(batches, model) -> list:
    """The host synchronisations of one pass of plain SGD steps over ``batches`` (the loss
    with ``check=False``, as a training loop calls it)."""
    import coreaug_fast

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with count_host_syncs() as syncs:
        for x, y, w in batches:
            loss = coreaug_fast.weighted_cross_entropy(model(x), y, w, check=False)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return syncs.events
