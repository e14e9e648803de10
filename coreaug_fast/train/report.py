"""What a run and a comparison write: per-epoch JSON lines, the run summary, and the
comparison table (Markdown + JSON) and plot (PNG)."""
from __future__ import annotations

import json
import math
import os
import platform
import textwrap
from pathlib import Path
from typing import Optional

import torch

from ..vocabulary import SUBSET_METHODS
from . import files
from .config import TrainConfig

PHASES = ("selection_s", "augment_s", "train_s")


class RunLog:
    """``epochs.jsonl`` and ``summary.json`` in the run's folder.

    ``epochs.jsonl`` is append-only while a run trains (one JSON record per line, appended
    after the epoch's checkpoint is saved), so a kill can leave a torn last line. It is
    rewritten, atomically, from the checkpoint's records whenever a run starts or resumes: a
    torn line (and a record the checkpoint does not have) is dropped then, and the log always
    agrees with the checkpoint it continues. ``summary.json`` is written atomically."""

    def __init__(self, out: Path, records: list):
        self.out = Path(out)
        self.path = self.out / "epochs.jsonl"
        files.write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        files.write_json(self.out / "summary.json", summary)


def summarize(cfg: TrainConfig, records: list, total_s: float, *, complete: bool,
              implementation: dict, device: torch.device) -> dict:
    """The run summary: final accuracy, per-epoch records, time split and configuration.

    ``time_s`` is the paper's training-time measure, the sum of selection, augmentation
    and forward/backward/step time; ``total_s`` is the wall time of the whole run
    (evaluation, checkpoints and logging included).
    """
    totals = {p: sum(r[p] for r in records) for p in PHASES}
    return {
        "method": cfg.method,
        "fraction": cfg.fraction,
        "test_acc": records[-1]["test_acc"] if records else None,
        "best_test_acc": max((r["test_acc"] for r in records), default=None),
        "epochs": records,
        "total_s": total_s,
        "time_s": sum(totals.values()),
        **totals,
        "fraction_never_selected": records[-1]["fraction_never_selected"] if records else None,
        "complete": complete,
        "config": cfg.to_dict(),
        "implementation": implementation,
        "environment": environment(device),
    }


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 7B13", "Intel(R) Xeon(R) Platinum 8481C"), or the
    architecture where the system does not say."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def environment(device: torch.device) -> dict:
    """Where a run's figures come from: the device (GPU name, or CPU model), the vector ISA
    torch's CPU kernels use (with ``COREAUG_CPU_ISA`` when it narrows this package's), the
    thread count, torch and Python. Results move with each of these."""
    isa = None
    if device.type != "cuda":
        isa = torch.backends.cpu.get_cpu_capability()
        if os.environ.get("COREAUG_CPU_ISA"):
            isa += f", COREAUG_CPU_ISA={os.environ['COREAUG_CPU_ISA']}"
    return {"torch": torch.__version__, "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "isa": isa, "threads": torch.get_num_threads()}


# -- comparison ------------------------------------------------------------------------
def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


# Student t quantiles t_{0.975, df} for df = 1..30; beyond, the Cornish-Fisher expansion
# around the normal quantile (error < 1e-5 from df 30 on).
_T975 = (12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041,
         2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053,
         2.1098155, 2.1009220, 2.0930241, 2.0859634, 2.0796138, 2.0738731, 2.0686576, 2.0638986,
         2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725)


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` >= 1 degrees of freedom (two-sided 95%)."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959963984540054
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def paired_stats(diffs) -> dict:
    """Mean, standard error and 95% t interval of per-seed differences, wins/ties/losses
    (a tie is an exact equality) and a verdict: "better" or "worse" when the interval
    excludes 0, "within noise" when it contains it; with one pair there is no interval and
    the verdict says so."""
    d = [float(v) for v in diffs]
    n = len(d)
    out = {"n": n, "mean": None, "se": None, "ci_low": None, "ci_high": None,
           "wins": sum(v > 0 for v in d), "ties": sum(v == 0 for v in d), "losses": sum(v < 0 for v in d),
           "verdict": "no pairs" if n == 0 else "one seed: no interval"}
    if n == 0:
        return out
    mean, sd = _mean_std(d)
    out["mean"] = mean
    if n > 1:
        se = sd / math.sqrt(n)
        half = t_quantile_975(n - 1) * se
        out.update(se=se, ci_low=mean - half, ci_high=mean + half,
                   verdict="better" if mean - half > 0 else "worse" if mean + half < 0 else "within noise")
    return out


def ratio_stats(numerators: dict, denominators: dict) -> Optional[dict]:
    """Per-seed ratios numerator[s] / denominator[s] over the seeds both have: geometric mean
    and 95% t interval (on the log scale), and whether the interval contains 1 (``noise``)."""
    seeds = sorted(set(numerators) & set(denominators))
    logs = [math.log(numerators[s] / denominators[s]) for s in seeds
            if numerators[s] and denominators[s] and numerators[s] > 0 and denominators[s] > 0]
    if not logs:
        return None
    st = paired_stats(logs)
    ex = (lambda v: None if v is None else math.exp(v))
    return {"n": st["n"], "ratio": ex(st["mean"]), "ci_low": ex(st["ci_low"]), "ci_high": ex(st["ci_high"]),
            "noise": st["ci_low"] is not None and st["ci_low"] <= 0 <= st["ci_high"]}


def _label(method: str, subset_only: bool, impl: str) -> str:
    return method + (" (subset only)" if subset_only else "") + (" (torchvision)" if impl == "torchvision" else "")


def comparison_rows(summaries: list, reference: str = "random") -> list:
    """Aggregate run summaries over seeds, one row per (method, fraction, subset-only,
    augmentation implementation).

    Each row: method (label), base method, fraction, augment_impl, seeds, acc (per seed,
    aligned with seeds), acc_mean/acc_std (%), time_s (selection + augmentation + training,
    mean over seeds) and its phases, wall_s, never_selected (%), and, paired by seed:
    ``speedup`` / ``speedup_torchvision`` (:func:`ratio_stats` of ``full``'s time (fused /
    torchvision pipeline) over this row's; None without that row) and ``paired`` (
    :func:`paired_stats` of this row's accuracy minus the ``reference`` row's; None for the
    reference itself or when there is none).
    """
    rows = [_row(key, runs) for key, runs in _by_setting(summaries).items()]
    full, full_tv = _find(rows, "full", "fused"), _find(rows, "full", "torchvision")
    for r in rows:
        r["speedup"] = _speedup(full, r)
        r["speedup_torchvision"] = _speedup(full_tv, r)
        _pair_with_reference(r, rows, reference)
    order = {"none": 0, "random": 1, "max-loss": 2, "coreset": 3, "full": 4}
    rows.sort(key=lambda r: (order.get(r["base"], 9), r["augment_impl"] != "fused", r["fraction"], r["subset_only"]))
    return rows


def _by_setting(summaries: list) -> dict:
    """Summaries grouped by (method, fraction, subset-only, augmentation implementation)."""
    groups = {}
    for s in summaries:
        c = s["config"]
        key = (s["method"], s["fraction"], c.get("subset_only", False), c.get("augment_impl", "fused"))
        groups.setdefault(key, []).append(s)
    return groups


def _row(key: tuple, runs: list) -> dict:
    """One row of :func:`comparison_rows` from the runs of one setting, seed by seed."""
    method, fraction, subset_only, impl = key
    runs = sorted(runs, key=lambda r: r["config"]["seed"])
    acc_m, acc_s = _mean_std([r["test_acc"] for r in runs])
    ns = _mean_std([r["fraction_never_selected"] for r in runs])[0]
    return {
        "method": _label(method, subset_only, impl), "base": method, "subset_only": subset_only,
        "augment_impl": impl, "fraction": fraction,
        "seeds": [r["config"]["seed"] for r in runs],
        "acc": [r["test_acc"] for r in runs],
        "acc_mean": acc_m, "acc_std": acc_s,
        "time": [r["time_s"] for r in runs],
        "time_s": _mean_std([r["time_s"] for r in runs])[0],
        **{p: _mean_std([r[p] for r in runs])[0] for p in PHASES},
        "wall_s": _mean_std([r["total_s"] for r in runs])[0],
        "never_selected": None if ns is None else 100.0 * ns,
    }


def _find(rows: list, base: str, impl: str, fraction=None, subset_only: bool = False) -> Optional[dict]:
    """The row of ``base`` run with ``impl`` (and ``subset_only``), at ``fraction`` if there
    is one, else at any fraction; None without one."""
    cands = [r for r in rows if r["base"] == base and r["augment_impl"] == impl and r["subset_only"] == subset_only]
    same = [r for r in cands if r["fraction"] == fraction]
    return (same or cands or [None])[0]


def _speedup(base: Optional[dict], r: dict) -> Optional[dict]:
    """:func:`ratio_stats` of ``base``'s time over ``r``'s, seed by seed."""
    if base is None:
        return None
    if base is r:  # the baseline itself: 1 by definition, not a measurement with an interval
        return {"n": len(r["seeds"]), "ratio": 1.0, "ci_low": None, "ci_high": None, "noise": False,
                "reference": True}
    return ratio_stats(dict(zip(base["seeds"], base["time"])), dict(zip(r["seeds"], r["time"])))


def _pair_with_reference(r: dict, rows: list, reference: str) -> None:
    """Set ``r``'s ``reference`` (its label) and ``paired`` (:func:`paired_stats` of the
    accuracy differences, seed by seed): the reference trained as ``r`` was (on the subset
    alone, or not; with ``r``'s pipeline), else the other kind."""
    ref = None
    for subset_only in (r["subset_only"], not r["subset_only"]):
        for impl in (r["augment_impl"], "fused"):
            ref = ref if ref is not None else _find(rows, reference, impl, r["fraction"], subset_only)
    r["reference"] = None if ref is None or ref is r else ref["method"] + (
        f" {ref['fraction']:g}" if ref["base"] in SUBSET_METHODS else "")
    r["paired"] = None
    if r["reference"] is not None:
        accs = dict(zip(ref["seeds"], ref["acc"]))
        r["paired"] = paired_stats([a - accs[s] for s, a in zip(r["seeds"], r["acc"])
                                    if s in accs and a is not None and accs[s] is not None])


def _speedup_cell(st: Optional[dict]) -> str:
    if st is None:
        return "—"
    if st.get("reference"):
        return "reference"
    if st["ci_low"] is None:
        return f"{st['ratio']:.2f}×"
    noise = ", noise" if st["noise"] else ""
    return f"{st['ratio']:.2f}× ({st['ci_low']:.2f}–{st['ci_high']:.2f}{noise})"


def markdown_table(rows: list, title: Optional[str] = None, reference: str = "random") -> str:
    """Three tables: per method (accuracy, time, speedups), paired differences to the
    reference, and accuracy per seed."""
    def f(v, fmt, unit=""):
        return "—" if v is None else format(v, fmt) + unit
    lines = [f"**{title}**", ""] if title else []
    has_tv = any(r["speedup_torchvision"] is not None for r in rows)
    lines += ["| method | fraction | test acc (%) | time (s) | speedup vs full"
              + (" | speedup vs full (torchvision)" if has_tv else "") + " | wall (s) | NS (%) |",
              "| --- | ---: | ---: | ---: | ---:" + (" | ---:" if has_tv else "") + " | ---: | ---: |"]
    for r in rows:
        acc = "—" if r["acc_mean"] is None else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"
        lines.append(f"| {r['method']} | {r['fraction']:g} | {acc} | {f(r['time_s'], '.1f')} | "
                     f"{_speedup_cell(r['speedup'])}" + (f" | {_speedup_cell(r['speedup_torchvision'])}" if has_tv else "")
                     + f" | {f(r['wall_s'], '.1f')} | {f(r['never_selected'], '.1f')} |")
    lines += ["", "test acc: mean ± std over seeds. Speedup: per-seed ratio of full's time (selection + "
              "augmentation + training) to this row's, geometric mean (95% t interval); \"noise\": the "
              "interval contains 1."]
    paired = [r for r in rows if r["paired"] is not None]
    if paired:
        lines += ["", f"**Paired by seed, against {reference}** (same seed: same initialisation and data order)", "",
                  "| method | fraction | vs | n | mean diff (pp) | SE | 95% interval | wins/ties/losses | verdict |",
                  "| --- | ---: | --- | ---: | ---: | ---: | ---: | :---: | --- |"]
        for r in paired:
            p = r["paired"]
            ci = "—" if p["ci_low"] is None else f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]"
            lines.append(f"| {r['method']} | {r['fraction']:g} | {r['reference']} | {p['n']} | {f(p['mean'], '+.2f')} | "
                         f"{f(p['se'], '.2f')} | {ci} | {p['wins']}/{p['ties']}/{p['losses']} | {p['verdict']} |")
        lines += ["", "95% interval: mean ± t(0.975, n−1)·SE; a difference whose interval contains 0 is "
                  "within seed-to-seed noise."]
    seeds = sorted({s for r in rows for s in r["seeds"]})
    lines += ["", "**Test accuracy (%) per seed**", "",
              "| method | fraction | " + " | ".join(f"s{s}" for s in seeds) + " |",
              "| --- | ---: | " + " | ".join("---:" for _ in seeds) + " |"]
    for r in rows:
        by = dict(zip(r["seeds"], r["acc"]))
        lines.append(f"| {r['method']} | {r['fraction']:g} | " + " | ".join(f(by.get(s), ".2f") for s in seeds) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list, path: Path, title: str = "") -> Optional[Path]:
    """Accuracy against speedup over ``full`` (the paper's Fig. 1), one point per row with
    the std over seeds as error bars; without a ``full`` row, accuracy against time (there is
    no speedup to show). The title is wrapped to the figure's width. Written atomically.
    Returns None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by_speedup = any(r["speedup"] is not None for r in rows)
    points = [(r["speedup"]["ratio"] if by_speedup else r["time_s"], r) for r in rows
              if r["acc_mean"] is not None and (r["speedup"] is not None if by_speedup else r["time_s"] is not None)]
    fig, ax = plt.subplots(figsize=(6, 4.6))
    colors = {"none": "tab:gray", "random": "tab:blue", "max-loss": "tab:orange",
              "coreset": "tab:green", "full": "black"}
    for x, r in points:
        tv = r["augment_impl"] == "torchvision"
        ax.errorbar(x, r["acc_mean"], yerr=r["acc_std"], fmt="s" if tv else "o", capsize=3,
                    color=colors.get(r["base"], "tab:purple"), mfc="none" if tv else None)
        label = r["base"] if r["base"] in ("none", "full") else f"{r['base']} {100 * r['fraction']:g}%"
        label += (" (subset only)" if r["subset_only"] else "") + (" (tv)" if tv else "")
        ax.annotate(label, (x, r["acc_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    xs = [x for x, _ in points if x > 0]
    if xs and max(xs) / min(xs) > 8:
        ax.set_xscale("log", base=2)
    ax.margins(x=0.15)  # room for the labels right of the last point
    ax.set_xlabel("speedup over full augmentation (selection + augmentation + training time)" if by_speedup
                  else "time (s): selection + augmentation + training, mean over seeds")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(textwrap.fill(title, 80), fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    try:
        files.replace_atomically(path, lambda f: fig.savefig(f, dpi=130, format="png"))
    finally:
        plt.close(fig)
    return path


def write_comparison(rows: list, out: Path, title: str = "", reference: str = "random") -> dict:
    """``compare.md``, ``compare.json`` and ``compare.png`` under ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    files.write_text(md, markdown_table(rows, title, reference))
    files.write_json(out / "compare.json", {"title": title, "reference": reference, "rows": rows})
    png = plot_comparison(rows, out / "compare.png", title)
    return {"markdown": md, "json": out / "compare.json", "png": png}
