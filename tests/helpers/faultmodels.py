"""Models and worker targets that misbehave on purpose, for the fault tests (importable by workers)."""
import os
import time

import torch
from torch import nn


class Faulty(nn.Module):
    """Fine at batch 1 and 2 (export uses 2); aborts at batch 3; hangs at batch 5."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(16, 4)

    def forward(self, x):
        if x.shape[0] == 3:
            os.abort()
        if x.shape[0] == 5:
            time.sleep(3600)
        return self.lin(x)


def faulty():
    torch.manual_seed(0)
    return Faulty()


def small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))


def raises():
    raise RuntimeError("factory exploded")


def not_a_module():
    return 42


# worker targets for run_in_worker
def echo(value):
    return value


def abort():
    os.abort()


def hang():
    time.sleep(3600)


def allocate(mb: int):
    import numpy as np
    a = np.ones(mb * 1024 * 1024, dtype=np.uint8)
    return int(a.sum())


def user_error():
    from effbench.errors import UserError
    raise UserError("bad thing", file="x.yaml", line=3, field="a.b", fix="do better")
