"""Several methods x seeds on one configuration, summarised in one table and one plot."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from .config import SUBSET_METHODS, TrainConfig, run_name
from .loop import train
from .report import comparison_rows, write_comparison


def run_comparison(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int],
                   fractions: Sequence[float], out: Path, progress: bool = True, resume: bool = False):
    """Train every method (subset methods at every fraction) under every seed, each run in
    ``out/<method>-<fraction>-s<seed>/``. With ``resume``, a finished run with the same
    settings is reused and an unfinished one continues from its checkpoint, so an
    interrupted comparison picks up where it stopped. Returns (table rows, file paths)."""
    out = Path(out)
    plan = [(m, f, s) for m in methods for f in (fractions if m in SUBSET_METHODS else [None]) for s in seeds]
    summaries = []
    for method, fraction, seed in tqdm(plan, desc="compare", unit="run", disable=not progress):
        cfg = dataclasses.replace(base, method=method, seed=seed, resume=None, stop_after=None,
                                  fraction=base.fraction if fraction is None else fraction,
                                  quiet=not progress)
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
             f"N={r['num_ops']} ops, {r['aug_mode']}, seeds {','.join(map(str, seeds))}, "
             f"{summaries[0]['environment']['device']}")
    rows = comparison_rows(summaries)
    return rows, write_comparison(rows, out, title)


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
