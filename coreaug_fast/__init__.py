"""coreaug_fast: data-efficient augmentation (Liu & Mirzasoleiman, NeurIPS 2022).

Augment only a small weighted coreset, chosen per class as the medoids of the
last-layer gradient embeddings by greedy facility location, with fused CPU/CUDA ops
and Triton kernels. ``coreaug_fast.reference`` holds plain-PyTorch twins of every
fast path.

Where the code is: the C++/CUDA ops are built from the top-level ``csrc/`` into
``coreaug_fast._C`` (loaded by ``_ext.py``; importing it registers ``torch.ops.coreaug.*``).
The Triton kernels live in the top-level ``kernels/`` folder, which the install maps to
the subpackage ``coreaug_fast.kernels`` (``package_dir`` in ``setup.py``), so
``from ..kernels.facility_location import facility_location`` inside this package reads
``kernels/facility_location.py``. An op keeps one name in every layer: e.g.
``csrc/facility_location_cpu.cpp``, ``kernels/facility_location.py``,
``selection/facility_location.py``, ``reference/facility_location.py`` and
``tests/test_facility_location.py`` (the README's "Where each op lives").
"""
from ._version import __version__
from . import _interrupt

_interrupt.install()  # before torch is imported: Ctrl-C in a command line's start-up is one line


from . import reference
from . import analysis
from ._ext import ExtensionNotBuiltError, build_info
from .coreset import Coreset
from .selection import (FactoredEmbeddings, LazyEmbeddings, gradient_embeddings, select_coreset, select_max_loss,
                        select_random)
from .augment import OPS, Augmenter, AugmentParams, apply_augment, crop_flip
from .loss import weighted_cross_entropy
from .coreset_augmentation import CoresetAugmentation

__all__ = [
    "__version__",
    "AugmentParams",
    "Augmenter",
    "Coreset",
    "CoresetAugmentation",
    "ExtensionNotBuiltError",
    "FactoredEmbeddings",
    "LazyEmbeddings",
    "OPS",
    "apply_augment",
    "build_info",
    "crop_flip",
    "gradient_embeddings",
    "select_coreset",
    "select_max_loss",
    "select_random",
    "weighted_cross_entropy",
]
