"""``python -m coreaug_fast.analysis``: the Jacobian singular-spectrum analysis from the
command line, written as ``spectrum.json``, ``histogram.png`` (paper Fig. 2) and
``bins.png`` (App. C, Fig. 1) in ``--out``.

With no ``--data``, it uses scikit-learn's bundled 8×8 digits (1797 images, nothing is
downloaded). With no ``--model``, it first trains a small model (``--arch mlp``: one hidden
layer, as the paper's MNIST MLP; or ``cnn``) on all the data for ``--epochs`` epochs, as the
paper pretrains for 15. With no ``--augment``, the augmentation is a random rotation (±15°),
translation (±1 pixel), brightness (±0.1) and contrast (×0.8–1.2), drawn from torch's
generator, which :func:`~coreaug_fast.analysis.jacobian_spectrum` seeds.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..checks import first_line
from ..train import files
from .spectrum import jacobian_spectrum, subsample


def default_augment(images: torch.Tensor) -> torch.Tensor:
    """Random rotation (±15°), translation (±1 pixel), brightness (±0.1) and contrast
    (×[0.8, 1.2]) of (N, C, H, W) floating images in [0, 1]; same shape, dtype and device.
    Draws from torch's global generator."""
    if images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"the default augmentation needs (N, C, H, W) floating images, got "
                         f"{tuple(images.shape)} {images.dtype}; pass --augment")
    n, _, h, w = images.shape
    opts = dict(device=images.device, dtype=images.dtype)

    def uniform(*shape, scale):
        return (torch.rand(*shape, **opts) * 2 - 1) * scale

    angle = uniform(n, scale=math.radians(15))
    # affine_grid works in [-1, 1] coordinates: one pixel is 2/W (2/H)
    tx, ty = uniform(n, scale=2.0 / w), uniform(n, scale=2.0 / h)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * (1 + uniform(n, 1, 1, 1, scale=0.2)) + mean + uniform(n, 1, 1, 1, scale=0.1)
    return out.clamp(0, 1)


def make_model(arch: str, in_shape, num_classes: int, hidden: int = 128) -> torch.nn.Module:
    """``mlp``: Flatten → Linear(d, hidden) → ReLU → Linear(hidden, C). ``cnn`` (needs
    (C, H, W) inputs): two 3×3 convolutions (16, 32 channels) with ReLU, a 2×2 max-pool
    between them, global 2×2 average pooling, Linear(128, C)."""
    if arch == "mlp":
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(in_shape)), hidden),
                                   torch.nn.ReLU(), torch.nn.Linear(hidden, num_classes))
    if len(in_shape) != 3:
        raise ValueError(f"--arch cnn needs (N, C, H, W) images, got per-image shape {tuple(in_shape)}")
    return torch.nn.Sequential(
        torch.nn.Conv2d(in_shape[0], 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, num_classes))


def load_digits():
    """scikit-learn's bundled digits: (1797, 1, 8, 8) float32 in [0, 1], (1797,) int64."""
    from sklearn.datasets import load_digits as _load
    d = _load()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    return images, torch.from_numpy(d.target.astype(np.int64))


def _read(path: str):
    """The object stored in ``path`` (a dict of arrays for .npz), or ValueError with one line."""
    if not os.path.isfile(path):
        raise ValueError(f"--data {path}: no such file")
    kind = ".npz" if path.endswith(".npz") else ".pt"
    try:
        if kind == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not isinstance(z, np.lib.npyio.NpzFile):
                    raise ValueError("a single .npy array, not an .npz archive")
                return {k: torch.from_numpy(z[k]) for k in z.files}
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - zip, pickle, EOF, OS errors: all mean "cannot read"
        why = first_line(e)
        raise ValueError(f"--data {path}: not a readable {kind} file ({why})") from None


