"""Wall-clock accounting that stays honest on a GPU without stalling it.

``Clock`` waits for queued GPU work at each lap (used around a selection, once per epoch).
``PhaseTimer`` splits the per-batch loop into phases with CUDA events, so the GPU queue is
never drained inside the loop; the totals are read once, at the end of the epoch.
"""
from __future__ import annotations

import time
from collections import defaultdict

import torch


class Clock:
    """Seconds between laps, waiting for queued GPU work at each lap."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._sync()
        self.t = time.perf_counter()

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def lap(self) -> float:
        self._sync()
        now = time.perf_counter()
        dt, self.t = now - self.t, now
        return dt


class PhaseTimer:
    """Accumulates the time of named phases: ``t = timer.start(); ...; timer.stop(name, t)``."""

    def __init__(self, device: torch.device):
        self.cuda = torch.device(device).type == "cuda"
        self._totals = defaultdict(float)
        self._events = []

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return time.perf_counter()

    def stop(self, name: str, started) -> None:
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self._events.append((name, started, ev))
        else:
            self._totals[name] += time.perf_counter() - started

    def totals(self) -> dict:
        """Seconds per phase (synchronises the GPU once)."""
        if self._events:
            torch.cuda.synchronize()
            for name, a, b in self._events:
                self._totals[name] += a.elapsed_time(b) / 1000.0
            self._events.clear()
        return dict(self._totals)
