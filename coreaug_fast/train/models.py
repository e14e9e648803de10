"""The paper's models and two small ones for the embedded data.

Every model of this file is ``embed`` (images -> penultimate features, (N, d)) followed by
``head`` (a linear layer, (N, d) -> (N, classes)), so the selection pass gets the logits and
the features that ``--embedding last-layer-features`` needs from one forward pass.
torchvision's ImageNet ResNets (``resnet18``, ``resnet50``) are used as they are; their last
layer is ``fc`` (:func:`last_layer` finds either).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checks import first_line


class Classifier(nn.Module):
    head: nn.Linear

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _conv3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _BasicBlock(nn.Module):
    """He et al.'s CIFAR block with the parameter-free shortcut (option A: subsample and
    zero-pad channels), as in the original ResNet20/32."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3(cout, cout), nn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        if self.extra:
            short = F.pad(short, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + short)


class CifarResNet(Classifier):
    """ResNet-(6n+2) for 32x32 images: 16/32/64 channels, n blocks per stage."""

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.stem = nn.Sequential(_conv3(in_channels, 16), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def embed(self, x):
        return F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1).flatten(1)


class _WideBlock(nn.Module):
    """Pre-activation wide block (BN-ReLU-conv, twice) with a 1x1 projection when the
    shape changes."""

    def __init__(self, cin, cout, stride, dropout):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), _conv3(cin, cout, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), _conv3(cout, cout)
        self.dropout = dropout
        self.proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False) if (stride > 1 or cin != cout) else None

    def forward(self, x):
        o = F.relu(self.bn1(x))
        short = self.proj(o) if self.proj is not None else x
        o = self.conv1(o)
        o = F.relu(self.bn2(o))
        if self.dropout:
            o = F.dropout(o, self.dropout, self.training)
        return self.conv2(o) + short


class WideResNet(Classifier):
    """WRN-depth-k (Zagoruyko & Komodakis) for 32x32 images."""

    def __init__(self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = _conv3(in_channels, widths[0])
        blocks, cin = [], widths[0]
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(_WideBlock(cin, cout, stride if i == 0 else 1, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.head = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def embed(self, x):
        o = F.relu(self.bn(self.blocks(self.stem(x))))
        return F.adaptive_avg_pool2d(o, 1).flatten(1)


class SmallCNN(Classifier):
    """Three 3x3 conv-BN-ReLU layers (32, 64, 128 channels; one 2x2 max-pool) and global
    average pooling: any image size, fast on CPU."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv3(in_channels, w), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            _conv3(w, 2 * w), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            _conv3(2 * w, 4 * w), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(4 * w, num_classes)

    def embed(self, x):
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


class MLP(Classifier):
    """One hidden layer of 256 ReLU units (the paper's MNIST model, Fig. 2)."""

    def __init__(self, num_classes: int, in_features: int, hidden: int = 256):
        super().__init__()
        self.hidden = nn.Linear(in_features, hidden)
        self.head = nn.Linear(hidden, num_classes)

    def embed(self, x):
        return F.relu(self.hidden(x.flatten(1)))


def build_model(name: str, num_classes: int, image_shape) -> nn.Module:
    """``name`` in ``config.MODELS``; ``image_shape`` is (C, H, W)."""
    c, h, w = image_shape
    if name in ("resnet18", "resnet50"):
        if c != 3:
            raise ValueError(f"--model {name} takes 3-channel images; this dataset has {c}")
        import torchvision

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if name == "resnet20":
        return CifarResNet(20, num_classes, c)
    if name == "resnet32":
        return CifarResNet(32, num_classes, c)
    if name == "wrn-28-10":
        return WideResNet(28, 10, num_classes, c)
    if name == "cnn":
        return SmallCNN(num_classes, c)
    if name == "mlp":
        return MLP(num_classes, c * h * w)
    raise ValueError(f"unknown model {name!r}")


def last_layer(model: nn.Module) -> nn.Module:
    """The linear layer whose input is the penultimate activation: ``head`` (this file's
    models) or ``fc`` (torchvision's ResNets)."""
    for name in ("head", "fc"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise ValueError(f"{type(model).__name__} has no head or fc linear layer; pass features= explicitly")


def load_weights(model: nn.Module, path: str) -> list:
    """Copy a local state dict (``--weights``) into ``model``. Entries whose shape differs from
    the model's (a classifier for another number of classes) are skipped; the names of the
    skipped entries are returned. Read with ``weights_only=True``: tensors and plain values
    only. Raises ValueError for a file that is not such a state dict for this model."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"--weights {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - pickle, zip, EOF, decoding (a text file: KeyError): all "not one"
        first = first_line(e)
        raise ValueError(f"--weights {path}: not a state dict of tensors ({first})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a coreaug-train checkpoint
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"--weights {path}: not a state dict (a dict of tensors)")
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unknown or missing:
        raise ValueError(f"--weights {path}: its entries do not match --model's: "
                         + (f"{len(unknown)} unknown ({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''})"
                            if unknown else "")
                         + ("; " if unknown and missing else "")
                         + (f"{len(missing)} missing ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''})"
                            if missing else ""))
    skipped = sorted(k for k in state if state[k].shape != own[k].shape)
    model.load_state_dict({k: v for k, v in state.items() if k not in skipped}, strict=False)
    return skipped
