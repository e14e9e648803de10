"""The error contract of the public API (docs/errors.md), checked row by row.

Every row of the tables in ``docs/errors.md`` is a row of :data:`ROWS` here: the call (a
Python expression over the small inputs of :func:`namespace`, or a command line), the
error type and the start of its message. ``test_contract_row`` makes each call and checks
both; ``test_doc_matches_rows`` checks that the doc's tables and :data:`ROWS` hold the
same rows, so neither can drift. After changing :data:`ROWS`, rewrite the doc's tables
with ``python tests/test_error_contract.py`` (it replaces the text between the two
``<!-- contract tables -->`` markers).
"""
from __future__ import annotations

import builtins
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import coreaug_fast
from coreaug_fast import _ext

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "errors.md"
BEGIN, END = "<!-- contract tables: begin -->", "<!-- contract tables: end -->"

TRAIN = "coreaug-train"
ANALYSIS = "python -m coreaug_fast.analysis"
EXIT2 = "exit 2"  # the error column of CLI rows: one line on stderr, exit status 2
NO_EXT = "(extension missing)"  # the argument column of rows run without the compiled extension
CHECK_OFF = "check=False (CPU)"  # the section of calls whose value checks are skipped
NONE, RETURNS = "none", "(returns a result)"  # error and message of a call that does not raise


class Row(NamedTuple):
    section: str   # the doc heading the row is listed under
    argument: str
    call: str      # a Python expression over namespace(), or a command line
    error: str     # an exception class name, or EXIT2
    message: str   # the message (CLI: the stderr line) starts with this


def _rows(section, error, *items):
    return [Row(section, arg, call, error, msg) for arg, call, msg in items]


