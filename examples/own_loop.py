"""The paper's method in a plain PyTorch loop: scikit-learn's digits, a model of your own."""
import sys

import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import coreaug_fast

seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
digits = load_digits()
images = torch.from_numpy(digits.images).mul(255 / 16).round().to(torch.uint8).unsqueeze(1)  # (N, 1, 8, 8)
labels = torch.from_numpy(digits.target).long()
train, test = train_test_split(torch.arange(len(labels)), test_size=0.2, stratify=labels, random_state=0)
scaled = images[train].double() / 255
torch.manual_seed(seed)
body = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU())
fc = nn.Linear(256, 10)
model = nn.Sequential(body, fc)

aug = coreaug_fast.CoresetAugmentation(
    images[train], labels[train], fraction=0.1, select_every=5, copies=4, num_ops=2, magnitude=9,
    padding=1, flip=False, mean=scaled.mean().item(), std=scaled.std().item(), features=fc, seed=seed)
opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
schedule = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[15, 22], gamma=0.1)
for epoch in range(30):
    for x, y, w in aug.epoch(model, batch_size=128):  # selects first every 5 epochs
        loss = coreaug_fast.weighted_cross_entropy(model(x), y, w)  # sum(w * CE) / sum(w)
        opt.zero_grad()
        loss.backward()
        opt.step()
    schedule.step()

model.eval()
with torch.no_grad():
    accuracy = (model(aug.transform_eval(images[test])).argmax(1) == labels[test]).float().mean().item()
print(f"test accuracy {100 * accuracy:.2f}%")
