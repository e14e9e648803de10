"""Loads the compiled extension and says how the library was built.

The package imports without the extension, so the plain-PyTorch references in
``coreaug_fast.reference`` keep working; anything that needs a compiled op calls
:func:`require_extension`, which raises one error that says how to build it.
"""
from __future__ import annotations

import importlib
import os

import torch

try:
    # importing registers torch.ops.coreaug.*
    _C = importlib.import_module("coreaug_fast._C")
except ImportError as exc:  # not built, or built against another torch
    _C = None
    _IMPORT_ERROR: "ImportError | None" = exc
else:
    _IMPORT_ERROR = None


class ExtensionNotBuiltError(RuntimeError):
    """Raised by calls that need the compiled extension ``coreaug_fast._C`` when it is missing."""


def available() -> bool:
    """Whether the compiled extension loaded (and so ``torch.ops.coreaug.*`` exist)."""
    return _C is not None


def require_extension(what: str) -> None:
    """Raise :class:`ExtensionNotBuiltError` naming ``what`` unless the extension is loaded."""
    if _C is None:
        raise ExtensionNotBuiltError(
            f"{what} needs the compiled extension coreaug_fast._C, which did not load "
            f"({_IMPORT_ERROR}). Build it against the torch you run with: "
            "`pip install --no-build-isolation -e .` in the source tree (or `make test`). "
            "The plain-PyTorch versions in coreaug_fast.reference work without it."
        )


def triton_mode() -> str:
    """How Triton kernels would run here: ``"compiled"`` (a CUDA GPU), ``"interpreted"``
    (``TRITON_INTERPRET=1``: CPU tensors, slow, for tests) or ``"unavailable"``."""
    try:
        import triton  # noqa: F401
    except ImportError:
        return "unavailable"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "interpreted"
    return "compiled" if torch.cuda.is_available() else "unavailable"


def build_info() -> dict:
    """How this install was built and what it can run.

    Returns a dict with: ``version``; ``torch`` (torch version); ``extension`` (whether
    ``coreaug_fast._C`` loaded); ``cuda_kernels`` (CUDA kernels compiled in);
    ``cuda_version`` (the CUDA runtime they were compiled against, e.g. ``"13.0"``, or None);
    ``openmp`` (CPU kernels built with OpenMP); ``gpu`` (a CUDA device is visible);
    ``device_name`` (its name, or ``"cpu"``); ``triton`` (``"compiled"``, ``"interpreted"``
    or ``"unavailable"``); ``import_error`` (why the extension did not load, or None).
    """
    from ._version import __version__

    cuda_rt = _C.cuda_version() if _C is not None else 0
    gpu = torch.cuda.is_available()
    return {
        "version": __version__,
        "torch": torch.__version__,
        "extension": _C is not None,
        "cuda_kernels": cuda_rt > 0,
        "cuda_version": f"{cuda_rt // 1000}.{cuda_rt % 1000 // 10}" if cuda_rt else None,
        "openmp": bool(_C.openmp()) if _C is not None else False,
        "gpu": gpu,
        "device_name": torch.cuda.get_device_name() if gpu else "cpu",
        "triton": triton_mode(),
        "import_error": None if _IMPORT_ERROR is None else str(_IMPORT_ERROR),
    }
