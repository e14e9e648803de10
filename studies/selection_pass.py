"""The selection's logits from a clean pass (the paper's) or from the training steps of the
epoch before (``--selection-pass train``: no extra pass): accuracy and time per epoch, paired
by seed, for the coreset and max-loss, on mnist5k with the MLP and digits with the CNN.

    python studies/selection_pass.py --seeds 0,1,2,3,4
"""
from __future__ import annotations

import argparse

from paired import run_paired

SETTINGS = {
    "mnist5k-mlp": dict(dataset="mnist5k", model="mlp", epochs=10),
    "digits-cnn": dict(dataset="digits", model="cnn", epochs=15),
}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--methods", default="coreset,max-loss")
    p.add_argument("--seeds", default="0,1,2,3,4")
    args = p.parse_args(argv)
    variants = {"clean": dict(selection_pass="clean"), "train": dict(selection_pass="train")}
    for name in args.settings.split(","):
        print(f"== {name}", flush=True)
        base = dict(SETTINGS[name], fraction=0.1, copies=4, select_every=5, device="cpu")
        run_paired(base, variants, args.methods.split(","), [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    main()
