"""The ``"train"`` selection pass: the selection's logits (and penultimate features) taken from
the forward passes the training loop already makes, instead of one more pass over the data.

During the epoch before a selection, a forward hook on the model records, for each batch it
sees, its output on the batch's weakly augmented originals (the first ``n_weak`` rows: an
epoch's weak rows are always originals), into an (N, classes) buffer at their dataset rows;
a hook on ``features`` records that module's input likewise. A batch is recognised by its
tensor: only a forward call on exactly the ``x`` the epoch yielded is recorded (a loop that
splits a batch, or evaluates in between, records nothing for it). A row recorded twice (a
data-parallel epoch's padding repeats a few rows) keeps its last record.

What differs from the clean pass (README, "Selection from the training pass"): the model is
in train mode (BatchNorm normalises with the batch's statistics, dropout is on), its weights
change over the epoch (up to one epoch old at the selection), and the inputs are the weakly
augmented originals (cropped and flipped), not the centre views. Rows the epoch did not show
in weak form (``subset_only``, ``aug_mode="inplace"``, an epoch left unfinished) get a clean
pass of their own at the selection.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn


class Recording:
    """Buffers of one recording epoch, on the model's device.

    Attributes:
        logits: float32 (N, classes), or None before the first recorded batch.
        features: float32 (N, d) with ``features=``, else None.
        seen: bool (N,): rows recorded.
    """

    def __init__(self, n: int, device: torch.device, with_features: bool):
        self.n, self.device, self.with_features = n, device, with_features
        self.logits: Optional[torch.Tensor] = None
        self.features: Optional[torch.Tensor] = None
        self.seen = torch.zeros(n, dtype=torch.bool, device=device)

    def put(self, rows: torch.Tensor, logits: torch.Tensor, features: Optional[torch.Tensor]) -> None:
        """Record ``logits`` (m, C) (and ``features`` (m, d)) of dataset ``rows`` (m,) int64
        (device ops only: no host synchronisation)."""
        if self.logits is None:
            self.logits = torch.zeros((self.n, logits.shape[1]), dtype=torch.float32, device=self.device)
        self.logits.index_copy_(0, rows, logits.detach().float())
        if features is not None:
            if self.features is None:
                self.features = torch.zeros((self.n, features.shape[1]), dtype=torch.float32, device=self.device)
            self.features.index_copy_(0, rows, features.detach().float())
        self.seen.index_fill_(0, rows, True)

    def state_dict(self) -> dict:
        cpu = lambda t: None if t is None else t.cpu().clone()  # noqa: E731
        return {"logits": cpu(self.logits), "features": cpu(self.features), "seen": cpu(self.seen)}

    @classmethod
    def from_state(cls, state: dict, device: torch.device) -> "Recording":
        rec = cls(state["seen"].numel(), device, state["features"] is not None)
        for name in ("logits", "features", "seen"):
            value = state[name]
            setattr(rec, name, None if value is None else value.to(device))
        return rec


class Recorder:
    """Hooks that fill a :class:`Recording` from the training loop's forward passes. Call
    :meth:`expect` before yielding each batch; :meth:`close` removes the hooks."""

    def __init__(self, recording: Recording, model: nn.Module, features: Optional[nn.Module]):
        self.recording = recording
        self._batch = None  # (x, rows of its weak part on the device, n_weak)
        self._feature = None
        self._hooks = [model.register_forward_hook(self._on_model)]
        if features is not None:
            self._hooks.append(features.register_forward_hook(self._on_features))

    def expect(self, x: torch.Tensor, rows: torch.Tensor, n_weak: int) -> None:
        """The next forward pass on exactly ``x`` is the training step of this batch: its
        first ``n_weak`` output rows are the originals ``rows`` (int64 (n_weak,), device)."""
        self._batch = (x, rows, n_weak)
        self._feature = None

    def _on_features(self, module, inputs, output) -> None:
        if self._batch is not None and inputs and isinstance(inputs[0], torch.Tensor):
            self._feature = inputs[0]

    def _on_model(self, module, inputs, output) -> None:
        if self._batch is None or not inputs or inputs[0] is not self._batch[0]:
            return  # another call (an evaluation, a part of the batch): not this batch's step
        _, rows, n_weak = self._batch
        self._batch = None
        if n_weak == 0 or not isinstance(output, torch.Tensor) or output.dim() != 2:
            return
        feature = None
        if self.recording.with_features:
            if self._feature is None or self._feature.shape[0] != output.shape[0]:
                return  # the features hook did not see this batch: leave its rows to the clean pass
            feature = self._feature[:n_weak].reshape(n_weak, -1)
        self.recording.put(rows, output[:n_weak], feature)

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        self._batch = self._feature = None
