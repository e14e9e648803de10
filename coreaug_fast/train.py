"""Reference training loop and the ``coreaug-train`` command (the training-loop issue
fills this in; until then ``--demo`` shows the selection pipeline on random data)."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from . import build_info, gradient_embeddings


def _demo(seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    n, classes = 600, 3
    labels = torch.arange(n) % classes
    logits = torch.randn(n, classes, generator=g) + 2.0 * torch.nn.functional.one_hot(labels, classes)
    emb = gradient_embeddings(logits, labels)
    print(f"build: {json.dumps(build_info())}")
    print(f"gradient embeddings of {n} random examples, {classes} classes: shape {tuple(emb.shape)}")
    for c in range(classes):
        rows = (labels == c).nonzero().squeeze(1)
        d = torch.cdist(emb[rows], emb[rows])
        medoid = rows[d.sum(1).argmin()]
        print(f"class {c}: {rows.numel()} examples, medoid (first greedy pick) = example {int(medoid)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="coreaug-train", description=__doc__)
    parser.add_argument("--demo", action="store_true", help="a small selection on random data")
    args = parser.parse_args(argv)
    if args.demo:
        _demo()
        return 0
    parser.error("training is not implemented yet; try --demo")
    return 2


if __name__ == "__main__":
    sys.exit(main())
