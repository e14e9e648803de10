"""The one place the training loop takes the library's selection, augmentation and loss from.

The loop calls these through this module (``_api.select_coreset(...)``), so tests can
intercept them and one edit here switches implementations.
"""
from ..augment import Augmenter, crop_flip
from ..embeddings import gradient_embeddings
from ..loss import weighted_cross_entropy
from ..selection import select_coreset, select_max_loss, select_random

# Which module each call comes from; written into every run's summary so a figure is never
# mistaken for one measured with the fused ops.
IMPLEMENTATION = {
    f.__name__: f.__module__
    for f in (select_coreset, select_random, select_max_loss, Augmenter, crop_flip,
              weighted_cross_entropy, gradient_embeddings)
}

__all__ = ["Augmenter", "IMPLEMENTATION", "crop_flip", "gradient_embeddings", "select_coreset",
           "select_max_loss", "select_random", "weighted_cross_entropy"]