def load_data(path: str):
    """``.pt`` (a dict with ``images`` and ``targets`` tensors, or a pair; loaded with
    ``weights_only=True``) or ``.npz`` (arrays ``images`` and ``targets``). uint8 images are
    scaled to float32 in [0, 1]. Raises ValueError (one line) for a missing, unreadable or
    malformed file."""
    obj = _read(path)
    if isinstance(obj, dict):
        missing = [k for k in ("images", "targets") if k not in obj]
        if missing:
            raise ValueError(f"--data {path}: no {' or '.join(repr(k) for k in missing)} in the file "
                             f"(found {sorted(map(str, obj))})")
        images, targets = obj["images"], obj["targets"]
    elif isinstance(obj, (tuple, list)) and len(obj) == 2:
        images, targets = obj
    else:
        raise ValueError(f"--data {path}: expected a dict with 'images' and 'targets' or an (images, targets) "
                         f"pair, got {type(obj).__name__}")
    if not isinstance(images, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise ValueError(f"--data {path}: images and targets must be tensors/arrays, got "
                         f"{type(images).__name__} and {type(targets).__name__}")
    if targets.dim() != 1 or targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"--data {path}: targets must be a 1-D integer array, got {targets.dtype} "
                         f"of shape {tuple(targets.shape)}")
    if images.dim() < 2 or images.shape[0] != targets.shape[0]:
        raise ValueError(f"--data {path}: images {tuple(images.shape)} and targets {tuple(targets.shape)} "
                         "must have one row per example")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    return images, targets.long()


