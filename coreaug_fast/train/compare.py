"""Several methods x seeds on one configuration, summarised in one table and one plot."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

from tqdm.auto import tqdm

from . import files
from .config import MAX_SEED, SUBSET_METHODS, TrainConfig, UsageError, run_name
from .loop import train
from .report import comparison_rows, write_comparison


def _distinct(flag: str, values: list, why: str) -> None:
    repeated = sorted({v for v in values if values.count(v) > 1}, key=values.index)
    if repeated:
        shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in repeated)
        raise UsageError(f"{flag} must be distinct ({why}); repeated: {shown}")


def plan(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int], fractions: Sequence[float],
         torchvision_baseline: bool = False) -> list:
    """The configurations a comparison trains, in order: every method (subset methods at every
    fraction) under every seed, then ``full`` with the torchvision pipeline when asked; each
    with ``out`` None (set per run)."""
    impl = base.augment_impl
    runs = [(m, f, s, impl) for m in methods for f in (fractions if m in SUBSET_METHODS else [None]) for s in seeds]
    if torchvision_baseline and impl != "torchvision":
        runs += [("full", None, s, "torchvision") for s in seeds]
    return [dataclasses.replace(base, method=m, seed=s, resume=None, stop_after=None, overwrite=False,
                                fraction=base.fraction if f is None else f, augment_impl=i)
            for m, f, s, i in runs]


def check_plan(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int], reference: str,
               fractions: Optional[Sequence[float]] = None, torchvision_baseline: bool = False) -> None:
    """Refuse, before the first run, a comparison that would fail midway or whose table would
    mislead: a repeated method, fraction or seed (one run trained twice into one folder and
    counted twice), a seed outside [0, 2**32 - 1], a reference that is not run,
    ``stop_after`` (every run goes to the end), or any run's settings that do not check."""
    methods, seeds = list(methods), list(seeds)
    fractions = [base.fraction] if fractions is None else list(fractions)
    if not seeds:
        raise UsageError("--seeds: give at least one seed")
    _distinct("--methods", methods, "each method is one row of the table")
    _distinct("--fractions", fractions, "each fraction is one row of the table")
    _distinct("--seeds", seeds, "each seed is one paired sample")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s <= MAX_SEED]
    if bad:
        raise UsageError(f"--seeds must be integers in [0, {MAX_SEED}], got {bad[0]!r}")
    if reference not in methods:
        raise UsageError(f"--reference {reference} is not among --methods {','.join(methods)}")
    if base.stop_after is not None:
        raise UsageError("--stop-after applies to one run; compare trains every run to the end "
                         "(use --epochs for shorter runs; an interrupted compare continues with --resume)")
    for cfg in plan(base, methods, seeds, fractions, torchvision_baseline):
        cfg.resolved()


def run_comparison(base: TrainConfig, methods: Sequence[str], seeds: Sequence[int],
                   fractions: Sequence[float], out: Path, progress: bool = True, resume: bool = False,
                   reference: str = "random", torchvision_baseline: bool = False, overwrite: bool = False):
    """Train every method (subset methods at every fraction) under every seed, each run in
    ``out/<run_name>/``; with ``torchvision_baseline``, also ``full`` with the torchvision
    pipeline (``augment_impl="torchvision"``), the speedup a user switching to this library
    sees. With ``resume``, a finished run with the same settings is reused and an unfinished
    one continues from its checkpoint, so an interrupted comparison picks up where it
    stopped; with ``overwrite`` the old comparison's files are deleted first; with neither,
    ``out`` must be empty (see :mod:`.files`). Accuracies are paired by seed against
    ``reference``. Returns (table rows, file paths)."""
    check_plan(base, methods, seeds, reference, fractions, torchvision_baseline)
    out = Path(out)
    files.check_folder(out, resume=resume, overwrite=overwrite, compare=True)
    if overwrite:
        files.clear_folder(out, compare=True)
    summaries = []
    for cfg in tqdm(plan(base, methods, seeds, fractions, torchvision_baseline), desc="compare", unit="run",
                    disable=not progress):
        cfg = dataclasses.replace(cfg, quiet=not progress)
        cfg = dataclasses.replace(cfg, out=str(out / run_name(cfg)))
        summary = _reusable(cfg) if resume else None
        if summary is None:
            partial = resume and (Path(cfg.out) / "checkpoint.pt").is_file()
            # resuming a comparison, a run with no checkpoint holds at most a torn log: start it afresh
            summary = train(dataclasses.replace(cfg, resume="auto" if partial else None,
                                                overwrite=resume and not partial), epoch_lines=False)
        summaries.append(summary)
        if progress:
            tqdm.write(f"{run_name(cfg)}: test acc {summary['test_acc']:.2f}%  "
                       f"time {summary['time_s']:.1f}s (sel {summary['selection_s']:.1f}, "
                       f"aug {summary['augment_s']:.1f}, train {summary['train_s']:.1f})  "
                       f"wall {summary['total_s']:.1f}s")
    title = comparison_title(summaries, seeds)
    rows = comparison_rows(summaries, reference)
    return rows, write_comparison(rows, out, title, reference)


def comparison_title(summaries: list, seeds: Sequence[int]) -> str:
    """What the runs share: data, model, schedule, augmentation, seeds, and the machine (CPU
    model, vector ISA and threads, or GPU: the numbers move with them). The subset weights
    only when a coreset run is in the table (random and max-loss picks weigh 1 whatever
    ``--subset-weights`` says); "subset only" when the runs train on the subset alone."""
    r = summaries[0]["config"]
    env = summaries[0]["environment"]
    coreset = [s["config"] for s in summaries if s["method"] == "coreset"]
    parts = [f"{r['dataset']} / {r['model']}", f"{r['epochs']} epochs", f"R={r['select_every']}",
             f"r={r['copies']} copies", _policy(r), r["aug_mode"]]
    if any(s["config"].get("subset_only") for s in summaries):
        parts.append("subset only")
    if coreset:
        parts.append(f"coreset weights {coreset[0]['subset_weights']}")
    parts += [f"seeds {','.join(map(str, seeds))}", machine(env)]
    return ", ".join(parts)


def _policy(cfg: dict) -> str:
    policy = cfg.get("policy", "randaugment")
    return f"N={cfg['num_ops']} ops" if policy == "randaugment" else policy


def machine(env: dict) -> str:
    """``device (ISA, N threads)`` from a summary's ``environment``."""
    extra = [env["isa"]] if env.get("isa") else []
    extra += [f"{env['threads']} threads"] if env.get("threads") else []
    return env.get("device", "?") + (f" ({', '.join(extra)})" if extra else "")


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
