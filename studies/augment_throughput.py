"""Augmentation time of one epoch's rows: the fused op (what the training loop calls) against
the torchvision pipeline (coreaug_fast.torchvision_augment: per image, DataLoader workers).

Measures only the augmentation phase, on the rows a `full` epoch trains on (every example
weak once plus r strong copies) and on a 10% subset epoch; prints rows per second.

    python studies/augment_throughput.py --dataset mnist5k --copies 4 --workers 2
"""
from __future__ import annotations

import argparse
import time

import torch

from coreaug_fast.torchvision_augment import TorchvisionAugment
from coreaug_fast.train import TrainConfig, epoch_rows
from coreaug_fast.train.batches import BatchMaker
from coreaug_fast.train.data import load_dataset


def fused_epoch(bm, index, strong, batch_size, g):
    for s in range(0, index.numel(), batch_size):
        bi, bs = index[s:s + batch_size], strong[s:s + batch_size]
        parts = []
        if (~bs).any():
            parts.append(bm.weak(bi[~bs], g))
        if bs.any():
            parts.append(bm.strong(bi[bs], g))
        torch.cat(parts)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    cfg = TrainConfig(dataset=args.dataset, copies=args.copies).resolved()
    ds = load_dataset(cfg)
    n = ds.train_y.numel()
    bm = BatchMaker(ds, num_ops=cfg.num_ops, magnitude=cfg.magnitude)
    tv = TorchvisionAugment(ds.train_x, num_ops=cfg.num_ops, magnitude=cfg.magnitude, padding=ds.padding,
                            flip=ds.flip, mean=ds.mean, std=ds.std, num_workers=args.workers)
    sub = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: n // 10]
    plans = {"full": epoch_rows(n, "full", copies=args.copies),
             "subset 10%": epoch_rows(n, "random", subset=sub, subset_weights=torch.ones(sub.numel()),
                                      copies=args.copies)}
    print(f"{args.dataset}: {n} images {tuple(ds.image_shape)}, r={args.copies}, {torch.get_num_threads()} threads, "
          f"torchvision with {args.workers} workers; best of {args.repeats}")
    print("| rows | count | fused (s) | torchvision (s) | torchvision / fused |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rows in plans.items():
        perm = torch.randperm(rows.index.numel(), generator=torch.Generator().manual_seed(1))
        index, strong = rows.index[perm], rows.strong[perm]
        tf, tt = [], []
        for rep in range(args.repeats):
            t = time.perf_counter()
            fused_epoch(bm, index, strong, args.batch_size, torch.Generator().manual_seed(rep))
            tf.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in tv.batches(index, strong, args.batch_size, seed=rep):
                pass
            tt.append(time.perf_counter() - t)
        print(f"| {name} | {index.numel()} | {min(tf):.2f} | {min(tt):.2f} | {min(tt) / min(tf):.1f}× |", flush=True)


if __name__ == "__main__":
    main()
