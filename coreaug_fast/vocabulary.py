"""Every name a setting of the library takes, defined once: the Python API, the command line,
the Triton kernels and the C++ ops all read them from here (the compiled code takes a name's
position in its tuple as its integer code; ``tests/test_vocabulary.py`` checks that the C++
and Triton codes agree). Imports nothing.
"""

#: ``method=`` / ``--method``: the paper's method and its baselines.
METHODS = ("coreset", "random", "max-loss", "none", "full")
#: The methods that select a subset (and take ``fraction``).
SUBSET_METHODS = ("coreset", "random", "max-loss")
#: ``weights=`` / ``--subset-weights``: the loss weight w_j of a selected example's copies.
WEIGHTS = ("gamma", "normalized", "uniform")
#: ``aug_mode=``: the copies are appended to the originals, or replace them (paper App. D.6).
AUG_MODES = ("append", "inplace")
#: ``embedding=``: the gradient w.r.t. the logits, or w.r.t. the last layer's weights.
EMBEDDINGS = ("last-layer", "last-layer-features")
#: ``similarity=`` of the facility location; code = position (C++ and Triton).
SIMILARITIES = ("distance", "sqdistance", "exp")
#: ``optimizer=`` of the greedy; code = position (C++ and Triton).
OPTIMIZERS = ("naive", "lazy", "stochastic")
#: ``backend=`` of the selection.
BACKENDS = ("auto", "triton", "torch")
#: ``policy=`` / ``--policy``: the strong augmentation (tables in :mod:`coreaug_fast.policies`).
POLICIES = ("randaugment", "autoaugment-imagenet", "autoaugment-cifar10", "autoaugment-svhn", "trivialaugment")
#: ``weak=`` / ``--weak``: the weak augmentation of datasets.
WEAK_MODES = ("crop-flip", "resized-crop")
#: ``augment_impl=``: this library's fused op, or torchvision per image (a baseline).
AUGMENT_IMPLS = ("fused", "torchvision")
#: ``selection_pass=`` / ``--selection-pass``: where the selection's logits come from.
SELECTION_PASSES = ("clean", "train")
#: ``normalize=`` of the weighted loss / ``--loss-normalize``: what a batch's loss sum is divided by.
LOSS_NORMALIZATIONS = ("weights", "count")
#: ``--lr-decay``: the learning rate's decay after the warm-up.
LR_DECAYS = ("step", "cosine")


def code(names: tuple, name: str) -> int:
    """The integer code of ``name`` (its position in ``names``), as the compiled code takes it."""
    return names.index(name)
