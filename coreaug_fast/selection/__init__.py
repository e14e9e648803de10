"""Choosing the weighted coreset: the selection pipeline, one module a step.

    embeddings.py         logits (n, C) [+ features (n, d)] -> gradient embeddings:
                          softmax − onehot (n, C), kept factored with features, or lazy
    facility_location.py  select_coreset: the public entry; arguments checked, rows grouped
                          by class, picks per class                     (its math: docstring)
    engine.py             the single-process run: classes in runs of CHUNK_BYTES of rows,
                          each run prepared, then handed to a backend:
    class_rows.py           the run's rows as float32, centred and scaled per class
                            (the ``class_rows_`` op on the CPU, a torch composite on CUDA)
                          -> torch.ops.coreaug.facility_location (csrc/facility_location_cpu.cpp)
                             or the Triton launcher (kernels/facility_location.py)
    distributed.py        select_coreset(group=...): rows routed to ranks by class, each
                          rank runs the engine on its classes (GreeDi for split classes)
    baselines.py          select_random, select_max_loss: the paper's comparisons

Every selector returns a :class:`~coreaug_fast.Coreset` (:mod:`coreaug_fast.coreset`);
:mod:`coreaug_fast.reference.facility_location` is the float64 twin the tests hold
:func:`select_coreset` against. Imports run one way: facility_location → distributed →
engine → class_rows → embeddings.
"""
from ..coreset import Coreset
from ..vocabulary import BACKENDS, OPTIMIZERS, SIMILARITIES
from . import engine
from .baselines import select_max_loss, select_random
from .embeddings import FactoredEmbeddings, LazyEmbeddings, gradient_embeddings
from .engine import picks_for_fraction
from .facility_location import select_coreset

__all__ = ["BACKENDS", "CHUNK_BYTES", "MAX_MATRIX_BYTES", "OPTIMIZERS", "PROGRESS_WORK", "SIMILARITIES", "Coreset",
           "FactoredEmbeddings", "LazyEmbeddings", "gradient_embeddings", "picks_for_fraction", "select_coreset",
           "select_max_loss", "select_random"]


def __getattr__(name: str):
    # The engine reads these at every call; a copy bound here would go stale and an assignment
    # to it would silently change nothing. Set them on coreaug_fast.selection.engine.
    if name in ("CHUNK_BYTES", "MAX_MATRIX_BYTES", "PROGRESS_WORK"):
        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
