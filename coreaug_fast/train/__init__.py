"""Reference training loop and the ``coreaug-train`` command: the paper's experiments
(none / full / random / max-loss / coreset augmentation), with the time split, per-epoch
logs, summaries, comparisons and plots.

Importable pieces: :class:`Trainer` (one epoch at a time on
:class:`~coreaug_fast.CoresetAugmentation`; accepts your own model), :func:`train` (a whole
run with checkpoints and logs), :class:`TrainConfig`, :func:`main`, and, from
:mod:`coreaug_fast.rows` where they live, :func:`epoch_rows` (which rows an epoch trains on,
with what weight) and :class:`EpochRows`.
"""
from ..rows import EpochRows, epoch_rows
from .cli import main
from .config import TrainConfig, UsageError
from .loop import Trainer, train

__all__ = ["EpochRows", "TrainConfig", "Trainer", "UsageError", "epoch_rows", "main", "train"]
