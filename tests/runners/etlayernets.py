"""A tiny torch net with an operator XNNPACK does not take (cumsum), for the ExecuTorch layer-profile tests
(factory "etlayernets:partly_delegated")."""
import torch
from torch import nn


class PartlyDelegated(nn.Module):
    """Linear (XNNPACK) -> cumsum (ExecuTorch's own kernel) -> Linear (XNNPACK): two delegate calls around it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(256, 1024)
        self.fc2 = nn.Linear(1024, 10)

    def forward(self, x):
        return self.fc2(torch.cumsum(torch.relu(self.fc1(x)), dim=1))


def partly_delegated():
    torch.manual_seed(0)
    return PartlyDelegated().eval()
