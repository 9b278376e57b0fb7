"""Held-out models for bench/reproducibility.py: shapes the quickstart does not ship, in plain torch with
seeded random weights (speed is what these benchmarks measure; their quality figures are fidelity to
FP32 on generated inputs)."""
from __future__ import annotations

import torch
from torch import nn


def cnn28() -> nn.Module:
    """Three 3x3 convolutions (32/64/128 channels) on 28x28, then a linear classifier."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, 10)).eval()


def mlp2() -> nn.Module:
    """Two hidden layers of 512 on a 784-wide input."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                         nn.Linear(512, 10)).eval()
