"""What a run and a comparison write: per-epoch JSON lines, the run summary, and the
comparison table (Markdown + JSON) and plot (PNG)."""
from __future__ import annotations

import json
import math
import platform
from pathlib import Path
from typing import Optional

import torch

from .config import TrainConfig

PHASES = ("selection_s", "augment_s", "train_s")


class RunLog:
    """``epochs.jsonl`` (one record per line, rewritten from ``records`` on resume) and
    ``summary.json`` in the run's folder."""

    def __init__(self, out: Path, records: list):
        self.out = Path(out)
        self.path = self.out / "epochs.jsonl"
        with open(self.path, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")

    def append(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def write_summary(self, summary: dict) -> None:
        _write_json(self.out / "summary.json", summary)


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
        "environment": {"torch": torch.__version__, "python": platform.python_version(),
                        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                   else platform.processor() or "cpu"),
                        "threads": torch.get_num_threads()},
    }


def _write_json(path: Path, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


# -- comparison ------------------------------------------------------------------------
def _mean_std(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    m = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return m, sd


def comparison_rows(summaries: list) -> list:
    """Aggregate run summaries over seeds, one row per (method, fraction, subset-only).

    Each row: method, fraction, seeds, acc_mean/acc_std (%), gain_share
    ((acc - none) / (full - none), the paper's Table 1 metric; None without both
    baselines), time_s (selection + augmentation + training, mean over seeds), wall_s,
    speedup (full's time_s / this time_s; None without a ``full`` row), and NS (%).
    """
    groups = {}
    for s in summaries:
        key = (s["method"], s["fraction"], s["config"].get("subset_only", False))
        groups.setdefault(key, []).append(s)
    rows = []
    for (method, fraction, subset_only), runs in groups.items():
        acc_m, acc_s = _mean_std([r["test_acc"] for r in runs])
        ns = _mean_std([r["fraction_never_selected"] for r in runs])[0]
        rows.append({
            "method": method + (" (subset only)" if subset_only else ""),
            "fraction": fraction,
            "seeds": sorted(r["config"]["seed"] for r in runs),
            "acc_mean": acc_m, "acc_std": acc_s,
            "acc": [r["test_acc"] for r in runs],
            "time_s": _mean_std([r["time_s"] for r in runs])[0],
            **{p: _mean_std([r[p] for r in runs])[0] for p in PHASES},
            "wall_s": _mean_std([r["total_s"] for r in runs])[0],
            "never_selected": None if ns is None else 100.0 * ns,
        })
    by = {r["method"]: r for r in rows}
    none, full = by.get("none"), by.get("full")
    for r in rows:
        r["gain_share"] = None
        if none and full and full["acc_mean"] != none["acc_mean"]:
            r["gain_share"] = (r["acc_mean"] - none["acc_mean"]) / (full["acc_mean"] - none["acc_mean"])
        r["speedup"] = full["time_s"] / r["time_s"] if full and r["time_s"] else None
    order = {"none": 0, "random": 1, "max-loss": 2, "coreset": 3, "full": 4}
    rows.sort(key=lambda r: (order.get(r["method"].split(" ")[0], 9), r["fraction"]))
    return rows


def markdown_table(rows: list, title: Optional[str] = None) -> str:
    def f(v, fmt, unit=""):
        return "—" if v is None else format(v, fmt) + unit
    lines = [f"**{title}**", ""] if title else []
    lines += ["| method | fraction | test acc (%) | gain share | time (s) | speedup vs full | wall (s) | NS (%) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        acc = "—" if r["acc_mean"] is None else f"{r['acc_mean']:.2f} ± {r['acc_std']:.2f}"
        gain = None if r["gain_share"] is None else 100 * r["gain_share"]
        lines.append(f"| {r['method']} | {r['fraction']:g} | {acc} | {f(gain, '.1f', '%')} | "
                     f"{f(r['time_s'], '.1f')} | {f(r['speedup'], '.2f', '×')} | {f(r['wall_s'], '.1f')} | "
                     f"{f(r['never_selected'], '.1f')} |")
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list, path: Path, title: str = "") -> Optional[Path]:
    """Accuracy against speedup over ``full`` (the paper's Fig. 1), one point per row with
    the std over seeds as error bars. Returns None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = {"none": "tab:gray", "random": "tab:blue", "max-loss": "tab:orange",
              "coreset": "tab:green", "full": "black"}
    for r in rows:
        if r["speedup"] is None or r["acc_mean"] is None:
            continue
        base = r["method"].split(" ")[0]
        ax.errorbar(r["speedup"], r["acc_mean"], yerr=r["acc_std"], fmt="o", capsize=3,
                    color=colors.get(base, "tab:purple"))
        label = base if base in ("none", "full") else f"{base} {100 * r['fraction']:g}%"
        ax.annotate(label, (r["speedup"], r["acc_mean"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
    speedups = [r["speedup"] for r in rows if r["speedup"]]
    if speedups and max(speedups) / min(speedups) > 8:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("speedup over full augmentation (selection + augmentation + training time)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def write_comparison(rows: list, out: Path, title: str = "") -> dict:
    """``compare.md``, ``compare.json`` and ``compare.png`` under ``out``; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "compare.md"
    md.write_text(markdown_table(rows, title))
    _write_json(out / "compare.json", {"title": title, "rows": rows})
    png = plot_comparison(rows, out / "compare.png", title)
    return {"markdown": md, "json": out / "compare.json", "png": png}
