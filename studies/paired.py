"""Paired comparisons of one setting of ``coreaug-train``: the same runs (method, seed) under
each variant of the setting, differences against the first variant seed by seed, with 95%
t-intervals (``coreaug_fast.train.report.paired_stats``). Shared by the studies beside it."""
from __future__ import annotations

import json
import statistics
import tempfile
from typing import Dict, Sequence

from coreaug_fast.train import TrainConfig, train
from coreaug_fast.train.report import paired_stats


def run_paired(base: dict, variants: Dict[str, dict], methods: Sequence[str], seeds: Sequence[int]) -> dict:
    """Train ``base`` (TrainConfig fields) for every method x seed x variant (its overrides)
    and print, per method, each variant's accuracy and time per epoch, and its paired
    difference to the first variant. Returns {method: {variant: [summary per seed]}}."""
    names = list(variants)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            runs = {v: [] for v in names}
            for seed in seeds:
                for v in names:
                    cfg = TrainConfig(**{**base, **variants[v], "method": method, "seed": seed, "quiet": True,
                                         "out": f"{tmp}/{method}-{seed}-{v}"})
                    runs[v].append(train(cfg))
                print(json.dumps({"method": method, "seed": seed, **{v: runs[v][-1]["test_acc"] for v in names}}),
                      flush=True)
            results[method] = runs
            print(summary_line(method, runs, names[0], len(seeds)), flush=True)
    return results


def summary_line(method: str, runs: dict, reference: str, seeds: int) -> str:
    def acc(v):
        return [s["test_acc"] for s in runs[v]]

    def per_epoch(v):  # the paper's time measure (selection + augmentation + training), per epoch
        return statistics.mean(s["time_s"] / len(s["epochs"]) for s in runs[v])

    parts = []
    for v in runs:
        a = acc(v)
        text = f"{v} {statistics.mean(a):.2f} ± {statistics.stdev(a):.2f} ({per_epoch(v):.2f} s/epoch)"
        if v != reference:
            st = paired_stats([x - y for x, y in zip(a, acc(reference))])
            text += (f", {st['mean']:+.2f} [{st['ci_low']:+.2f}, {st['ci_high']:+.2f}] "
                     f"{st['wins']}/{st['ties']}/{st['losses']} {st['verdict']}")
        parts.append(text)
    return f"{method}: " + "; ".join(parts) + f" ({seeds} paired seeds, 95% t-intervals, W/T/L vs {reference})"
