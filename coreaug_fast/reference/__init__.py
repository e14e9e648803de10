"""Plain-PyTorch twins of every fast path, for tests and for machines without the
compiled extension. Slow by design; written for clarity, in float64 where it matters."""
from .embeddings import gradient_embeddings_reference
from .distances import pairwise_distances_reference
from .selection import facility_location_reference
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
