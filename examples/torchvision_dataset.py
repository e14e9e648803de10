"""Train with CoresetAugmentation straight from folders of images of any size (torchvision's
``ImageFolder`` layout, as ImageNet, TinyImageNet or Caltech256 come):

    ROOT/train/<class>/<image>.jpg      ROOT/val/<class>/<image>.jpg

The images are never loaded whole: DataLoader workers decode each one once per epoch and
cut its 224x224 crops (RandomResizedCrop + flip, the ImageNet convention); the strong copies
of the coreset get AutoAugment (the paper's policy for these datasets) on the device.

    python examples/torchvision_dataset.py --root ROOT [--epochs 10] [--workers 8] [--weights resnet18.pt]
"""
from __future__ import annotations

import argparse

import torch
from tqdm.auto import tqdm

import coreaug_fast

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def train(train_set, val_set, model, features, *, image_size=224, epochs=10, fraction=0.1, batch_size=64,
          lr=0.1, workers=2, device=None, seed=0, progress=None):
    """Train ``model`` (its last linear layer ``features``) on ``train_set`` with coreset
    augmentation and return the top-1 accuracy on ``val_set``, in percent. Both sets are
    map-style datasets of (image, label) items, images of any size (e.g. ImageFolder)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(device)
    aug = coreaug_fast.CoresetAugmentation(
        train_set, image_size=image_size, weak="resized-crop", fraction=fraction, select_every=5, copies=4,
        policy="autoaugment-imagenet", mean=IMAGENET_MEAN, std=IMAGENET_STD, features=features,
        num_workers=workers, seed=seed, progress=progress)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in tqdm(range(epochs), desc="epochs", disable=None if progress is None else not progress):
        model.train()
        for x, y, w in aug.epoch(model, batch_size=batch_size):   # selects first every 5 epochs
            loss = coreaug_fast.weighted_cross_entropy(model(x), y, w)   # sum(w * CE) / sum(w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in aug.eval_batches(val_set, batch_size=2 * batch_size):   # resize 256, centre crop 224
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


def main(argv=None):
    import torchvision

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="holds train/<class>/ and val/<class>/")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--weights", help="a local state dict to start resnet18 from (its fc is replaced)")
    args = p.parse_args(argv)
    train_set = torchvision.datasets.ImageFolder(f"{args.root}/train")   # no transform: PIL images
    val_set = torchvision.datasets.ImageFolder(f"{args.root}/val")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=len(train_set.classes))
    if args.weights:
        state = torch.load(args.weights, map_location="cpu", weights_only=True)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=False)
    acc = train(train_set, val_set, model, model.fc, image_size=args.image_size, epochs=args.epochs,
                fraction=args.fraction, workers=args.workers)
    print(f"val accuracy {acc:.2f}%")


if __name__ == "__main__":
    main()
