"""compare's statistics: paired per-seed differences with a t interval, speedups with their
timing noise, the table, and the refusals that keep it honest."""
import json
import math

import pytest
import torch

from coreaug_fast.train import TrainConfig, main
from coreaug_fast.train.compare import check_plan
from coreaug_fast.train.config import UsageError
from coreaug_fast.train.report import (comparison_rows, markdown_table, paired_stats, ratio_stats,
                                       t_quantile_975)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in list(range(1, 40)) + [50, 100, 1000]:
        assert t_quantile_975(df) == pytest.approx(float(stats.t.ppf(0.975, df)), abs=2e-5), df


def test_paired_stats_against_a_hand_computation():
    d = [1.0, 2.0, 0.0, 3.0, -1.0]
    s = paired_stats(d)
    mean, sd = 1.0, math.sqrt(sum((v - 1.0) ** 2 for v in d) / 4)
    se = sd / math.sqrt(5)
    assert s["mean"] == pytest.approx(mean) and s["se"] == pytest.approx(se)
    assert s["ci_low"] == pytest.approx(mean - 2.7764451 * se) and s["ci_high"] == pytest.approx(mean + 2.7764451 * se)
    assert (s["wins"], s["ties"], s["losses"]) == (3, 1, 1) and s["verdict"] == "within noise"
    assert paired_stats([1.0, 1.2, 0.9, 1.1])["verdict"] == "better"
    assert paired_stats([-1.0, -1.2, -0.9, -1.1])["verdict"] == "worse"
    one = paired_stats([2.0])
    assert one["ci_low"] is None and "one seed" in one["verdict"]


def test_ratio_stats_pairs_by_seed_and_flags_noise():
    r = ratio_stats({0: 10.0, 1: 12.0, 2: 11.0}, {0: 5.0, 1: 6.0, 2: 5.5, 3: 1.0})
    assert r["n"] == 3 and r["ratio"] == pytest.approx(2.0) and not r["noise"]
    noisy = ratio_stats({0: 10.0, 1: 10.0, 2: 10.0}, {0: 9.0, 1: 11.0, 2: 10.2})
    assert noisy["noise"] and noisy["ci_low"] < 1 < noisy["ci_high"]


def _summary(method, fraction, seed, acc, time_s, impl="fused"):
    return {"method": method, "fraction": fraction, "test_acc": acc, "time_s": time_s, "total_s": time_s + 1,
            "selection_s": 0.0, "augment_s": time_s / 2, "train_s": time_s / 2,
            "fraction_never_selected": None,
            "config": {"seed": seed, "subset_only": False, "augment_impl": impl}}


def test_comparison_rows_pair_by_seed_against_the_reference():
    runs = [_summary("random", 0.1, s, a, 4.0) for s, a in zip(range(3), (90.0, 91.0, 92.0))]
    runs += [_summary("coreset", 0.1, s, a, t) for s, a, t in zip((2, 0, 1), (93.0, 91.0, 91.5), (4.0, 5.0, 6.0))]
    runs += [_summary("full", 1.0, s, 95.0, 10.0) for s in range(3)]
    runs += [_summary("full", 1.0, s, 95.0, 30.0, "torchvision") for s in range(3)]
    rows = comparison_rows(runs, reference="random")
    assert [r["method"] for r in rows] == ["random", "coreset", "full", "full (torchvision)"]
    rnd, core, full, tv = rows
    assert core["seeds"] == [0, 1, 2] and core["acc"] == [91.0, 91.5, 93.0]
    assert rnd["paired"] is None and core["reference"] == "random 0.1"
    p = core["paired"]  # differences 1.0, 0.5, 1.0
    assert p["mean"] == pytest.approx(2.5 / 3) and (p["wins"], p["ties"], p["losses"]) == (3, 0, 0)
    assert core["speedup"]["ratio"] == pytest.approx((10 / 5 * 10 / 6 * 10 / 4) ** (1 / 3))
    assert core["speedup_torchvision"]["ratio"] == pytest.approx(3 * core["speedup"]["ratio"])
    # full against itself is the reference of the speedups (1 by definition), not "1.00x (1.00-1.00, noise)"
    assert full["speedup"]["ratio"] == 1.0 and full["speedup"]["reference"] and full["speedup"]["ci_low"] is None
    assert tv["speedup_torchvision"]["reference"] and not core["speedup"].get("reference")
    md = markdown_table(rows, reference="random")
    assert "gain share" not in md
    assert "| coreset | 0.1 | random 0.1 | 3 | +0.83 |" in md and "| 3/0/0 |" in md
    assert "speedup vs full (torchvision)" in md
    assert "| full | 1 | 95.00 ± 0.00 | 10.0 | reference | 3.00× (3.00–3.00) |" in md
    assert "| full (torchvision) | 1 | 95.00 ± 0.00 | 30.0 | 0.33× (0.33–0.33) | reference |" in md
    assert "| coreset | 0.1 | 91.00 | 91.50 | 93.00 |" in md  # per seed, in seed order