V = "ValueError"
ROWS = [
    *_rows("select_coreset", V,
           ("embeddings", "select_coreset(X.numpy(), Y, 0.5)", "embeddings must be a torch.Tensor, got ndarray"),
           ("embeddings", "select_coreset(X[0], Y, 0.5)", "embeddings must have 2 dimensions, got shape (3,)"),
           ("embeddings", "select_coreset(X.long(), Y, 0.5)",
            "embeddings must be a floating-point tensor, got torch.int64"),
           ("embeddings", "select_coreset(X / 0, Y, 0.5)", "embeddings contains NaN or inf"),
           ("embeddings", "select_coreset(X * 1e20, Y, 0.5)",
            "embeddings has values up to 1e+20: too large for float32 distances over a class of 3 rows"),
           ("embeddings", "select_coreset((X,), Y, 0.5)",
            "factored embeddings must be a (grad, features) pair, got 1 items"),
           ("embeddings", "select_coreset((X, X[:5]), Y, 0.5)", "embeddings.features has 5 rows, expected 6"),
           ("embeddings", "select_coreset((X, X.long()), Y, 0.5)",
            "embeddings.features must be a floating-point tensor, got torch.int64"),
           ("embeddings", "select_coreset(FactoredEmbeddings(X, X * 1e20), Y, 0.5)",
            "embeddings (grad, features) has values up to 1e+20: too large for float32 distances"),
           ("embeddings", "select_coreset(LazyEmbeddings(X / 0, Y), Y, 0.5)", "embeddings.logits contains NaN or inf"),
           ("embeddings", "select_coreset(LazyEmbeddings(X, Y + 3), Y, 0.5)",
            "embeddings.targets has value 4, outside [0, 3)"),
           ("embeddings", "select_coreset(LazyEmbeddings(X, Y.int()), Y, 0.5)",
            "embeddings.targets must be int64, got torch.int32"),
           ("embeddings", "select_coreset(LazyEmbeddings(X, Y, X[:5]), Y, 0.5)",
            "embeddings.features has 5 rows, expected 6"),
           ("labels", "select_coreset(X, Y.float(), 0.5)", "labels must be an integer tensor, got torch.float32"),
           ("labels", "select_coreset(X, Y[:5], 0.5)", "labels has 5 rows, expected 6"),
           ("labels", "select_coreset(X, -Y, 0.5)", "labels has value -1, expected class ids >= 0"),
           ("labels", "select_coreset(X, Y.to('meta'), 0.5)",
            "tensors must be on one device, got embeddings on cpu, labels on meta"),
           ("embeddings", "select_coreset(X.to('meta'), Y.to('meta'), 0.5)",
            "embeddings is on the meta device (a shape without values); pass tensors on the CPU or a GPU"),
           ("fraction, budget", "select_coreset(X, Y)", "give exactly one of fraction and budget"),
           ("fraction, budget", "select_coreset(X, Y, 0.5, budget=2)", "give exactly one of fraction and budget"),
           ("fraction", "select_coreset(X, Y, 0)", "fraction must be a number in (0, 1], got 0"),
           ("fraction", "select_coreset(X, Y, 1.5)", "fraction must be a number in (0, 1], got 1.5"),
           ("fraction", "select_coreset(X, Y, '0.5')", "fraction must be a number in (0, 1], got '0.5'"),
           ("budget", "select_coreset(X, Y, budget=-1)", "budget must be >= 0, got -1"),
           ("budget", "select_coreset(X, Y, budget=True)",
            "budget must be an int or a per-class sequence of ints, got True"),
           ("budget", "select_coreset(X, Y, budget=2.5)", "budget must be an int or a 1-D sequence of ints"),
           ("budget", "select_coreset(X, Y, budget=[1])", "budget has 1 entries but labels has class 1"),
           ("budget", "select_coreset(X, Y, budget=[1, -1])", "budget has value -1, expected >= 0"),
           ("similarity", "select_coreset(X, Y, 0.5, similarity='cosine')",
            "similarity must be one of ['distance', 'sqdistance', 'exp'], got 'cosine'"),
           ("optimizer", "select_coreset(X, Y, 0.5, optimizer='greedy')",
            "optimizer must be one of ['naive', 'lazy', 'stochastic'], got 'greedy'"),
           ("epsilon", "select_coreset(X, Y, 0.5, optimizer='stochastic', epsilon=0)",
            "epsilon must be a number in (0, 1), got 0"),
           ("backend", "select_coreset(X, Y, 0.5, backend='cuda')",
            "backend must be one of ['auto', 'triton', 'torch'], got 'cuda'"),
           ("generator", "select_coreset(X, Y, 0.5, generator=0)",
            "generator must be a torch.Generator or None, got int 0"),
           ("indices", "select_coreset(X, Y, 0.5, indices=[0, 1, 2, 3, 4, 5])",
            "indices must be a torch.Tensor, got list"),
           ("indices", "select_coreset(X, Y, 0.5, indices=torch.arange(6.0))",
            "indices must be an integer tensor, got torch.float32"),
           ("indices", "select_coreset(X, Y, 0.5, indices=torch.arange(5))", "indices has 5 rows, expected 6"),
           ("indices", "select_coreset(X, Y, 0.5, indices=torch.tensor([0, 1, 2, 3, 4, 4]))",
            "indices has repeated values; each row needs its own dataset index"),
           ("max_rows_per_rank", "select_coreset(X, Y, 0.5, max_rows_per_rank=10)",
            "max_rows_per_rank applies to distributed selection; pass group= too"),
           ("group", "select_coreset(X, Y, 0.5, indices=torch.arange(6), group='world')",
            "group must be a torch.distributed ProcessGroup (e.g. dist.group.WORLD) or None, got str 'world'")),
    *_rows("select_random", V,
           ("labels", "select_random([0, 1], 0.5)", "labels must be a torch.Tensor, got list"),
           ("labels", "select_random(Y.float(), 0.5)", "labels must be an integer tensor, got torch.float32"),
           ("labels", "select_random(-Y, 0.5)", "labels has value -1, expected class ids >= 0"),
           ("labels", "select_random(Y.to('meta'), 0.5)", "labels is on the meta device (a shape without values)"),
           ("fraction", "select_random(Y, 0)", "fraction must be a number in (0, 1], got 0"),
           ("generator", "select_random(Y, 0.5, generator=0)",
            "generator must be a torch.Generator or None, got int 0")),
    *_rows("select_max_loss", V,
           ("losses", "select_max_loss(Y, Y, 0.5)", "losses must be a floating-point tensor, got torch.int64"),
           ("losses", "select_max_loss(LOSS / 0, Y, 0.5)", "losses contains NaN or inf"),
           ("losses", "select_max_loss(LOSS.to('meta'), Y.to('meta'), 0.5)",
            "losses is on the meta device (a shape without values)"),
           ("labels", "select_max_loss(LOSS, Y.float(), 0.5)", "labels must be an integer tensor, got torch.float32"),
           ("labels", "select_max_loss(LOSS, Y[:5], 0.5)", "labels has 5 rows, expected 6"),
           ("labels", "select_max_loss(LOSS, -Y, 0.5)", "labels has value -1, expected class ids >= 0"),
           ("fraction", "select_max_loss(LOSS, Y, 2)", "fraction must be a number in (0, 1], got 2")),
    *_rows("gradient_embeddings", V,
           ("logits", "gradient_embeddings(LOGITS.numpy(), T)", "logits must be a torch.Tensor, got ndarray"),
           ("logits", "gradient_embeddings(LOGITS[0], T)", "logits must have 2 dimensions, got shape (3,)"),
           ("logits", "gradient_embeddings(LOGITS.long(), T)",
            "logits must be a floating-point tensor, got torch.int64"),
           ("logits", "gradient_embeddings(LOGITS / 0, T)", "logits contains NaN or inf"),
           ("logits", "gradient_embeddings(LOGITS.to('meta'), T.to('meta'))",
            "logits is on the meta device (a shape without values)"),
           ("targets", "gradient_embeddings(LOGITS, T.float())",
            "targets must be an integer tensor, got torch.float32"),
           ("targets", "gradient_embeddings(LOGITS, T[:3])", "targets has 3 rows, expected 4"),
           ("targets", "gradient_embeddings(LOGITS, T + 1)", "targets has value 3, outside [0, 3)"),
           ("targets", "gradient_embeddings(LOGITS, T - 1)", "targets has value -1, outside [0, 3)"),
           ("features", "gradient_embeddings(LOGITS, T, [1])", "features must be a torch.Tensor, got list"),
           ("features", "gradient_embeddings(LOGITS, T, LOGITS[:3])", "features has 3 rows, expected 4"),
           ("features", "gradient_embeddings(LOGITS, T, LOGITS * float('inf'))", "features contains NaN or inf"),
           ("features", "gradient_embeddings(LOGITS, T, LOGITS.to('meta'))",
            "tensors must be on one device, got logits on cpu, targets on cpu, features on meta"),
           ("lazy", "gradient_embeddings(LOGITS, T, lazy=1)", "lazy must be True or False, got 1")),
    *_rows("weighted_cross_entropy", V,
           ("logits", "weighted_cross_entropy(LOGITS.numpy(), T)", "logits must be a torch.Tensor, got ndarray"),
           ("logits", "weighted_cross_entropy(LOGITS[0], T)", "logits must have 2 dimensions, got shape (3,)"),
           ("logits", "weighted_cross_entropy(LOGITS.long(), T)",
            "logits must be a floating-point tensor, got torch.int64"),
           ("logits", "weighted_cross_entropy(LOGITS[:, :0], T)",
            "logits must have at least one class column, got shape (4, 0)"),
           ("logits", "weighted_cross_entropy(LOGITS.to('meta'), T.to('meta'))",
            "logits is on the meta device (a shape without values)"),
           ("targets", "weighted_cross_entropy(LOGITS, T.float())",
            "targets must be an integer tensor, got torch.float32"),
           ("targets", "weighted_cross_entropy(LOGITS, T[:3])", "targets has 3 rows, expected 4"),
           ("targets", "weighted_cross_entropy(LOGITS, T + 1)", "targets has value 3, outside [0, 3)"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W.long())",
            "weights must be a floating-point tensor, got torch.int64"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W[:3])", "weights has 3 rows, expected 4"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W.to('meta'))",
            "tensors must be on one device, got logits on cpu, targets on cpu, weights on meta"),
           ("weights", "weighted_cross_entropy(LOGITS, T, -W)", "weights must be finite and >= 0, got -1.0"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W / 0)", "weights must be finite and >= 0, got inf"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W.double() * 1e300)",
            "weights must be finite and >= 0, got inf (the torch.float64 weights as torch.float32, "
            "the dtype the loss computes in)"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W * 3e38)",
            "weights sum to inf in torch.float32, the dtype the loss computes in (largest 3e+38); scale them "
            "down: the 'weights' mean does not change"),
           ("weights", "weighted_cross_entropy(LOGITS, T, W.double() * 1e-320)",
            "weights has nonzero torch.float64 values that are 0 as torch.float32, the dtype the loss computes in"),
           ("reduction", "weighted_cross_entropy(LOGITS, T, reduction='avg')",
            "reduction must be one of ['none', 'sum', 'mean'], got 'avg'"),
           ("normalize", "weighted_cross_entropy(LOGITS, T, normalize='batch')",
            "normalize must be one of ['weights', 'count'], got 'batch'"),
           ("label_smoothing", "weighted_cross_entropy(LOGITS, T, label_smoothing=1.5)",
            "label_smoothing must be a number in [0, 1], got 1.5"),
           ("label_smoothing", "weighted_cross_entropy(LOGITS, T, label_smoothing='0.1')",
            "label_smoothing must be a number in [0, 1], got '0.1'")),
    *_rows("apply_augment", V,
           ("images", "apply_augment(IMG.float(), OPS, MAG)", "images must be uint8, got torch.float32"),
           ("images", "apply_augment(IMG[0], OPS, MAG)", "images must have 4 dimensions, got shape (3, 8, 8)"),
           ("images", "apply_augment(IMG[:, :2], OPS, MAG)",
            "images must have 1 or 3 channels (N, C, H, W), got shape (2, 2, 8, 8)"),
           ("ops", "apply_augment(IMG, OPS.float(), MAG)", "ops must be an integer tensor, got torch.float32"),
           ("ops", "apply_augment(IMG, OPS + 15, MAG)", "ops has value 15, outside [0, 15)"),
           ("ops", "apply_augment(IMG, torch.zeros(2, 17, dtype=torch.int32), torch.zeros(2, 17))",
            "at most 16 ops per row, got L = 17"),
           ("ops", "apply_augment(IMG, OPS[:1], MAG[:1])",
            "without index, ops needs one row per image: 1 rows for 2 images"),
           ("magnitudes", "apply_augment(IMG, OPS, MAG.int())",
            "magnitudes must be a floating-point tensor, got torch.int32"),
           ("magnitudes", "apply_augment(IMG, OPS, MAG[:, :0])",
            "ops (2, 1) and magnitudes (2, 0) must have one shape (M, L)"),
           ("magnitudes", "apply_augment(IMG, OPS, MAG / 0)", "magnitudes contains NaN or inf"),
           ("magnitudes", "apply_augment(IMG, OPS + 6, MAG - 2)",
            "Brightness/Color/Contrast/Sharpness magnitudes must be >= -1 (factor 1 + m >= 0); "
            "magnitudes[0, 0] = -2.0 for op Brightness"),
           ("magnitudes", "apply_augment(IMG, OPS + 10, MAG + 9)",
            "Posterize magnitudes (bits kept, truncated) must lie in [0, 9); magnitudes[0, 0] = 9.0"),
           ("magnitudes", "apply_augment(IMG, OPS + 11, MAG + 256)",
            "Solarize thresholds must be <= 255; magnitudes[0, 0] = 256.0 for op Solarize"),
           ("magnitudes", "apply_augment(IMG, OPS, MAG.to('meta'))",
            "tensors must be on one device, got images on cpu, ops on cpu, magnitudes on meta"),
           ("index", "apply_augment(IMG, OPS, MAG, index=[0, 1])", "index must be a torch.Tensor, got list"),
           ("index", "apply_augment(IMG, OPS, MAG, index=torch.tensor([0.0, 1.0]))",
            "index must be an integer tensor, got torch.float32"),
           ("index", "apply_augment(IMG, OPS, MAG, index=torch.tensor([0]))", "index has 1 rows, expected 2"),
           ("index", "apply_augment(IMG, OPS, MAG, index=torch.tensor([0, 2]))", "index has value 2, outside [0, 2)"),
           ("fill", "apply_augment(IMG, OPS, MAG, fill=256)", "fill values must lie in [0, 255], got 256"),
           ("fill", "apply_augment(IMG, OPS, MAG, fill=(1, 2))", "fill must be an int or 3 ints, got (1, 2)"),
           ("fill", "apply_augment(IMG, OPS, MAG, fill=0.5)", "fill must be an int or 3 ints, got 0.5"),
           ("interpolation", "apply_augment(IMG, OPS, MAG, interpolation='bilinear')",
            "interpolation must be one of ['nearest'], got 'bilinear'")),
    *_rows("crop_flip", V,
           ("images", "crop_flip(IMG.float(), OFF, FLIP)", "images must be uint8, got torch.float32"),
           ("offsets", "crop_flip(IMG, [[4, 4], [4, 4]], FLIP)", "offsets must be a torch.Tensor, got list"),
           ("offsets", "crop_flip(IMG, OFF.float(), FLIP)", "offsets must be an integer tensor, got torch.float32"),
           ("offsets", "crop_flip(IMG, OFF[:, :1], FLIP)", "offsets must be (M, 2) (top, left), got shape (2, 1)"),
           ("offsets", "crop_flip(IMG, OFF + 5, FLIP)", "offsets has value 9, outside [0, 9)"),
           ("offsets", "crop_flip(IMG, OFF[:1], FLIP[:1])",
            "without index, offsets needs one row per image: 1 rows for 2 images"),
           ("flips", "crop_flip(IMG, OFF, [0, 1])", "flips must be a torch.Tensor, got list"),
           ("flips", "crop_flip(IMG, OFF, FLIP.float())", "flips must be bool (or integer 0/1), got torch.float32"),
           ("flips", "crop_flip(IMG, OFF, FLIP.long() + 2)", "flips has value 2, outside [0, 2)"),
           ("flips", "crop_flip(IMG, OFF, FLIP[:1])", "flips has 1 rows, expected 2"),
           ("flips", "crop_flip(IMG, OFF, FLIP.to('meta'))",
            "tensors must be on one device, got images on cpu, offsets on cpu, flips on meta"),
           ("padding", "crop_flip(IMG, OFF, FLIP, padding=-1)",
            "padding must be an int >= 0 (at most 1073741824), got -1"),
           ("padding", "crop_flip(IMG, OFF, FLIP, padding=2**32)",
            "padding must be an int >= 0 (at most 1073741824), got 4294967296"),
           ("padding", "crop_flip(IMG, OFF, FLIP, padding=2.0)",
            "padding must be an int >= 0 (at most 1073741824), got 2.0"),
           ("offsets", "crop_flip(IMG, torch.full((2, 3), 4), FLIP)",
            "offsets must be (M, 2) (top, left), got shape (2, 3)"),
           ("offsets", "crop_flip(IMG, torch.full((3, 2), 4), FLIP)",
            "without index, offsets needs one row per image: 3 rows for 2 images"),
           ("offsets", "crop_flip(IMG, torch.full((3, 2), 4), FLIP, index=torch.tensor([0, 1]))",
            "offsets has 3 rows, expected 2 (as flips and index)"),
           ("index", "crop_flip(IMG, OFF, FLIP, index=torch.tensor([0, 2]))", "index has value 2, outside [0, 2)"),
           ("mean, std", "crop_flip(IMG, OFF, FLIP, out_dtype=torch.float32, mean=0.5)",
            "mean and std must be given together (or neither), got mean=0.5, std=None"),
           ("mean, std", "crop_flip(IMG, OFF, FLIP, mean=0.5, std=0.2)",
            "mean/std need a floating out_dtype, got uint8"),
           ("mean", "crop_flip(IMG, OFF, FLIP, out_dtype=torch.float32, mean=[0.5, 0.5], std=0.2)",
            "mean has 2 values for 3 channels"),
           ("out_dtype", "crop_flip(IMG, OFF, FLIP, out_dtype=torch.int32)",
            "out_dtype must be one of [torch.float32, torch.float16, torch.bfloat16, torch.uint8], got torch.int32")),
    *_rows("Augmenter", V,
           ("num_ops", "Augmenter(num_ops=17)", "num_ops must be in [0, 16], got 17"),
           ("num_ops", "Augmenter(num_ops=2.0)", "num_ops must be an integer, got float 2.0"),
           ("num_magnitude_bins", "Augmenter(num_magnitude_bins=1)", "num_magnitude_bins must be in [2, 65536], got 1"),
           ("magnitude", "Augmenter(magnitude=31)", "magnitude must be in [0, 30], got 31"),
           ("copies", "Augmenter(copies=0)", "copies must be in [1, 65536], got 0"),
           ("copies", "Augmenter(copies=2**62)", "copies must be in [1, 65536], got 4611686018427387904"),
           ("padding", "Augmenter(padding=2**63)",
            "padding must be an int >= 0 (at most 1073741824), got 9223372036854775808"),
           ("out_dtype", "Augmenter(out_dtype=torch.float64)",
            "out_dtype must be one of [torch.float32, torch.float16, torch.bfloat16, torch.uint8], got torch.float64"),
           ("mean, std", "Augmenter(mean=0.5)",
            "mean and std must be given together (or neither), got mean=0.5, std=None"),
           ("mean, std", "Augmenter(mean=0.5, std=0.5, out_dtype=torch.uint8)",
            "mean/std need a floating out_dtype, got uint8"),
           ("mean", "Augmenter(mean=125.0, std=60.0)",
            "mean is in units of x / 255 (values in [0, 1], as torchvision's Normalize after ToDtype(scale=True))"),
           ("mean", "Augmenter(mean='a', std=0.5)", "mean must be a finite float or one per channel, got 'a'"),
           ("mean", "Augmenter(mean=float('nan'), std=0.5)", "mean must be a finite float or one per channel, got nan"),
           ("std", "Augmenter(mean=0.5, std=0.0)", "std must be nonzero, got 0.0"),
           ("std", "Augmenter(mean=0.5, std=1e-45)",
            "std must be at least 1.175e-38 in magnitude (a normal float32), got 1e-45"),
           ("std", "Augmenter(mean=0.5, std=1e-6, out_dtype=torch.float16)",
            "std 1e-06 is too small for out_dtype torch.float16: (x / 255 - 0.5) / 1e-06 is -inf for x = 0"),
           ("flip", "Augmenter(flip='no')", "flip must be a bool, got str 'no'"),
           ("policy", "Augmenter(policy='autoaugment')",
            "policy must be one of ['randaugment', 'autoaugment-imagenet', 'autoaugment-cifar10', "
            "'autoaugment-svhn', 'trivialaugment'], got 'autoaugment'"),
           ("num_ops", "Augmenter(num_ops=2, policy='autoaugment-cifar10')",
            "num_ops is not a setting of policy 'autoaugment-cifar10', which fixes its ops, probabilities and "
            "magnitude bins (of 10) per sub-policy; got num_ops=2 (leave it None)"),
           ("magnitude", "Augmenter(magnitude=9, policy='trivialaugment')",
            "magnitude is not a setting of policy 'trivialaugment', which applies one op per row with a "
            "magnitude bin drawn uniformly; got magnitude=9 (leave it None)"),
           ("num_magnitude_bins", "Augmenter(num_magnitude_bins=31, policy='autoaugment-imagenet')",
            "num_magnitude_bins is not a setting of policy 'autoaugment-imagenet'")),
    *_rows("Augmenter call, sample, apply", V,
           ("images", "Augmenter()(IMG.float())", "images must be uint8, got torch.float32"),
           ("index", "Augmenter()(IMG, index=[0])", "index must be a torch.Tensor, got list"),
           ("index", "Augmenter()(IMG, index=torch.tensor([0.0]))",
            "index must be an integer tensor, got torch.float32"),
           ("index", "Augmenter()(IMG, index=torch.tensor([2]))", "index has value 2, outside [0, 2)"),
           ("index", "Augmenter()(IMG, index=torch.tensor([0], device='meta'))",
            "tensors must be on one device, got images on cpu, index on meta"),
           ("generator", "Augmenter()(IMG, generator=0)", "generator must be a torch.Generator or None, got int 0"),
           ("mean (constructor)", "Augmenter(mean=[0.5, 0.5], std=0.5)(IMG)", "mean has 2 values for 3 channels"),
           ("fill (constructor)", "Augmenter(fill=300)(IMG)", "fill values must lie in [0, 255], got 300"),
           ("generator", "Augmenter().sample(torch.tensor([0]), 8, 8, generator=0)",
            "generator must be a torch.Generator or None, got int 0"),
           ("source", "Augmenter().sample([0], 8, 8)", "source must be a torch.Tensor, got list"),
           ("height", "Augmenter().sample(torch.tensor([0]), -8, 8)", "height must be in [1, inf], got -8"),
           ("width", "Augmenter().sample(torch.tensor([0]), 8, 2.5)", "width must be an integer, got float 2.5"),
           ("params", "Augmenter().apply(IMG, None)", "params must be an AugmentParams, got NoneType"),
           ("params", "Augmenter().apply(IMG, Augmenter().sample(torch.tensor([5]), 8, 8))",
            "params.source has value 5, outside [0, 2)"),
           ("params", "Augmenter().apply(IMG, Augmenter().sample(torch.tensor([0]), 8, 8)._replace("
                      "ops=torch.full((4, 2), 99, dtype=torch.int32)))", "params.ops has value 99, outside [0, 15)"),
           ("params", "Augmenter().apply(IMG, Augmenter().sample(torch.tensor([0]), 8, 8)._replace(flips=None))",
            "params.offsets and params.flips must both be set or both be None")),
    *_rows("CoresetAugmentation", V,
           ("images", "CoresetAugmentation(IMG.float(), L2)", "images must be uint8, got torch.float32"),
           ("labels", "CoresetAugmentation(IMG, L2.float())", "labels must be an integer tensor, got torch.float32"),
           ("labels", "CoresetAugmentation(IMG, L2[:1])", "labels has 1 rows for 2 images"),
           ("labels", "CoresetAugmentation(IMG, -L2)", "labels must be >= 0"),
           ("method", "CoresetAugmentation(IMG, L2, method='all')",
            "method must be one of ['coreset', 'random', 'max-loss', 'none', 'full'], got 'all'"),
           ("aug_mode", "CoresetAugmentation(IMG, L2, aug_mode='x')",
            "aug_mode must be one of ['append', 'inplace'], got 'x'"),
           ("weights", "CoresetAugmentation(IMG, L2, weights='x')",
            "weights must be one of ['gamma', 'normalized', 'uniform'], got 'x'"),
           ("similarity", "CoresetAugmentation(IMG, L2, similarity='x')",
            "similarity must be one of ['distance', 'sqdistance', 'exp'], got 'x'"),
           ("optimizer", "CoresetAugmentation(IMG, L2, optimizer='x')",
            "optimizer must be one of ['naive', 'lazy', 'stochastic'], got 'x'"),
           ("out_dtype", "CoresetAugmentation(IMG, L2, out_dtype=torch.uint8)",
            "out_dtype must be one of [torch.float32, torch.float16, torch.bfloat16], got torch.uint8"),
           ("augment_impl", "CoresetAugmentation(IMG, L2, augment_impl='x')",
            "augment_impl must be one of ['fused', 'torchvision'], got 'x'"),
           ("features", "CoresetAugmentation(IMG, L2, features='fc')",
            "features must be an nn.Module (the layer whose input is the penultimate activation, e.g. model.fc), "
            "got str"),
           ("embedding", "CoresetAugmentation(IMG, L2, embedding='x')",
            "embedding must be one of ['last-layer', 'last-layer-features'], got 'x'"),
           ("embedding", "CoresetAugmentation(IMG, L2, embedding='last-layer-features')",
            'embedding="last-layer-features" needs features=<the module whose input is the penultimate activation>'),
           ("fraction", "CoresetAugmentation(IMG, L2, fraction=0)", "fraction must be a number in (0, 1], got 0"),
           ("select_every", "CoresetAugmentation(IMG, L2, select_every=0)", "select_every must be in [1, inf], got 0"),
           ("copies", "CoresetAugmentation(IMG, L2, copies=-1)", "copies must be in [0, 65536], got -1"),
           ("copies", "CoresetAugmentation(IMG, L2, copies=10**9)", "copies must be in [0, 65536], got 1000000000"),
           ("copies", "CoresetAugmentation(IMG, L2, method='full', copies=0)", 'copies must be >= 1 for method="full"'),
           ("subset_only", "CoresetAugmentation(IMG, L2, method='none', subset_only=True)",
            "subset_only needs a subset method ('coreset', 'random', 'max-loss'), got method='none'"),
           ("num_ops", "CoresetAugmentation(IMG, L2, num_ops=17)", "num_ops must be in [0, 16], got 17"),
           ("magnitude", "CoresetAugmentation(IMG, L2, magnitude=31)", "magnitude must be in [0, 30], got 31"),
           ("padding", "CoresetAugmentation(IMG, L2, padding=-1)", "padding must be in [0, inf], got -1"),
           ("padding", "CoresetAugmentation(IMG, L2, padding=2**31)",
            "padding must be an int >= 0 (at most 1073741824), got 2147483648"),
           ("seed", "CoresetAugmentation(IMG, L2, seed=-1)", "seed must be in [0, inf], got -1"),
           ("mean, std", "CoresetAugmentation(IMG, L2, mean=0.5)",
            "mean and std must be given together (or neither), got mean=0.5, std=None"),
           ("mean", "CoresetAugmentation(IMG, L2, mean=[0.5, 0.5], std=0.5)", "mean has 2 values for 3 channels"),
           ("mean", "CoresetAugmentation(IMG, L2, mean=125.0, std=60.0)",
            "mean is in units of x / 255 (values in [0, 1]"),
           ("std", "CoresetAugmentation(IMG, L2, mean=0.5, std=0.0)", "std must be nonzero, got 0.0"),
           ("policy", "CoresetAugmentation(IMG, L2, policy='autoaugment')",
            "policy must be one of ['randaugment', 'autoaugment-imagenet', 'autoaugment-cifar10', "
            "'autoaugment-svhn', 'trivialaugment'], got 'autoaugment'"),
           ("num_ops", "CoresetAugmentation(IMG, L2, policy='autoaugment-imagenet', num_ops=2)",
            "num_ops is not a setting of policy 'autoaugment-imagenet'"),
           ("group", "CoresetAugmentation(IMG, L2, group='world')",
            "group must be a torch.distributed ProcessGroup (e.g. dist.group.WORLD) or None, got str 'world'"),
           ("images", "CoresetAugmentation(5, L2)",
            "images must be a uint8 tensor (N, C, H, W) or a map-style dataset of (image, label) items"),
           ("images", "CoresetAugmentation([], image_size=8)", "images is an empty dataset"),
           ("images", "CoresetAugmentation([IMG[0]], image_size=8)",
            "images: dataset item 0: is a Tensor; expected an (image, label) pair"),
           ("images", "CoresetAugmentation([(IMGF[0], 0)], image_size=8)",
            "images: dataset item 0: the image is a torch.float32 tensor; give uint8 images"),
           ("images", "CoresetAugmentation([(IMG[0, 0, 0], 0)], image_size=8)",
            "images: dataset item 0: the image is a tensor of shape (8,); expected (C, H, W) or (H, W)"),
           ("images", "CoresetAugmentation([(IMG[0], 0.5)], image_size=8)",
            "images: dataset item 0: the label is a float (0.5), not an integer class id"),
           ("image_size", "CoresetAugmentation(DS)", "image_size is needed with a dataset"),
           ("image_size", "CoresetAugmentation(DS, image_size=4)", "image_size must be in [8, inf], got 4"),
           ("image_size", "CoresetAugmentation(IMG, L2, image_size=8)",
            "image_size applies to a dataset; a tensor's images are used at their own shape (3, 8, 8)"),
           ("weak", "CoresetAugmentation(IMG, L2, weak='x')",
            "weak must be one of ['crop-flip', 'resized-crop'], got 'x'"),
           ("weak", "CoresetAugmentation(IMG, L2, weak='resized-crop')", "weak='resized-crop' needs a dataset"),
           ("padding", "CoresetAugmentation(DS, image_size=8, weak='resized-crop', padding=2)",
            'padding must be 0 with weak="resized-crop"'),
           ("channels", "CoresetAugmentation(DS, image_size=8, channels=4)", "channels must be one of [1, 3], got 4"),
           ("num_workers", "CoresetAugmentation(IMG, L2, num_workers=2)", "num_workers applies to a dataset"),
           ("num_workers", "CoresetAugmentation(DS, image_size=8, num_workers=-1)",
            "num_workers must be in [0, inf], got -1"),
           ("prefetch_factor", "CoresetAugmentation(DS, image_size=8, prefetch_factor=2)",
            "prefetch_factor needs num_workers > 0"),
           ("augment_impl", "CoresetAugmentation(DS, image_size=8, augment_impl='torchvision')",
            "augment_impl='torchvision' takes a uint8 tensor"),
           ("labels", "CoresetAugmentation(DS, L2[:1], image_size=8)", "labels has 1 rows, expected 2"),
           ("labels", "CoresetAugmentation(DS, -L2, image_size=8)", "labels: item 1 has label -1")),
    *_rows("CoresetAugmentation methods", V,
           ("model", "CoresetAugmentation(IMG, L2).epoch('model', 4)", "model must be an nn.Module, got str"),
           ("batch_size", "CoresetAugmentation(IMG, L2).epoch(MODEL, 0)", "batch_size must be in [1, inf], got 0"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({})",
            "state is missing ['epoch', 'ever_selected', 'generators', 'subset', 'weights']: "
            "not a CoresetAugmentation state_dict"),
           ("images_u8", "CoresetAugmentation(IMG, L2).transform_eval(IMG.float())",
            "images_u8 must be uint8, got torch.float32"),
           ("images_u8", "CoresetAugmentation(IMG, L2).transform_eval(IMG[:, :1])",
            "images_u8 has 1 channels; this object normalises 3"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict(CoresetAugmentation(IMG, L2, seed=1).state_dict())",
            "state: seed is 1 there and 0 here: a state of another configuration"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict("
                     "CoresetAugmentation(torch.cat([IMG, IMG]), torch.cat([L2, L2])).state_dict())",
            "state: n is 4 there and 2 here"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({**CoresetAugmentation(IMG, L2).state_dict(), "
                     "'epoch': -3})", "state: epoch must be an int >= 0, got -3"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({**CoresetAugmentation(IMG, L2).state_dict(), "
                     "'generators': {}})", "state: generators must hold ['augment', 'select', 'shuffle'], got []"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({**CoresetAugmentation(IMG, L2).state_dict(), "
                     "'subset': torch.tensor([0]), 'weights': torch.tensor([float('nan')])})",
            "state: weights must be finite and >= 0"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({**CoresetAugmentation(IMG, L2).state_dict(), "
                     "'coreset': {'indices': torch.zeros(1)}})",
            "state: coreset must be None or a dict of the tensors ['indices', 'weights', 'gains', 'assignment', "
            "'labels', 'classes', 'offsets']"),
           ("state", "CoresetAugmentation(IMG, L2).load_state_dict({**CoresetAugmentation(IMG, L2).state_dict(), "
                     "'recording': {'seen': torch.zeros(2, dtype=torch.bool), 'features': None, "
                     "'logits': torch.full((2, 2), float('nan'))}})",
            "state: recording.logits contains NaN or inf"),
           ("state", "CoresetAugmentation(IMG, L2, method='none').load_state_dict("
                     "{**CoresetAugmentation(IMG, L2, method='none').state_dict(), "
                     "'subset': torch.tensor([0]), 'weights': torch.ones(1)})",
            "state: holds a subset, but method 'none' selects none"),
           ("model", "CoresetAugmentation(IMG, L2, method='max-loss').epoch("
                     "torch.nn.Sequential(MODEL, torch.nn.Flatten(0)), 2)",
            "model: in the selection pass of epoch 0 it returned shape (4,) torch.float32 for 2 images"),
           ("model", "CoresetAugmentation(IMG, L2, method='max-loss').epoch(torch.nn.Sequential(MODEL, "
                     "torch.nn.Threshold(9.0, float('nan'))), 2)",
            "model: its output in the selection pass of epoch 0 is not finite (NaN or inf in 2 of 2 rows)"),
           ("labels", "CoresetAugmentation(IMG, L2 * 2, method='max-loss').epoch(MODEL, 2)",
            "labels: class id 2 is outside the model's 2 outputs (selection pass of epoch 0)"),
           ("data", "next(CoresetAugmentation(IMG, L2).eval_batches(5))",
            "data must be a uint8 tensor (N, C, H, W) or a map-style dataset"),
           ("batch_size", "next(CoresetAugmentation(IMG, L2).eval_batches(DS, 0))",
            "batch_size must be in [1, inf], got 0")),
    *_rows("analysis.jacobian_spectrum", V,
           ("model", "jacobian_spectrum('model', IMGF, L2)", "model must be a torch.nn.Module, got str"),
           ("model", "jacobian_spectrum(MODEL.requires_grad_(False), IMGF, L2)",
            "model has no trainable parameters (requires_grad=True)"),
           ("model", "jacobian_spectrum(torch.nn.Sequential(MODEL, torch.nn.Flatten(0)), IMGF, L2)",
            "model must map a batch of b inputs to a (b, C) tensor; one input gave (2,)"),
           ("images", "jacobian_spectrum(MODEL, IMGF.numpy(), L2)", "images must be a torch.Tensor, got ndarray"),
           ("images", "jacobian_spectrum(MODEL, IMGF[:0], L2[:0])", "images is empty"),
           ("images", "jacobian_spectrum(MODEL, IMGF / 0, L2)", "images contains NaN or inf"),
           ("classes", "jacobian_spectrum(MODEL, IMGF, L2, classes=[0.5])", "classes must be an integer, got float 0.5"),
           ("targets", "jacobian_spectrum(MODEL, IMGF, L2.float())",
            "targets must be an integer tensor, got torch.float32"),
           ("targets", "jacobian_spectrum(MODEL, IMGF, L2[:1])", "images has 2 rows but targets has 1"),
           ("targets", "jacobian_spectrum(MODEL, IMGF, L2 + 5, output='target')",
            "targets has value 6, outside [0, 2)"),
           ("augment", "jacobian_spectrum(MODEL, IMGF, L2, augment=3)", "augment must be callable, got int"),
           ("augment", "jacobian_spectrum(MODEL, IMGF, L2, augment=lambda x: x[:1], num_bins=2)",
            "augment turned 2 images into (1, 3, 8, 8); it must keep one output per input"),
           ("augment", "jacobian_spectrum(MODEL, IMGF, L2, augment=lambda x: 0, num_bins=2)",
            "augment must return a torch.Tensor, got int"),
           ("augment", "jacobian_spectrum(MODEL, IMGF, L2, augment=lambda x: x / 0, num_bins=2)",
            "augment(images) contains NaN or inf"),
           ("max_examples", "jacobian_spectrum(MODEL, IMGF, L2, max_examples=0)",
            "max_examples must be an int >= 1, got 0"),
           ("classes", "jacobian_spectrum(MODEL, IMGF, L2, classes=[5])", "classes [5]: no example has target [5]"),
           ("classes", "jacobian_spectrum(MODEL, IMGF, L2, classes=[])",
            "classes []: no example has target (empty list)"),
           ("seed", "jacobian_spectrum(MODEL, IMGF, L2, seed=-1)", "seed must be an int >= 0, got -1"),
           ("num_bins", "jacobian_spectrum(MODEL, IMGF, L2, num_bins=0)", "num_bins must be an int >= 1, got 0"),
           ("num_bins", "jacobian_spectrum(MODEL, IMGF, L2, augment=lambda x: x, num_bins=30)",
            "num_bins=30 exceeds the number of singular values (min(rows=4, P=386))"),
           ("chunk_size", "jacobian_spectrum(MODEL, IMGF, L2, chunk_size=0)", "chunk_size must be an int >= 1, got 0"),
           ("output", "jacobian_spectrum(MODEL, IMGF, L2, output='x')",
            "output must be one of ['logits', 'target'], got 'x'"),
           ("method", "jacobian_spectrum(MODEL, IMGF, L2, method='x')",
            "method must be one of ['auto', 'gram', 'svd'], got 'x'")),
    *_rows("Without the compiled extension", "ExtensionNotBuiltError",
           (NO_EXT, "gradient_embeddings(LOGITS, T)",
            "gradient_embeddings needs the compiled extension coreaug_fast._C, which did not load"),
           (NO_EXT, "weighted_cross_entropy(LOGITS, T)",
            "weighted_cross_entropy needs the compiled extension coreaug_fast._C, which did not load"),
           (NO_EXT, "select_coreset(X, Y, 0.5, backend='torch')",
            "select_coreset needs the compiled extension coreaug_fast._C, which did not load"),
           (NO_EXT, "apply_augment(IMG, OPS, MAG)",
            "apply_augment needs the compiled extension coreaug_fast._C, which did not load"),
           (NO_EXT, "crop_flip(IMG, OFF, FLIP)",
            "crop_flip needs the compiled extension coreaug_fast._C, which did not load"),
           (NO_EXT, "Augmenter()(IMG)", "Augmenter needs the compiled extension coreaug_fast._C, which did not load")),
    *_rows(CHECK_OFF, "RuntimeError",
           ("targets", "weighted_cross_entropy(LOGITS, T + 1, check=False)", "targets[2] = 3 is outside [0, 3)"),
           ("index", "apply_augment(IMG, OPS, MAG, index=torch.tensor([0, 2]), check=False)",
            "index[1] = 2 is outside [0, 2)"),
           ("ops", "apply_augment(IMG, OPS + 15, MAG, check=False)", "ops holds 15, not an op id in [0, 15)"),
           ("index", "crop_flip(IMG, OFF, FLIP, index=torch.tensor([0, 2]), check=False)",
            "index[1] = 2 is outside [0, 2)"),
           ("index", "Augmenter()(IMG, index=torch.tensor([2]), check=False)", "index[0] = 2 is outside [0, 2)")),
    *_rows(CHECK_OFF, NONE,
           ("weights", "weighted_cross_entropy(LOGITS, T, -W, check=False)", RETURNS),
           ("logits", "weighted_cross_entropy(LOGITS.to('meta'), T.to('meta'), check=False)", RETURNS),
           ("magnitudes", "apply_augment(IMG, OPS + 6, MAG - 5, check=False)", RETURNS),
           ("offsets", "crop_flip(IMG, OFF + 5, FLIP, check=False)", RETURNS)),
    *_rows(TRAIN, EXIT2,
           ("--lr", f"{TRAIN} --lr nan", f"{TRAIN}: error: --lr must be finite, got nan"),
           ("--lr", f"{TRAIN} --lr 1e308", f"{TRAIN}: error: --lr must be in (0.0, 10.0], got 1e+308"),
           ("--weight-decay", f"{TRAIN} --weight-decay inf", f"{TRAIN}: error: --weight-decay must be finite, got inf"),
           ("--momentum", f"{TRAIN} --momentum 1", f"{TRAIN}: error: --momentum must be in [0.0, 1.0), got 1.0"),
           ("--num-ops", f"{TRAIN} --num-ops 17", f"{TRAIN}: error: --num-ops must be in [1, 16], got 17"),
           ("--magnitude", f"{TRAIN} --magnitude 31", f"{TRAIN}: error: --magnitude must be in [0, 30], got 31"),
           ("--policy", f"{TRAIN} --policy autoaugment",
            f"{TRAIN}: error: argument --policy: invalid choice: 'autoaugment'"),
           ("--num-ops", f"{TRAIN} --policy autoaugment-imagenet --num-ops 2",
            f"{TRAIN}: error: --num-ops is a setting of --policy randaugment; --policy autoaugment-imagenet fixes "
            "its own ops and magnitudes"),
           ("--dataset", f"{TRAIN} --dataset folder",
            f"{TRAIN}: error: --dataset folder reads --data-dir ROOT holding train/<class>/ and val/<class>/ images"),
           ("--data-dir", f"{TRAIN} --dataset folder --data-dir .",
            f"{TRAIN}: error: --data-dir .: no train/ folder (expected ROOT/train/<class>/<image> and "
            "ROOT/val/<class>/<image>, the ImageNet layout)"),
           ("--image-size", f"{TRAIN} --dataset folder --data-dir . --image-size 4",
            f"{TRAIN}: error: --image-size must be in [8, 65536], got 4"),
           ("--weak", f"{TRAIN} --weak resized-crop",
            f"{TRAIN}: error: --weak resized-crop needs --dataset folder (images of any size); --dataset digits "
            "uses crop-flip"),
           ("--workers", f"{TRAIN} --dataset folder --data-dir . --workers -1",
            f"{TRAIN}: error: --workers must be >= 0, got -1"),
           ("--model", f"{TRAIN} --model resnet18",
            f"{TRAIN}: error: --model resnet18 takes 3-channel images; this dataset has 1"),
           ("--weights", f"{TRAIN} --weights missing.pt", f"{TRAIN}: error: --weights missing.pt: no such file"),
           ("--weights", f"{TRAIN} --weights garbage.pt",
            f"{TRAIN}: error: --weights garbage.pt: not a state dict of tensors ("),
           ("--weights", f"{TRAIN} --weights list.pt", f"{TRAIN}: error: --weights list.pt: not a state dict"),
           ("--seed", f"{TRAIN} --seed -1", f"{TRAIN}: error: --seed must be in [0, 4294967295], got -1"),
           ("--epochs", f"{TRAIN} --epochs 0", f"{TRAIN}: error: --epochs must be >= 1, got 0"),
           ("--copies", f"{TRAIN} --method full --copies 0", f"{TRAIN}: error: --method full needs --copies >= 1"),
           ("--subset-only", f"{TRAIN} --method none --subset-only",
            f"{TRAIN}: error: --subset-only needs a subset method (random, max-loss, coreset), got --method none"),
           ("--fraction", f"{TRAIN} --fraction 0",
            f"{TRAIN}: error: argument --fraction: must be in (0, 1], got 0 (see {TRAIN} --help)"),
           ("--method", f"{TRAIN} --method foo", f"{TRAIN}: error: argument --method: invalid choice: 'foo'"),
           ("--device", f"{TRAIN} --device tpu", f"{TRAIN}: error: --device must be auto, cpu or cuda[:N]; got 'tpu'"),
           ("--device", f"{TRAIN} --device meta",
            f"{TRAIN}: error: --device must be auto, cpu or cuda[:N]; got 'meta'"),
           ("--image-size", f"{TRAIN} --dataset synthetic --image-size 1",
            f"{TRAIN}: error: --image-size must be in [8, 65536], got 1"),
           ("--image-size", f"{TRAIN} --image-size 64",
            f"{TRAIN}: error: --image-size applies to --dataset synthetic or folder; --dataset digits has its own"),
           ("--workers", f"{TRAIN} --workers 2",
            f"{TRAIN}: error: --workers applies to --dataset folder; --dataset digits has its own"),
           ("--out", f"{TRAIN} --out /proc/x", f"{TRAIN}: error: --out /proc/x: cannot write there"),
           ("--out", f"{TRAIN} --out=", f"{TRAIN}: error: --out must name a folder, got ''"),
           ("--out", f"{TRAIN} --out oldrun",
            f"{TRAIN}: error: --out oldrun is not empty (summary.json): continue the run there with --resume, "
            "replace it with --overwrite, or choose another folder"),
           ("--overwrite", f"{TRAIN} --out mixed --overwrite",
            f"{TRAIN}: error: --overwrite: --out mixed holds files coreaug-train did not write (notes.txt); "
            "refusing to delete them"),
           ("--overwrite", f"{TRAIN} --resume --overwrite",
            f"{TRAIN}: error: --resume and --overwrite exclude each other"),
           ("--resume", f"{TRAIN} --resume missing.pt", f"{TRAIN}: error: --resume: no checkpoint at missing.pt"),
           ("--resume", f"{TRAIN} --resume garbage.pt",
            f"{TRAIN}: error: --resume: refusing garbage.pt: it holds objects other than tensors and plain Python "
            "values"),
           ("--resume", f"{TRAIN} --resume unknown_keys.pt",
            f"{TRAIN}: error: --resume: unknown_keys.pt was written by another version of coreaug-train "
            "(unknown keys policy_state)"),
           ("--resume", f"{TRAIN} --resume damaged.pt",
            f"{TRAIN}: error: --resume: damaged.pt is damaged: its contents do not match the checksum stored"),
           ("--seeds", f"{TRAIN} compare --seeds 0,0",
            f"{TRAIN}: error: --seeds must be distinct (each seed is one paired sample); repeated: 0"),
           ("--seeds", f"{TRAIN} compare --seeds 0,-1",
            f"{TRAIN}: error: --seeds must be integers in [0, 4294967295], got -1"),
           ("--methods", f"{TRAIN} compare --methods random,random,none",
            f"{TRAIN}: error: --methods must be distinct (each method is one row of the table); repeated: random"),
           ("--fractions", f"{TRAIN} compare --fractions 0.1,0.2,0.1",
            f"{TRAIN}: error: --fractions must be distinct (each fraction is one row of the table); repeated: 0.1"),
           ("--out", f"{TRAIN} compare --out oldrun",
            f"{TRAIN}: error: --out oldrun is not empty (summary.json): continue the comparison there with "
            "--resume, replace it with --overwrite, or choose another folder"),
           ("--stop-after", f"{TRAIN} compare --stop-after 3",
            f"{TRAIN}: error: --stop-after applies to one run; compare trains every run to the end"),
           ("--reference", f"{TRAIN} compare --methods coreset --reference random",
            f"{TRAIN}: error: --reference random is not among --methods coreset"),
           ("--methods", f"{TRAIN} compare --methods foo",
            f"{TRAIN}: error: argument --methods: unknown foo (choose from coreset, random, max-loss, none, full)")),
    *_rows(ANALYSIS, EXIT2,
           ("--data", f"{ANALYSIS} --data missing.pt", f"{ANALYSIS}: error: --data missing.pt: no such file"),
           ("--data", f"{ANALYSIS} --data garbage.pt",
            f"{ANALYSIS}: error: --data garbage.pt: not a readable .pt file ("),
           ("--data", f"{ANALYSIS} --data truncated.npz",
            f"{ANALYSIS}: error: --data truncated.npz: not a readable .npz file (File is not a zip file)"),
           ("--data", f"{ANALYSIS} --data no_targets.pt",
            f"{ANALYSIS}: error: --data no_targets.pt: no 'targets' in the file (found ['images'])"),
           ("--data", f"{ANALYSIS} --data float_targets.pt",
            f"{ANALYSIS}: error: --data float_targets.pt: targets must be a 1-D integer array, got torch.float32"),
           ("--data", f"{ANALYSIS} --data short_targets.pt",
            f"{ANALYSIS}: error: --data short_targets.pt: images (3, 1, 8, 8) and targets (2,) must have one row "
            "per example"),
           ("--data", f"{ANALYSIS} --data list.pt",
            f"{ANALYSIS}: error: --data list.pt: expected a dict with 'images' and 'targets' or an (images, targets) "
            "pair, got list"),
           ("--arch", f"{ANALYSIS} --arch foo",
            f"{ANALYSIS}: error: argument --arch: invalid choice: 'foo' (choose from 'mlp', 'cnn')"),
           ("--epochs", f"{ANALYSIS} --epochs -1", f"{ANALYSIS}: error: argument --epochs: expected an integer >= 0"),
           ("--bins", f"{ANALYSIS} --bins 0", f"{ANALYSIS}: error: argument --bins: expected an integer >= 1, got 0"),
           ("--max-examples", f"{ANALYSIS} --max-examples 0",
            f"{ANALYSIS}: error: argument --max-examples: expected an integer >= 1, got 0"),
           ("--chunk-size", f"{ANALYSIS} --chunk-size x",
            f"{ANALYSIS}: error: argument --chunk-size: expected an integer >= 1, got 'x'"),
           ("--hidden", f"{ANALYSIS} --hidden 0", f"{ANALYSIS}: error: argument --hidden: expected an integer >= 1"),
           ("--classes", f"{ANALYSIS} --classes 99", f"{ANALYSIS}: error: classes [99]: no example has target [99]"),
           ("--model", f"{ANALYSIS} --model nocolon",
            f"{ANALYSIS}: error: --model nocolon: expected MODULE:ATTRIBUTE, got 'nocolon'"),
           ("--model", f"{ANALYSIS} --model os:getcwd",
            f"{ANALYSIS}: error: --model os:getcwd: returned a str, not an nn.Module"),
           ("--model", f"{ANALYSIS} --model torch.nn:Linear",
            f"{ANALYSIS}: error: --model torch.nn:Linear: calling it with no arguments failed (TypeError: "),
           ("--weights", f"{ANALYSIS} --weights missing.pt",
            f"{ANALYSIS}: error: --weights needs --model: without it the default model is trained here"),
           ("--weights", f"{ANALYSIS} --model torch.nn:Flatten --weights missing.pt",
            f"{ANALYSIS}: error: --weights missing.pt: no such file"),
           ("--weights", f"{ANALYSIS} --model torch.nn:Flatten --weights garbage.pt",
            f"{ANALYSIS}: error: --weights garbage.pt: not a readable .pt file ("),
           ("--weights", f"{ANALYSIS} --model torch.nn:Flatten --weights list.pt",
            f"{ANALYSIS}: error: --weights list.pt: holds a list, not a state_dict"),
           ("--weights", f"{ANALYSIS} --model torch.nn:Flatten --weights no_targets.pt",
            f"{ANALYSIS}: error: --weights no_targets.pt: does not fit --model torch.nn:Flatten ("),
           ("--augment", f"{ANALYSIS} --augment os:nothere",
            f"{ANALYSIS}: error: --augment os:nothere: module 'os' has no attribute 'nothere'"),
           ("--augment", f"{ANALYSIS} --augment os:getcwd --epochs 0 --max-examples 3 --quiet",
            f"{ANALYSIS}: error: --augment os:getcwd: failed on a batch of shape (3, 1, 8, 8) (TypeError: "),
           ("--out", f"{ANALYSIS} --out /proc/x", f"{ANALYSIS}: error: --out /proc/x: cannot write there"),
           ("--device", f"{ANALYSIS} --device tpu", f"{ANALYSIS}: error: ")),
]


# ------------------------------------------------------------------ running a row

def namespace() -> dict:
    """The small inputs the calls use (fresh for every row: some calls modify them)."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    ns = {name: getattr(coreaug_fast, name) for name in coreaug_fast.__all__}
    ns.update(torch=torch, np=np, jacobian_spectrum=coreaug_fast.analysis.jacobian_spectrum)
    x = torch.randn(6, 3, generator=g)
    ns.update(
        X=x / x.abs().max(),  # (6, 3) float32 in [-1, 1], max |x| = 1 exactly
        Y=torch.tensor([0, 0, 0, 1, 1, 1]),
        LOSS=torch.rand(6, generator=g),
        LOGITS=torch.randn(4, 3, generator=g),
        T=torch.tensor([0, 1, 2, 0]),
        W=torch.ones(4),
        IMG=torch.zeros(2, 3, 8, 8, dtype=torch.uint8),
        IMGF=torch.rand(2, 3, 8, 8, generator=g),
        OPS=torch.zeros(2, 1, dtype=torch.int32),
        MAG=torch.zeros(2, 1),
        OFF=torch.full((2, 2), 4),
        FLIP=torch.zeros(2, dtype=torch.bool),
        L2=torch.tensor([0, 1]),
        DS=[(torch.zeros(3, 10, 12, dtype=torch.uint8), 0), (torch.zeros(3, 9, 8, dtype=torch.uint8), 1)],
        MODEL=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2)),
    )
    return ns


NAMESPACE_DOC = """\
```python
X = torch.randn(6, 3); X = X / X.abs().max()   # embeddings, 2 classes of 3 rows
Y = torch.tensor([0, 0, 0, 1, 1, 1])           # labels
LOSS = torch.rand(6)
LOGITS = torch.randn(4, 3); T = torch.tensor([0, 1, 2, 0]); W = torch.ones(4)
IMG = torch.zeros(2, 3, 8, 8, dtype=torch.uint8); IMGF = torch.rand(2, 3, 8, 8)
OPS = torch.zeros(2, 1, dtype=torch.int32); MAG = torch.zeros(2, 1)
OFF = torch.full((2, 2), 4); FLIP = torch.zeros(2, dtype=torch.bool)
L2 = torch.tensor([0, 1])
DS = [(torch.zeros(3, 10, 12, dtype=torch.uint8), 0), (torch.zeros(3, 9, 8, dtype=torch.uint8), 1)]  # a dataset
MODEL = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 2))
```"""


def _data_files(folder: Path) -> None:
    """The bad files and folders the CLI rows name, in ``folder``."""
    from coreaug_fast.train import checkpoint

    (folder / "garbage.pt").write_bytes(b"not a checkpoint")
    (folder / "truncated.npz").write_bytes(b"PK\x03\x04abc")
    torch.save({"images": torch.zeros(2, 1, 8, 8)}, folder / "no_targets.pt")
    torch.save({"images": torch.zeros(2, 1, 8, 8), "targets": torch.zeros(2)}, folder / "float_targets.pt")
    torch.save({"images": torch.zeros(3, 1, 8, 8), "targets": torch.zeros(2, dtype=torch.long)},
               folder / "short_targets.pt")
    torch.save([1, 2, 3], folder / "list.pt")
    state = {k: None for k in checkpoint.KEYS}
    state.update(config={}, epoch=0, model={}, selection={}, records=[], sha256="0" * 64)
    torch.save(state, folder / "damaged.pt")
    state["policy_state"] = 1
    torch.save(state, folder / "unknown_keys.pt")
    (folder / "oldrun").mkdir()
    (folder / "oldrun" / "summary.json").write_text("{}\n")
    (folder / "mixed").mkdir()
    (folder / "mixed" / "notes.txt").write_text("the user's own\n")


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in folder.rglob("*")}


def _cli_main(program: str):
    if program == TRAIN:
        from coreaug_fast.train.cli import main
        return main
    from coreaug_fast.analysis.cli import main
    return main


def _program_and_argv(call: str):
    for program in (TRAIN, ANALYSIS):
        if call.startswith(program + " "):
            return program, call[len(program) + 1:].split()
    raise AssertionError(f"not a command line: {call}")


def _row_id(row: Row) -> str:
    return f"{row.section}: {row.call}"


@pytest.mark.parametrize("row", ROWS, ids=_row_id)
def test_contract_row(row: Row, tmp_path, monkeypatch, capsys):
    if row.error == EXIT2:
        program, argv = _program_and_argv(row.call)
        monkeypatch.chdir(tmp_path)  # relative file names; nothing written into the tree
        _data_files(tmp_path)
        before = _snapshot(tmp_path)
        with torch.random.fork_rng():  # --resume builds a Trainer, which seeds torch's generator
            code = _cli_main(program)(argv)
        err = capsys.readouterr().err
        assert code == 2, (code, err)
        assert err.endswith("\n") and err.count("\n") == 1, f"not one line on stderr: {err!r}"
        assert err.startswith(row.message), err
        after = _snapshot(tmp_path)
        assert after == before, f"changed {sorted(set(after.items()) ^ set(before.items()))} before refusing"
        return
    if row.argument == NO_EXT:
        monkeypatch.setattr(_ext, "_C", None)
        monkeypatch.setattr(_ext, "_IMPORT_ERROR", ImportError("simulated"))
    if row.error == NONE:
        eval(row.call, namespace())  # noqa: S307 - the calls are this file's own literals
        return
    expected = getattr(coreaug_fast, row.error, None) or getattr(builtins, row.error)
    with pytest.raises(expected) as info:
        eval(row.call, namespace())  # noqa: S307 - the calls are this file's own literals
    assert type(info.value) is expected, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value).startswith(row.message), str(info.value)


@pytest.mark.parametrize("program, argv, message", [
    ("coreaug_fast.train", ["--lr", "nan"], f"{TRAIN}: error: --lr must be finite, got nan"),
    ("coreaug_fast.analysis", ["--data", "missing.pt"], f"{ANALYSIS}: error: --data missing.pt: no such file"),
])
def test_cli_entry_point_exit_status(program, argv, message, tmp_path):
    """The real entry points (not just ``main``): exit status 2 and one line on stderr."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", program, *argv], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []  # refused before writing anything


#: Inputs the checks accept (NumPy scalars wherever a Python number is; documented None).
ACCEPTED = [
    "select_coreset(X, Y, budget=np.int64(2))",
    "select_coreset(X, Y, np.float32(0.5))",
    "select_coreset(X, Y, budget=2**70)",
    "select_coreset(X, Y, budget=[2**70, 1])",
    "weighted_cross_entropy(LOGITS, T, label_smoothing=np.float32(0.1))",
    "crop_flip(IMG, OFF, FLIP, padding=np.int64(4))",
    "apply_augment(IMG, OPS, MAG, fill=None)",
    "Augmenter(num_ops=np.int64(3), copies=np.int32(2), padding=np.int64(2))",
    "Augmenter(mean=torch.tensor([0.5, 0.5, 0.5]), std=np.array([0.2, 0.2, 0.2]))",
    "Augmenter(flip=np.bool_(False), policy='trivialaugment', num_magnitude_bins=np.int64(11))",
    "Augmenter(policy='autoaugment-imagenet', num_ops=None, magnitude=None)",
    "CoresetAugmentation(IMG, L2, mean=np.array([.5, .5, .5]), std=torch.tensor([.2, .2, .2]))",
]


def test_bad_matrix_bytes_variable_warns(monkeypatch):
    """A bad COREAUG_MAX_MATRIX_BYTES cannot break the import: it warns and keeps the default."""
    from coreaug_fast.selection import engine

    monkeypatch.setenv("COREAUG_MAX_MATRIX_BYTES", "abc")
    with pytest.warns(RuntimeWarning, match=r"^COREAUG_MAX_MATRIX_BYTES=.abc. is not an integer >= 0; using the"):
        assert engine._matrix_bytes_from_env() == engine._DEFAULT_MATRIX_BYTES


@pytest.mark.parametrize("call", ACCEPTED)
def test_accepted(call):
    eval(call, namespace())  # noqa: S307


# ------------------------------------------------------------------ the doc

def _cell(text: str) -> str:
    return f"`{text}`"


def render_tables() -> str:
    """The doc's tables, one per section, in :data:`ROWS` order."""
    out = []
    sections = list(dict.fromkeys(r.section for r in ROWS))
    for section in sections:
        cli = section in (TRAIN, ANALYSIS)
        out.append(f"### `{section}`\n")
        out.append(f"| argument | {'command line' if cli else 'call'} | error | message starts with |")
        out.append("|---|---|---|---|")
        for r in ROWS:
            if r.section == section:
                out.append(f"| {_cell(r.argument) if r.argument != NO_EXT else r.argument} | {_cell(r.call)} "
                           f"| {r.error} | {_cell(r.message)} |")
        out.append("")
    return "\n".join(out)


_ROW_RE = re.compile(r"^\| (.+?) \| `(.+?)` \| (.+?) \| `(.+)` \|$")


def parse_doc(text: str) -> list:
    """The rows of the doc's tables, as :class:`Row` s."""
    body = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows, section = [], None
    for line in body.splitlines():
        if line.startswith("### "):
            section = line[4:].strip().strip("`")
        m = _ROW_RE.match(line)
        if m:
            arg, call, error, message = m.groups()
            rows.append(Row(section, arg.strip("`"), call, error, message))
    return rows


def test_doc_matches_rows():
    doc = parse_doc(DOC.read_text())
    missing = [r for r in ROWS if r not in doc]
    extra = [r for r in doc if r not in ROWS]
    assert not missing and not extra, (
        f"docs/errors.md differs from ROWS (run python tests/test_error_contract.py): "
        f"not in the doc: {missing}; only in the doc: {extra}")
    assert len(doc) == len(ROWS)


def test_doc_shows_the_inputs_the_rows_use():
    assert NAMESPACE_DOC in DOC.read_text()


def test_rows_are_distinct():
    calls = [r.call for r in ROWS]
    assert len(set(calls)) == len(calls), [c for c in calls if calls.count(c) > 1]


def test_every_public_function_has_a_table():
    sections = {r.section for r in ROWS}
    for name in ("select_coreset", "select_random", "select_max_loss", "gradient_embeddings",
                 "weighted_cross_entropy", "apply_augment", "crop_flip", "Augmenter", "CoresetAugmentation",
                 "analysis.jacobian_spectrum", TRAIN, ANALYSIS):
        assert name in sections, name


def _write_doc() -> None:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n\n{render_tables()}\n{END}{tail}")


if __name__ == "__main__":
    _write_doc()
    print(f"rewrote the tables of {DOC}")
