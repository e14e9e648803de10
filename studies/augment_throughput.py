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

from coreaug_fast import Augmenter
from coreaug_fast.epoch_batches import BatchBuilder
from coreaug_fast.rows import EpochRows, epoch_rows, weak_first
from coreaug_fast.sources import TensorSource
from coreaug_fast.torchvision_augment import TorchvisionAugment
from coreaug_fast.train import TrainConfig
from coreaug_fast.train.data import load_dataset


def fused_epoch(images, augmenter, rows, batch_size, seed):
    """The batches CoresetAugmentation's epoch makes: one fused launch per batch, weak rows first."""
    rows, weak = weak_first(rows, batch_size)
    builder = BatchBuilder(TensorSource(images), augmenter, torch.Generator().manual_seed(seed))
    for _ in builder.batches(rows, weak, batch_size, images.device):
        pass


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
    augmenter = Augmenter(num_ops=cfg.num_ops, magnitude=cfg.magnitude, copies=1, padding=ds.padding, flip=ds.flip,
                          mean=ds.mean, std=ds.std)
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
        rows = EpochRows(*(t[perm] for t in rows))
        index, strong = rows.index, rows.strong
        tf, tt = [], []
        for rep in range(args.repeats):
            t = time.perf_counter()
            fused_epoch(ds.train_x, augmenter, rows, args.batch_size, rep)
            tf.append(time.perf_counter() - t)
            t = time.perf_counter()
            for _ in tv.batches(index, strong, args.batch_size, seed=rep):
                pass
            tt.append(time.perf_counter() - t)
        print(f"| {name} | {index.numel()} | {min(tf):.2f} | {min(tt):.2f} | {min(tt) / min(tf):.1f}× |", flush=True)


if __name__ == "__main__":
    main()