def test_check_plan_refuses_repeated_seeds_a_missing_reference_and_stop_after():
    cfg = TrainConfig()
    check_plan(cfg, ["random", "coreset"], [0, 1], "random")
    with pytest.raises(UsageError, match="distinct.*0"):
        check_plan(cfg, ["random", "coreset"], [0, 0], "random")
    with pytest.raises(UsageError, match="--reference"):
        check_plan(cfg, ["none", "coreset"], [0, 1], "random")
    with pytest.raises(UsageError, match="--stop-after"):
        check_plan(TrainConfig(stop_after=3), ["random"], [0], "random")


BASE = ["compare", "--dataset", "synthetic", "--train-size", "60", "--image-size", "8", "--epochs", "1",
        "--copies", "1", "--quiet", "--device", "cpu"]


@pytest.mark.parametrize("extra,needle", [
    (["--methods", "random,coreset", "--seeds", "0,0"], "distinct"),
    (["--methods", "random,coreset", "--seeds", "0,1", "--stop-after", "3"], "--stop-after"),
    (["--methods", "none,coreset", "--seeds", "0,1"], "--reference"),
    (["--methods", "random", "--seeds", "0", "--resume", "/nonexistent/checkpoint.pt"], "--resume"),
])
def test_compare_refuses_before_training(tmp_path, capsys, extra, needle):
    out = tmp_path / "cmp"
    assert main(BASE + extra + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err
    assert not any(out.glob("*/summary.json"))  # nothing ran


def test_compare_cli_writes_markdown_json_and_png_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = BASE + ["--methods", "none,random,coreset,full", "--seeds", "0,1", "--out", str(out)]
    assert main(argv) == 0
    doc = json.loads((out / "compare.json").read_text())
    rows = doc["rows"]
    assert doc["reference"] == "random"
    assert [r["method"] for r in rows] == ["none", "random", "coreset", "full"] and rows[2]["seeds"] == [0, 1]
    assert rows[3]["speedup"]["ratio"] == pytest.approx(1.0)
    assert rows[2]["paired"]["n"] == 2 and rows[1]["paired"] is None
    assert (out / "compare.png").stat().st_size > 0
    md = (out / "compare.md").read_text()
    assert "| coreset | 0.1 |" in md and "±" in md and "Paired by seed, against random" in md
    assert md in capsys.readouterr().out
    before = (out / "none-s0" / "summary.json").stat().st_mtime_ns
    assert main(argv + ["--resume"]) == 0  # the finished runs are reused, not retrained
    assert (out / "none-s0" / "summary.json").stat().st_mtime_ns == before


def test_torchvision_baseline_adds_full_runs_with_that_pipeline(tmp_path, monkeypatch):
    """Which runs compare plans (the Trainer that honours augment_impl is tested with it)."""
    from coreaug_fast.train import compare

    seen = []

    def fake_train(cfg, epoch_lines=False):
        seen.append((cfg.method, cfg.augment_impl, cfg.seed, cfg.out))
        return {**_summary(cfg.method, cfg.resolved().fraction, cfg.seed, 90.0, 1.0, cfg.augment_impl),
                "environment": {"device": "cpu"},
                "config": {**cfg.resolved().to_dict()}}

    monkeypatch.setattr(compare, "train", fake_train)
    rows, _ = compare.run_comparison(TrainConfig(dataset="digits", epochs=1), ["random", "full"], [0, 1], [0.1],
                                     tmp_path, progress=False, torchvision_baseline=True)
    assert [(m, i, s) for m, i, s, _ in seen] == [("random", "fused", 0), ("random", "fused", 1), ("full", "fused", 0),
                                                  ("full", "fused", 1), ("full", "torchvision", 0),
                                                  ("full", "torchvision", 1)]
    assert seen[-1][3].endswith("full-torchvision-s1")
    assert [r["method"] for r in rows] == ["random", "full", "full (torchvision)"]
    assert rows[0]["speedup_torchvision"] is not None


# ------------------------------------------------------------------ what compare says about every setting

def _subset_only(method, seed, acc):
    s = _summary(method, 0.3, seed, acc, 2.0)
    s["config"]["subset_only"] = True
    return s


def test_subset_only_rows_are_paired_with_the_subset_only_reference():
    """The paper's headline setting: every run trains on the subset alone, so the reference
    (random) is a subset-only row too; the paired table must not be empty."""
    runs = [_subset_only("random", s, a) for s, a in zip(range(3), (80.0, 81.0, 82.0))]
    runs += [_subset_only("coreset", s, a) for s, a in zip(range(3), (82.0, 82.0, 83.0))]
    rows = comparison_rows(runs, reference="random")
    core = rows[1]
    assert core["method"] == "coreset (subset only)" and core["reference"] == "random (subset only) 0.3"
    assert core["paired"]["n"] == 3 and core["paired"]["mean"] == pytest.approx(4 / 3)
    md = markdown_table(rows, reference="random")
    assert "| coreset (subset only) | 0.3 | random (subset only) 0.3 | 3 | +1.33 |" in md
    # with both kinds in one table, each pairs with its own kind
    rows = comparison_rows(runs + [_summary("random", 0.3, s, 90.0, 3.0) for s in range(3)]
                           + [_summary("coreset", 0.3, s, 91.0, 3.0) for s in range(3)], reference="random")
    assert {r["method"]: r["reference"] for r in rows if r["paired"]} == {
        "coreset": "random 0.3", "coreset (subset only)": "random (subset only) 0.3"}


def _captured_plot(monkeypatch):
    """plot_comparison's figure, kept open for inspection."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from coreaug_fast.train.report import plot_comparison

    figs = []
    real = plt.subplots
    monkeypatch.setattr(plt, "subplots", lambda *a, **k: figs.append(real(*a, **k)) or figs[-1])
    monkeypatch.setattr(plt, "close", lambda fig: None)
    return figs, plot_comparison


@pytest.mark.parametrize("with_full", [True, False])
def test_plot_has_a_point_per_row_and_a_title_inside_the_figure(tmp_path, monkeypatch, with_full):
    pytest.importorskip("matplotlib")
    runs = [_summary("random", 0.1, s, 90.0 + s, 4.0 + s) for s in range(3)]
    runs += [_summary("coreset", 0.1, s, 91.0 + s, 3.0 + s) for s in range(3)]
    runs += [_summary("full", 1.0, s, 95.0, 10.0) for s in range(3)] if with_full else []
    rows = comparison_rows(runs)
    title = ("mnist5k / mlp, 10 epochs, R=5, r=4 copies, N=2 ops, append, coreset weights uniform, "
             "seeds 0,1,2, AMD EPYC 7B13 (AVX2, 2 threads)")
    figs, plot = _captured_plot(monkeypatch)
    assert plot(rows, tmp_path / "c.png", title) == tmp_path / "c.png"
    fig, ax = figs[0]
    assert len(ax.containers) == len(rows)  # one errorbar per row, with or without full
    assert ax.get_xlabel().startswith("speedup" if with_full else "time (s)")
    fig.canvas.draw()
    box, page = ax.title.get_window_extent(), fig.bbox
    assert box.x0 >= 0 and box.x1 <= page.x1 and box.y1 <= page.y1, (box, page)
    assert ax.title.get_text().replace("\n", " ") == title
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_random_and_max_loss_are_never_labelled_with_coreset_weights():
    from coreaug_fast.train.compare import comparison_title
    from coreaug_fast.train.config import run_name

    assert run_name(TrainConfig(method="random", subset_weights="gamma")) == "random-0.1-s0"
    assert run_name(TrainConfig(method="max-loss", subset_weights="normalized")) == "max-loss-0.1-s0"
    assert run_name(TrainConfig(method="coreset", subset_weights="gamma")) == "coreset-0.1-wgamma-s0"

    def summary(method):
        cfg = TrainConfig(dataset="digits", method=method, subset_weights="gamma").resolved().to_dict()
        return {"method": method, "config": cfg,
                "environment": {"device": "AMD EPYC 7B13", "isa": "AVX2", "threads": 2}}

    assert "weights" not in comparison_title([summary("random"), summary("max-loss")], [0])
    title = comparison_title([summary("random"), summary("coreset")], [0, 1])
    assert "coreset weights gamma" in title and title.endswith("seeds 0,1, AMD EPYC 7B13 (AVX2, 2 threads)")


def test_a_run_records_the_machine_it_ran_on(tmp_path):
    import platform

    from coreaug_fast.train import train
    from coreaug_fast.train.report import cpu_name

    env = train(TrainConfig(dataset="synthetic", train_size=20, image_size=8, epochs=1, copies=1, device="cpu",
                            quiet=True, out=str(tmp_path / "r")))["environment"]
    assert env["device"] == cpu_name() and env["device"] not in ("", "cpu") or platform.system() != "Linux"
    assert env["isa"].split(",")[0] == torch.backends.cpu.get_cpu_capability()
    assert env["threads"] == torch.get_num_threads()


def test_the_torchvision_baseline_is_checked_with_the_plan():
    """--torchvision-baseline adds runs: they are checked before the first run too (a folder
    comparison trained its runs, then failed on the baseline with a traceback)."""
    cfg = TrainConfig(dataset="folder", data_dir="/nonexistent")
    check_plan(cfg, ["full"], [0], "full")
    with pytest.raises(UsageError, match="^--augment-impl torchvision takes in-memory images"):
        check_plan(cfg, ["full"], [0], "full", torchvision_baseline=True)
