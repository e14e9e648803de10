"""Does keeping an example's original and strong copies in one batch change accuracy?

Data read from disk (``CoresetAugmentation`` over a dataset) shuffles the epoch by example,
not by row: an example's rows are shuffled within a window of ``group_batches`` batches, so
that each image is decoded once per epoch. This runs the same configurations with a uniform
shuffle of the rows (``group_batches=0``) and grouped in windows of each K of ``--windows``,
seed by seed (same initialisation, data and selection streams), and prints the paired
differences against the uniform shuffle.

    python studies/group_batches.py --dataset mnist5k --model mlp --epochs 10 --seeds 0,1,2,3,4 --windows 1,4
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile

from coreaug_fast.train import TrainConfig, train
from coreaug_fast.train.report import paired_stats


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="mlp")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--methods", default="full,coreset")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--windows", default="1,4", help="group_batches values to compare with 0")
    args = p.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    settings = [0] + [int(k) for k in args.windows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            acc = {k: [] for k in settings}
            for seed in seeds:
                for k in settings:
                    cfg = TrainConfig(dataset=args.dataset, model=args.model, epochs=args.epochs, method=method,
                                      fraction=0.1, copies=4, seed=seed, device="cpu", quiet=True,
                                      group_batches=k, out=f"{tmp}/{method}-{seed}-{k}")
                    acc[k].append(train(cfg)["test_acc"])
                print(json.dumps({"method": method, "seed": seed, **{f"k={k}": acc[k][-1] for k in settings}}),
                      flush=True)
            line = f"{method}: uniform {statistics.mean(acc[0]):.2f} ± {statistics.stdev(acc[0]):.2f}"
            for k in settings[1:]:
                st = paired_stats([g - r for g, r in zip(acc[k], acc[0])])
                line += (f"; k={k} {statistics.mean(acc[k]):.2f} ± {statistics.stdev(acc[k]):.2f}, "
                         f"{st['mean']:+.2f} [{st['ci_low']:+.2f}, {st['ci_high']:+.2f}] "
                         f"{st['wins']}/{st['ties']}/{st['losses']} {st['verdict']}")
            print(line + f" ({len(seeds)} paired seeds, 95% t-intervals, W/T/L vs uniform)", flush=True)


if __name__ == "__main__":
    main()
