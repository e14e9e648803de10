"""The learning-rate schedule: linear warm-up, then step decay (x0.1 at 50% and 75% of
training, the paper's 100/150 of 200 epochs) or cosine decay. Set per batch from the
fractional epoch, so it does not depend on how many rows an epoch has."""
from __future__ import annotations

import math


class WarmupDecay:
    def __init__(self, optimizer, *, base_lr: float, epochs: int, warmup_epochs: int, decay: str = "step"):
        self.optimizer = optimizer
        self.base_lr, self.epochs, self.warmup, self.decay = base_lr, epochs, warmup_epochs, decay
        self.last_lr = self.factor(0.0) * base_lr

    def factor(self, progress: float) -> float:
        """LR multiplier at ``progress`` epochs (a float in [0, epochs])."""
        if self.warmup and progress < self.warmup:
            return max(progress, 1e-3) / self.warmup
        if self.decay == "cosine":
            span = max(self.epochs - self.warmup, 1e-9)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (progress - self.warmup) / span)))
        return 0.1 ** sum(progress >= m * self.epochs for m in (0.5, 0.75))

    def set(self, progress: float) -> float:
        self.last_lr = self.factor(progress) * self.base_lr
        for group in self.optimizer.param_groups:
            group["lr"] = self.last_lr
        return self.last_lr

    def state_dict(self) -> dict:
        return {"base_lr": self.base_lr, "epochs": self.epochs, "warmup": self.warmup,
                "decay": self.decay, "last_lr": self.last_lr}

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update({k: state[k] for k in ("base_lr", "epochs", "warmup", "decay", "last_lr")})
