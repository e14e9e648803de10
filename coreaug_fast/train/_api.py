"""Where the training loop's loss comes from, and which module is behind every op a run uses.

The loop calls the loss through this module (``_api.weighted_cross_entropy(...)``), so tests
can intercept it; selection and augmentation are called by
:mod:`coreaug_fast.coreset_augmentation`, whose module-level names tests intercept likewise.
"""
from .. import coreset_augmentation as _ca
from ..loss import weighted_cross_entropy

# Which module each call comes from; written into every run's summary so a figure is never
# mistaken for one measured with the fused ops.
IMPLEMENTATION = {
    f.__name__: f.__module__
    for f in (_ca.select_coreset, _ca.select_random, _ca.select_max_loss, _ca.Augmenter,
              weighted_cross_entropy, _ca.gradient_embeddings)
}

__all__ = ["IMPLEMENTATION", "weighted_cross_entropy"]
