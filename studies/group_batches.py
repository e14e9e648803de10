"""Does reading an image once per epoch change accuracy?

Data read from disk (``CoresetAugmentation`` over a dataset) shuffles the epoch by example,
not by row: an example's rows are shuffled within a window of ``group_batches`` batches, so
that each image is decoded once per epoch. This trains the same runs with a uniform shuffle
of the rows (``group_batches=0``) and grouped in windows of each K of ``--windows``, seed by
seed (same initialisation, data and selection streams), and prints the paired differences.

    python studies/group_batches.py --dataset mnist5k --model mlp --epochs 10 --seeds 0,1,2,3,4 --windows 1,4
"""
from __future__ import annotations

import argparse

from paired import run_paired


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--model", default="mlp")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--methods", default="full,coreset")
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--windows", default="1,4", help="group_batches values to compare with 0")
    args = p.parse_args(argv)
    base = dict(dataset=args.dataset, model=args.model, epochs=args.epochs, fraction=0.1, copies=4, device="cpu")
    variants = {"uniform": dict(group_batches=0)}
    variants.update({f"k={k}": dict(group_batches=int(k)) for k in args.windows.split(",")})
    run_paired(base, variants, args.methods.split(","), [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    main()
