"""Plain-PyTorch twins of every fast path, for tests and for machines without the
compiled extension. Slow by design; written for clarity, in float64 where it matters.

A twin imports torch, the standard library and the package's dependency-free tables and
types (:mod:`coreaug_fast.coreset`, :mod:`coreaug_fast.policies`) only, never code of the
path it judges, so a bug there cannot also fool its judge (``tests/test_imports.py``)."""
from .embeddings import gradient_embeddings_reference
from .distances import pairwise_distances_reference
from .facility_location import facility_location_reference
from .loss import weighted_cross_entropy_reference
from .augment import apply_augment_reference, augmenter_reference, crop_flip_reference

__all__ = [
    "apply_augment_reference",
    "augmenter_reference",
    "crop_flip_reference",
    "facility_location_reference",
    "gradient_embeddings_reference",
    "pairwise_distances_reference",
    "weighted_cross_entropy_reference",
]
