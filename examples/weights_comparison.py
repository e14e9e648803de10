"""Paired comparison of the copies' weights (``weights=``) on digits (not make demo's mnist5k):
coreset 10% with gamma / normalized / uniform weights and random 10% as a reference, full
data + 4 strong copies of the subset, 30 epochs, same seeds for every variant.

    python examples/weights_comparison.py --seeds 0,1,2,3,4,5,6,7,8,9
"""
import argparse
import json
import math
import statistics

from coreaug_fast.train import TrainConfig, train

VARIANTS = {"gamma": ("coreset", "gamma"), "normalized": ("coreset", "normalized"),
            "uniform": ("coreset", "uniform"), "random": ("random", "uniform")}
T975 = {4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179,
        13: 2.160, 14: 2.145, 15: 2.131, 19: 2.093, 29: 2.045}


def ci95(diffs):
    """Mean and 95% t-interval half-width of paired differences."""
    m, n = statistics.mean(diffs), len(diffs)
    t = T975.get(n - 1, 1.96)
    return m, t * statistics.stdev(diffs) / math.sqrt(n)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--out", default="runs/weights")
    p.add_argument("--overwrite", action="store_true", help="replace the runs a previous call left in --out")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    acc = {v: [] for v in VARIANTS}
    for s in seeds:
        for v, (method, weights) in VARIANTS.items():
            cfg = TrainConfig(dataset="digits", method=method, fraction=0.1, copies=4, subset_weights=weights,
                              seed=s, device="cpu", quiet=True, out=f"{args.out}/{v}-s{s}",
                              overwrite=args.overwrite)
            acc[v].append(train(cfg)["test_acc"])
        print(json.dumps({"seed": s, **{v: a[-1] for v, a in acc.items()}}), flush=True)
    for v, a in acc.items():
        print(f"{v:10s} {statistics.mean(a):.2f} ± {statistics.stdev(a):.2f}")
    for a, b in (("uniform", "gamma"), ("normalized", "gamma"), ("uniform", "normalized"), ("uniform", "random"),
                 ("normalized", "random"), ("gamma", "random")):
        m, h = ci95([x - y for x, y in zip(acc[a], acc[b])])
        print(f"{a} - {b}: {m:+.2f} points, 95% CI [{m - h:+.2f}, {m + h:+.2f}]")


if __name__ == "__main__":
    main()
