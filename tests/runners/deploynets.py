"""Tiny torch nets for the OpenVINO and ExecuTorch runner tests (factories "deploynets:cnn2", "deploynets:mlp")."""
import torch
from torch import nn


class Cnn2(nn.Module):
    """Two convolutions, a global average pool, a classifier: the shape of a small vision model."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def cnn2():
    torch.manual_seed(0)
    return Cnn2().eval()


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)).eval()
