"""Train with CoresetAugmentation on any map-style image dataset (torchvision's or yours).

The dataset is read once into one uint8 tensor (N, C, H, W) (with a progress bar on a
terminal); from then on every epoch gathers and augments batches from that tensor on the
device, with no DataLoader. All images must have one size (resize them first if not).

    python examples/torchvision_dataset.py --dataset CIFAR10 --root ~/data [--download]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn as nn
from tqdm.auto import tqdm

import coreaug_fast


def to_uint8(dataset, progress=None):
    """(images uint8 (N, C, H, W), labels int64 (N,)) from a dataset of (image, label) pairs;
    an image is a PIL image, a (H, W[, C]) ndarray or a (C, H, W) tensor."""
    from torchvision.transforms.v2.functional import to_image

    first = to_image(dataset[0][0])
    images = torch.empty((len(dataset),) + tuple(first.shape), dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    for i in tqdm(range(len(dataset)), desc="reading images", unit="img", disable=None if progress is None else not progress):
        image, label = dataset[i]
        image = to_image(image)
        if image.shape != first.shape:
            raise ValueError(f"image {i} has shape {tuple(image.shape)}, image 0 {tuple(first.shape)}: resize them first")
        images[i] = image if image.dtype == torch.uint8 else (image.float().clamp(0, 1) * 255).round().to(torch.uint8)
        labels[i] = int(label)
    return images, labels


def small_cnn(channels: int, classes: int) -> nn.Sequential:
    """Three conv-BN-ReLU layers, global pooling, a linear layer (``model[-1]``)."""
    layers, cin = [], channels
    for cout in (32, 64, 128):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, classes))


def train(train_set, test_set, *, epochs=10, fraction=0.1, batch_size=128, lr=0.1, device=None, seed=0,
          model=None, features=None, progress=None):
    """Read both datasets once, train ``model`` (default :func:`small_cnn`) with coreset
    augmentation and return the test accuracy in percent."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    images, labels = to_uint8(train_set, progress)
    test_images, test_labels = to_uint8(test_set, progress)
    classes = int(labels.max()) + 1
    if model is None:
        torch.manual_seed(seed)
        model = small_cnn(images.shape[1], classes)
        features = model[-1]
    model.to(device)
    scaled = images.double() / 255
    aug = coreaug_fast.CoresetAugmentation(
        images.to(device), labels.to(device), fraction=fraction, select_every=5, copies=4,
        padding=max(1, images.shape[-1] // 8), flip=True, mean=scaled.mean((0, 2, 3)).tolist(),
        std=scaled.std((0, 2, 3)).tolist(), features=features, seed=seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in tqdm(range(epochs), desc="epochs", disable=None if progress is None else not progress):
        for x, y, w in aug.epoch(model, batch_size=batch_size):
            loss = coreaug_fast.weighted_cross_entropy(model(x), y, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in zip(test_images.split(1024), test_labels.split(1024)):
            correct += int((model(aug.transform_eval(x.to(device))).argmax(1).cpu() == y).sum())
    return 100.0 * correct / len(test_labels)


def main(argv=None):
    import torchvision

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="CIFAR10", help="a torchvision.datasets class with train=True/False")
    p.add_argument("--root", required=True, help="the dataset's folder")
    p.add_argument("--download", action="store_true", help="let torchvision fetch missing files")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.1)
    args = p.parse_args(argv)
    cls = getattr(torchvision.datasets, args.dataset)
    tr = cls(args.root, train=True, download=args.download)
    te = cls(args.root, train=False, download=args.download)
    print(f"test accuracy {train(tr, te, epochs=args.epochs, fraction=args.fraction):.2f}%")


if __name__ == "__main__":
    main()
