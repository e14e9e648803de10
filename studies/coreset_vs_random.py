"""Why does the coreset not beat random selection on the embedded datasets? Evidence, not tuning.

Part 1 (anatomy of one selection): train a coreset run and, at its selection epochs, look at
what each selector picks from the same clean forward pass: the picks' losses and gradient
norms against the class, the distribution of the coreset weights gamma, the effective
number of distinct augmented examples the weights leave (Kish: (sum w)^2 / sum w^2), and how
well each weighted subset reproduces the class's summed last-layer gradient (what the
coreset is built to do, paper Eq. 10) with gamma for the coreset and n_c/k_c for random.

Part 2 (does any knob change the ranking?): coreset minus random, paired by seed, for
last-layer vs last-layer-features embeddings, select_every, fraction and subset weights.

    python studies/coreset_vs_random.py --dataset mnist5k --part 1
    python studies/coreset_vs_random.py --dataset digits --part 2 --seeds 0,1,2,3,4

Writes studies/out/<dataset>-part<k>.json and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

import coreaug_fast as ca
from coreaug_fast.train import TrainConfig, Trainer
from coreaug_fast.train.compare import run_comparison


def clean_pass(trainer):
    """Logits and penultimate features of every training image, eval mode, no augmentation."""
    ds, model = trainer.ds, trainer.model
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)
    was = model.training
    model.eval()
    with torch.no_grad():
        h = torch.cat([model.embed((x.float() / 255 - mean) / std) for x in ds.train_x.cpu().split(1024)])
        logits = model.head(h)
    model.train(was)
    return logits.float(), h.float()


def kish(w):
    return float(w.sum() ** 2 / (w * w).sum()) if w.numel() else 0.0


def anatomy(logits, h, y, fraction, generator):
    """Statistics of the coreset (both embeddings), random and max-loss picks on one pass."""
    loss = F.cross_entropy(logits, y, reduction="none")
    g = ca.gradient_embeddings(logits, y)                     # (n, C): p - onehot
    gn = g.norm(dim=1)
    full_w = torch.einsum("nc,nd->ncd", g, h).reshape(len(y), -1)   # last-layer weight gradients
    wrong = logits.argmax(1) != y
    picks = {
        "coreset": ca.select_coreset(g, y, fraction),
        "coreset-llf": ca.select_coreset(ca.gradient_embeddings(logits, y, h), y, fraction),
        "random": ca.select_random(y, fraction, generator=generator),
        "max-loss": ca.select_max_loss(loss, y, fraction),
    }
    out = {"n": len(y), "mean_loss": float(loss.mean()), "median_grad_norm": float(gn.median()),
           "share_grad_norm_below_0.05": float((gn < 0.05).float().mean()), "error_rate": float(wrong.float().mean())}
    for name, cs in picks.items():
        idx, w = cs.indices, cs.weights.float()
        cls = y[idx]
        # weights the selector would give: gamma for the coreset, n_c / k_c (an unbiased sum) for the others
        counts = torch.bincount(y, minlength=int(y.max()) + 1).float()
        ks = torch.bincount(cls, minlength=counts.numel()).float()
        sum_w = w if name.startswith("coreset") else (counts / ks.clamp_min(1))[cls]
        err, err_ll = 0.0, 0.0
        norm, norm_ll = 0.0, 0.0
        top_share, kish_c = [], []
        for c in range(counts.numel()):
            rows, sel = (y == c), (cls == c)
            if not sel.any():
                continue
            target = full_w[rows].sum(0)
            approx = (sum_w[sel, None] * full_w[idx[sel]]).sum(0)
            err += float((target - approx).norm())
            norm += float(target.norm())
            t2 = g[rows].sum(0)
            a2 = (sum_w[sel, None] * g[idx[sel]]).sum(0)
            err_ll += float((t2 - a2).norm())
            norm_ll += float(t2.norm())
            top_share.append(float(sum_w[sel].max() / sum_w[sel].sum()))
            kish_c.append(kish(sum_w[sel]) / float(sel.sum()))
        # facility-location cost of the picks in the last-layer space: mean distance to the nearest pick
        dist = torch.cdist(g, g[idx])
        same = y[:, None] == cls[None, :]
        nearest = dist.masked_fill(~same, float("inf")).min(1).values
        out[name] = {
            "k": int(idx.numel()),
            "loss_mean_ratio": float(loss[idx].mean() / loss.mean()),
            "grad_norm_mean": float(gn[idx].mean()), "grad_norm_all_mean": float(gn.mean()),
            "misclassified_share": float(wrong[idx].float().mean()),
            "weight_min": float(sum_w.min()), "weight_median": float(sum_w.median()), "weight_max": float(sum_w.max()),
            "share_weight_1": float((sum_w == 1).float().mean()) if name.startswith("coreset") else None,
            "top_pick_share_of_class_weight": sum(top_share) / len(top_share),
            "kish_fraction": sum(kish_c) / len(kish_c),
            "rel_err_sum_grad_lastlayer_weights": err / max(norm, 1e-12),
            "rel_err_sum_grad_logits": err_ll / max(norm_ll, 1e-12),
            "mean_dist_to_nearest_pick": float(nearest.mean()),
        }
    return out


def part1(args):
    cfg = TrainConfig(dataset=args.dataset, model=args.model, method="coreset", fraction=args.fraction, epochs=args.epochs,
                      select_every=args.select_every, copies=4, seed=0, device="cpu", quiet=True,
                      train_size=args.train_size, out=None)
    trainer = Trainer(cfg)
    y = trainer.ds.train_y.cpu()
    g = torch.Generator().manual_seed(0)
    snaps = []
    for e in range(trainer.cfg.epochs):
        if e % trainer.cfg.select_every == 0:
            logits, h = clean_pass(trainer)
            snaps.append({"epoch": e, **anatomy(logits, h, y, args.fraction, g)})
            print(f"epoch {e}: measured", flush=True)
        trainer.run_epoch(progress=False)
    return {"config": dataclasses.asdict(trainer.cfg), "snapshots": snaps}


def print_part1(res):
    keys = [("k", "{:d}"), ("loss_mean_ratio", "{:.2f}"), ("grad_norm_mean", "{:.3f}"),
            ("misclassified_share", "{:.2f}"), ("weight_median", "{:.0f}"), ("weight_max", "{:.0f}"),
            ("top_pick_share_of_class_weight", "{:.2f}"), ("kish_fraction", "{:.2f}"),
            ("rel_err_sum_grad_lastlayer_weights", "{:.3f}"), ("rel_err_sum_grad_logits", "{:.3f}"),
            ("mean_dist_to_nearest_pick", "{:.3f}")]
    for s in res["snapshots"]:
        print(f"\n**epoch {s['epoch']}** (train error {100 * s['error_rate']:.1f}%, mean loss {s['mean_loss']:.3f}, "
              f"{100 * s['share_grad_norm_below_0.05']:.0f}% of rows with ||p-y|| < 0.05)\n")
        print("| selector | " + " | ".join(k for k, _ in keys) + " |")
        print("| --- |" + " ---: |" * len(keys))
        for name in ("coreset", "coreset-llf", "random", "max-loss"):
            r = s[name]
            print(f"| {name} | " + " | ".join("—" if r[k] is None else f.format(r[k]) for k, f in keys) + " |")


VARIANTS = {
    "default": {},
    "last-layer-features": {"embedding": "last-layer-features"},
    "select-every-1": {"select_every": 1},
    "fraction-0.05": {"fraction": 0.05},
    "fraction-0.3": {"fraction": 0.3},
    "weights-normalized": {"subset_weights": "normalized"},
    "weights-uniform": {"subset_weights": "uniform"},
}


def part2(args):
    seeds = [int(s) for s in args.seeds.split(",")]
    res = {}
    for name in args.variants.split(","):
        kw = VARIANTS[name]
        base = TrainConfig(dataset=args.dataset, model=args.model, fraction=args.fraction, device="cpu", quiet=True,
                           epochs=args.epochs, train_size=args.train_size, select_every=args.select_every)
        base = dataclasses.replace(base, **kw)
        rows, _ = run_comparison(base, ["random", "coreset"], seeds, [base.fraction],
                                 Path(args.out) / f"{args.dataset}-runs" / name, progress=False, resume=True)
        by = {r["base"]: r for r in rows}
        res[name] = {"random": by["random"]["acc_mean"], "coreset": by["coreset"]["acc_mean"],
                     "paired": by["coreset"]["paired"]}
        p = res[name]["paired"]
        print(f"{name}: random {res[name]['random']:.2f}  coreset {res[name]['coreset']:.2f}  "
              f"diff {p['mean']:+.2f} [{p['ci_low']:+.2f}, {p['ci_high']:+.2f}]  {p['verdict']}", flush=True)
    return {"seeds": seeds, "variants": res}


def print_part2(res):
    print(f"\n| variant | random | coreset | coreset − random (pp) | 95% interval | W/T/L | verdict |")
    print("| --- | ---: | ---: | ---: | ---: | :---: | --- |")
    for name, r in res["variants"].items():
        p = r["paired"]
        print(f"| {name} | {r['random']:.2f} | {r['coreset']:.2f} | {p['mean']:+.2f} | "
              f"[{p['ci_low']:+.2f}, {p['ci_high']:+.2f}] | {p['wins']}/{p['ties']}/{p['losses']} | {p['verdict']} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--part", type=int, choices=(1, 2), default=1)
    p.add_argument("--model")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--epochs", type=int)
    p.add_argument("--select-every", type=int, default=5)
    p.add_argument("--train-size", type=int)
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", default="studies/out")
    args = p.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    res = part1(args) if args.part == 1 else part2(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"{args.dataset}-part{args.part}.json"
    path.write_text(json.dumps(res, indent=1) + "\n")
    (print_part1 if args.part == 1 else print_part2)(res)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
