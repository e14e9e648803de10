"""Several methods x seeds on one configuration, summarised in one table and one plot."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from .config import SUBSET_METHODS, TrainConfig, UsageError, run_name
from .loop import train
from .report import comparison_rows, write_comparison


def check_plan(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int], reference: str) -> None:
    """Refuse a comparison whose table would mislead: repeated seeds (a run counted twice,
    a spread of 0), a reference that is not run, or ``stop_after`` (every run goes to the end)."""
    seeds = list(seeds)
    if not seeds:
        raise UsageError("--seeds: give at least one seed")
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UsageError(f"--seeds must be distinct (each seed is one paired sample); repeated: "
                         f"{', '.join(map(str, repeated))}")
    if reference not in methods:
        raise UsageError(f"--reference {reference} is not among --methods {','.join(methods)}")
    if base.stop_after is not None:
        raise UsageError("--stop-after applies to one run; compare trains every run to the end "
                         "(use --epochs for shorter runs; an interrupted compare continues with --resume)")


def run_comparison(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int],
                   fractions: Sequence[float], out: Path, progress: bool = True, resume: bool = False,
                   reference: str = "random", torchvision_baseline: bool = False):
    """Train every method (subset methods at every fraction) under every seed, each run in
    ``out/<run_name>/``; with ``torchvision_baseline``, also ``full`` with the torchvision
    pipeline (``augment_impl="torchvision"``), the speedup a user switching to this library
    sees. With ``resume``, a finished run with the same settings is reused and an unfinished
    one continues from its checkpoint, so an interrupted comparison picks up where it
    stopped. Accuracies are paired by seed against ``reference``. Returns (table rows, file
    paths)."""
    check_plan(base, methods, seeds, reference)
    out = Path(out)
    impl = base.augment_impl
    plan = [(m, f, s, impl) for m in methods for f in (fractions if m in SUBSET_METHODS else [None]) for s in seeds]
    if torchvision_baseline and impl != "torchvision":
        plan += [("full", None, s, "torchvision") for s in seeds]
    summaries = []
    for method, fraction, seed, augment_impl in tqdm(plan, desc="compare", unit="run", disable=not progress):
        cfg = dataclasses.replace(base, method=method, seed=seed, resume=None, stop_after=None,
                                  fraction=base.fraction if fraction is None else fraction,
                                  augment_impl=augment_impl, quiet=not progress)
        cfg = dataclasses.replace(cfg, out=str(out / run_name(cfg)))
        summary = _reusable(cfg) if resume else None
        if summary is None:
            partial = resume and (Path(cfg.out) / "checkpoint.pt").is_file()
            summary = train(dataclasses.replace(cfg, resume="auto" if partial else None), epoch_lines=False)
        summaries.append(summary)
        if progress:
            tqdm.write(f"{run_name(cfg)}: test acc {summary['test_acc']:.2f}%  "
                       f"time {summary['time_s']:.1f}s (sel {summary['selection_s']:.1f}, "
                       f"aug {summary['augment_s']:.1f}, train {summary['train_s']:.1f})  "
                       f"wall {summary['total_s']:.1f}s")
    r = summaries[0]["config"]
    title = (f"{r['dataset']} / {r['model']}, {r['epochs']} epochs, R={r['select_every']}, r={r['copies']} copies, "
             f"{_policy(r)}, {r['aug_mode']}, weights {r['subset_weights']}, "
             f"seeds {','.join(map(str, seeds))}, {summaries[0]['environment']['device']}")
    rows = comparison_rows(summaries, reference)
    return rows, write_comparison(rows, out, title, reference)


def _policy(cfg: dict) -> str:
    policy = cfg.get("policy", "randaugment")
    return f"N={cfg['num_ops']} ops" if policy == "randaugment" else policy


def _reusable(cfg: TrainConfig) -> Optional[dict]:
    path = Path(cfg.out) / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        same = TrainConfig(**summary["config"]).training_keys() == cfg.resolved().training_keys()
    except (ValueError, KeyError, TypeError):
        return None
    return summary if same and summary.get("complete") else None
