"""The op set and the augmentation policies as data: torchvision 0.29's RandAugment,
AutoAugment (ImageNet, CIFAR10, SVHN) and TrivialAugmentWide, restated as tables.

A policy is a magnitude space (for each op, how its magnitude bins are laid out and whether
its sign is drawn) plus, for AutoAugment, its list of sub-policies. Adding a policy adds
rows here, not branches in the op: ``coreaug_fast.policy_sampler`` turns these tables into
tensors and draws from them, and the fused op applies whatever ops and magnitudes it is given.

This module imports nothing but :mod:`coreaug_fast.vocabulary` (names only, itself
importing nothing), so that the reference twin and the tests can read it without the fast
path, and a test can hold each table against the one torchvision itself uses.
"""

OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness",
    "Color", "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
    "Invert",
)
"""The op set of the fused op (``coreaug_fast.augment``); an op's id is its position.
Magnitude units: ShearX/Y the shear factor (angle = degrees(atan(m)), centre (0, 0));
TranslateX/Y pixels (truncated to an int); Rotate degrees, counter-clockwise about the image
centre; Brightness/Color/Contrast/Sharpness the enhancement factor minus one
(factor = 1 + m >= 0); Posterize the bits kept (int(m) in [0, 8]); Solarize the threshold in
pixel units (pixels >= m are inverted, m <= 255); Identity/AutoContrast/Equalize/Invert
ignore it."""

OP_ID = {name: i for i, name in enumerate(OPS)}
"""An op's id (its position in :data:`OPS`), by name."""

MAX_OPS = 16
"""The most ops one row of the op may chain (``kMaxOps`` of ``csrc/augment_math.h``)."""

from .vocabulary import POLICIES  # noqa: E402,F401 (the names live with every other name)

AUTOAUGMENT_BINS = 10
"""AutoAugment's number of magnitude bins (torchvision fixes it: ``magnitudes_fn(10, H, W)``)."""

# A magnitude layout is one of:
#   ("linear", high, scale): torch.linspace(0, high * S, bins) in float32, with S = 1, the
#       image width ("width") or height ("height"): pixels for translations;
#   ("posterize", steps): (8 - arange(bins) / ((bins - 1) / steps)).round().int(), bits kept;
#   ("solarize",): 255 * torch.linspace(1, 0, bins), the threshold in pixels (torchvision
#       multiplies its fraction by 255 when it applies the op; the op takes pixels);
#   None: the op takes no magnitude (drawn as 0).
# An op missing from a space is never drawn from it.
_SHARED = {
    "ShearX": ("linear", 0.3, None),
    "ShearY": ("linear", 0.3, None),
    "TranslateX": ("linear", 150.0 / 331.0, "width"),
    "TranslateY": ("linear", 150.0 / 331.0, "height"),
    "Rotate": ("linear", 30.0, None),
    "Brightness": ("linear", 0.9, None),
    "Color": ("linear", 0.9, None),
    "Contrast": ("linear", 0.9, None),
    "Sharpness": ("linear", 0.9, None),
    "Posterize": ("posterize", 4),
    "Solarize": ("solarize",),
    "AutoContrast": None,
    "Equalize": None,
}

RANDAUGMENT_SPACE = {"Identity": None, **_SHARED}
"""torchvision's ``RandAugment._AUGMENTATION_SPACE``, in its order (the order ops are drawn in)."""

AUTOAUGMENT_SPACE = {**_SHARED, "Invert": None}
"""torchvision's ``AutoAugment._AUGMENTATION_SPACE`` (the sub-policies name the ops)."""

TRIVIALAUGMENT_SPACE = {
    "Identity": None,
    "ShearX": ("linear", 0.99, None),
    "ShearY": ("linear", 0.99, None),
    "TranslateX": ("linear", 32.0, None),
    "TranslateY": ("linear", 32.0, None),
    "Rotate": ("linear", 135.0, None),
    "Brightness": ("linear", 0.99, None),
    "Color": ("linear", 0.99, None),
    "Contrast": ("linear", 0.99, None),
    "Sharpness": ("linear", 0.99, None),
    "Posterize": ("posterize", 6),
    "Solarize": ("solarize",),
    "AutoContrast": None,
    "Equalize": None,
}
"""torchvision's ``TrivialAugmentWide._AUGMENTATION_SPACE``: its own wider magnitudes
(translations in pixels whatever the image size) and Posterize down to 2 bits."""

SIGNED = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color", "Contrast",
          "Sharpness")
"""Ops whose magnitude is negated with probability 1/2 (the same in every policy)."""

# AutoAugment sub-policies, as torchvision 0.29 lists them (duplicates included: they weight
# the uniform choice): two (op, probability, magnitude bin) steps each; bin None for ops
# without a magnitude.
AUTOAUGMENT_SUBPOLICIES = {
    "autoaugment-imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "autoaugment-cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
    "autoaugment-svhn": (
        (("ShearX", 0.9, 4), ("Invert", 0.2, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.6, None), ("Solarize", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("AutoContrast", 0.8, None)),
        (("ShearY", 0.9, 8), ("Invert", 0.4, None)),
        (("ShearY", 0.9, 5), ("Solarize", 0.2, 6)),
        (("Invert", 0.9, None), ("AutoContrast", 0.8, None)),
        (("Equalize", 0.6, None), ("Rotate", 0.9, 3)),
        (("ShearX", 0.9, 4), ("Solarize", 0.3, 3)),
        (("ShearY", 0.8, 8), ("Invert", 0.7, None)),
        (("Equalize", 0.9, None), ("TranslateY", 0.6, 6)),
        (("Invert", 0.9, None), ("Equalize", 0.6, None)),
        (("Contrast", 0.3, 3), ("Rotate", 0.8, 4)),
        (("Invert", 0.8, None), ("TranslateY", 0.0, 2)),
        (("ShearY", 0.7, 6), ("Solarize", 0.4, 8)),
        (("Invert", 0.6, None), ("Rotate", 0.8, 4)),
        (("ShearY", 0.3, 7), ("TranslateX", 0.9, 3)),
        (("ShearX", 0.1, 6), ("Invert", 0.6, None)),
        (("Solarize", 0.7, 2), ("TranslateY", 0.6, 7)),
        (("ShearY", 0.8, 4), ("Invert", 0.8, None)),
        (("ShearX", 0.7, 9), ("TranslateY", 0.8, 3)),
        (("ShearY", 0.8, 5), ("AutoContrast", 0.7, None)),
        (("ShearX", 0.7, 2), ("Invert", 0.1, None)),
    ),
}