def load_object(spec: str):
    """``package.module:attribute`` (the current directory is importable)."""
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def train(model, images, targets, epochs: int, seed: int, batch_size: int = 64, progress: bool = True) -> float:
    """Adam (lr 1e-3), cross-entropy, shuffled mini-batches; returns training accuracy."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in tqdm(range(epochs), desc="pretraining", unit="epoch", disable=not progress):
        for b in torch.randperm(images.shape[0], generator=g).split(batch_size):
            b = b.to(images.device)
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[b]), targets[b]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x in images.split(1024)])
    return float((pred == targets).float().mean())


PROG = "python -m coreaug_fast.analysis"


def _error(e: Exception) -> int:
    """A refused input: one line on stderr, exit status 2 (as _Parser's usage errors)."""
    print(f"{PROG}: error: {first_line(e)}", file=sys.stderr)
    return 2


def _load_flag(flag: str, spec: str):
    """:func:`load_object` for a command-line flag: any failure (a bad spec, an import error,
    an exception raised by the user's module) is a ValueError naming the flag."""
    try:
        return load_object(spec)
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything while importing
        raise ValueError(f"{flag} {spec}: {first_line(e)}") from None


def load_model(spec: str, weights=None) -> torch.nn.Module:
    """``--model``: an ``nn.Module``, or a callable returning one (called with no arguments);
    with ``weights``, a ``state_dict`` file loaded into it (``weights_only=True``). ValueError
    naming the flag for anything else."""
    obj = _load_flag("--model", spec)
    if not isinstance(obj, torch.nn.Module):
        if not callable(obj):
            raise ValueError(f"--model {spec}: a {type(obj).__name__}, neither an nn.Module nor a callable "
                             "returning one")
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - whatever the user's factory raises
            raise ValueError(f"--model {spec}: calling it with no arguments failed "
                             f"({type(e).__name__}: {first_line(e)})") from None
        if not isinstance(obj, torch.nn.Module):
            raise ValueError(f"--model {spec}: returned a {type(obj).__name__}, not an nn.Module")
    if weights is not None:
        if not os.path.isfile(weights):
            raise ValueError(f"--weights {weights}: no such file")
        try:
            state = torch.load(weights, weights_only=True, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - zip, pickle, EOF, OS errors: all mean "cannot read"
            raise ValueError(f"--weights {weights}: not a readable .pt file "
                             f"({type(e).__name__}: {first_line(e)})") from None
        if not isinstance(state, dict):
            raise ValueError(f"--weights {weights}: holds a {type(state).__name__}, not a state_dict")
        try:
            obj.load_state_dict(state)
        except Exception as e:  # noqa: BLE001 - missing/unexpected keys, shape mismatches
            raise ValueError(f"--weights {weights}: does not fit --model {spec} ({first_line(e)})") from None
    return obj


def load_augment(spec: str):
    """``--augment``: a callable images -> images. Returned wrapped, so that an exception it
    raises on the batch becomes a ValueError naming the flag."""
    fn = _load_flag("--augment", spec)
    if not callable(fn):
        raise ValueError(f"--augment {spec}: a {type(fn).__name__}, not a callable images -> images")

    def augment(images):
        try:
            return fn(images)
        except Exception as e:  # noqa: BLE001 - whatever the user's policy raises
            raise ValueError(f"--augment {spec}: failed on a batch of shape {tuple(images.shape)} "
                             f"({type(e).__name__}: {first_line(e)})") from None
    return augment


class _Parser(argparse.ArgumentParser):
    """A bad argument ends in one line on stderr (exit 2), not a usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _at_least(minimum: int):
    """An argparse type: an integer >= ``minimum``, refused at parse time (before any
    pretraining) in one line."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help=".pt or .npz with images and targets (default: sklearn digits)")
    p.add_argument("--model", help="MODULE:ATTR, an nn.Module or a callable returning one, used as is "
                                   "(default: train --arch on the data)")
    p.add_argument("--weights", help="state_dict (.pt) loaded into --model (needs --model)")
    p.add_argument("--augment", help="MODULE:ATTR, a callable images -> images (default: rotate/translate/jitter)")
    p.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--hidden", type=_at_least(1), default=128, help="hidden width of --arch mlp")
    p.add_argument("--epochs", type=_at_least(0), default=15, help="pretraining epochs of the default model")
    p.add_argument("--classes", type=int, nargs="*", default=[0, 1, 2],
                   help="classes to draw from (default: 0 1 2, as the paper; give none for all)")
    p.add_argument("--max-examples", type=_at_least(1), default=900)
    p.add_argument("--bins", type=_at_least(1), default=30)
    p.add_argument("--output", choices=["logits", "target"], default="logits")
    p.add_argument("--method", choices=["auto", "gram", "svd"], default="auto")
    p.add_argument("--chunk-size", type=_at_least(1), default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="runs/analysis", help="output folder")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv=None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # usage errors (one line, from _Parser) and --help: a status to return
        return e.code
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _run(args) -> int:
    started = time.time()
    torch.manual_seed(args.seed)
    progress = not args.quiet
    out = Path(args.out)
    try:  # everything that can be refused is refused here, before any pretraining
        if args.weights is not None and not args.model:
            raise ValueError("--weights needs --model: without it the default model is trained here, "
                             "and there is nothing to load the weights into")
        files.check_writable(out, keep=False)  # nothing is written before the spectrum
        images, targets = load_data(args.data) if args.data else load_digits()
    except ValueError as e:
        return _error(e)
    try:  # a bad --model/--augment/--device or spectrum argument: one line, not a traceback
        device = torch.device(args.device)
        augment = load_augment(args.augment) if args.augment else default_augment
        if args.classes:  # a class the data lacks: refused now, not after pretraining
            subsample(targets, 1, classes=args.classes)

        accuracy = None
        if args.model:
            model = load_model(args.model, args.weights).to(device)
        else:
            model = make_model(args.arch, tuple(images.shape[1:]), int(targets.max()) + 1, args.hidden).to(device)
            accuracy = train(model, images.to(device), targets.to(device), args.epochs, args.seed, progress=progress)

        res = jacobian_spectrum(model, images.to(device), targets.to(device), augment, args.max_examples,
                                output=args.output, classes=args.classes or None, seed=args.seed,
                                num_bins=args.bins, chunk_size=args.chunk_size, method=args.method,
                                progress=progress)
    except (ValueError, ImportError, AttributeError, RuntimeError) as e:
        return _error(e)
    report = {
        "config": vars(args),
        "data": args.data or "sklearn digits",
        "model": args.model or args.arch,
        "train_accuracy": accuracy,
        "torch": torch.__version__,
        "seconds": round(time.time() - started, 3),
        "result": res.to_dict(),
    }
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "spectrum.json").write_text(json.dumps(report, indent=1))
        if not args.no_plots:
            from .plots import plot_bins, plot_histogram
            plot_histogram(res, out / "histogram.png")
            plot_bins(res, out / "bins.png")
    except OSError as e:  # a full disk, the folder removed meanwhile: one line
        print(f"{PROG}: error: --out {out}: {e.strerror or e}", file=sys.stderr)
        return 1

    m = res.measures
    print(f"{res.indices.numel()} examples, Jacobian {res.num_rows} x {res.num_params} ({res.output}); "
          f"rank {res.original.rank} original, {res.augmented.rank} augmented"
          + ("" if accuracy is None else f"; model train accuracy {accuracy:.3f}"))
    print(f"mean σ(aug) − σ(orig): smallest bin {m.value_diff[0]:+.3e}, largest bin {m.value_diff[-1]:+.3e}")
    print(f"mean principal angle: smallest bin {math.degrees(m.angle[0]):.1f}°, "
          f"largest bin {math.degrees(m.angle[-1]):.1f}°")
    print(f"wrote {out / 'spectrum.json'}" + ("" if args.no_plots else ", histogram.png, bins.png"))
    return 0
