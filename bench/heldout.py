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


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.skip = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.b1(self.c1(x)))
        return torch.relu(self.b2(self.c2(y)) + self.skip(x))


def resnet_tiny() -> nn.Module:
    """A residual CNN on 32x32x3 (three blocks, 16/32/64 channels, batch norm): a shape the quickstart's
    plain CNN does not have (skip connections, strided convolutions, 1x1 projections)."""
    torch.manual_seed(7)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), _Block(16, 16, 1), _Block(16, 32, 2), _Block(32, 64, 2),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.1, 0.1)
            mod.running_var.uniform_(0.5, 1.5)
    return m.eval()
