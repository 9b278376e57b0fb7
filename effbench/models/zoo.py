"""The builtin zoo: small real models that need no download.

`mlp`, `digits-cnn` and `digits-resnet` are trained on scikit-learn's bundled digits data the first time
they are asked for (seconds on 2 cores) and cached with their test accuracy. `digits-resnet` is the one of
realistic size: it upsamples the 8x8 digit to 32x32 and runs a three-stage residual CNN (16/32/64 channels,
about 17M MACs per image), big enough for INT8 convolution kernels to pay on a CPU, where the tiny
`digits-cnn` (0.1M MACs) is not; `tiny-transformer` is a seeded
random-weight encoder whose outputs are embeddings. The standard architectures published device figures
use (`effbench.models.standard`: resnet50, mobilenet-v2, mobilenet-v1, resnet8) are seeded random-weight
models too: their work and speed are real, their accuracy is not what they are for.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

ZOO_VERSION = 1  # bump when an architecture or its training changes: old caches are then ignored
DIGITS_SEED = 0
TRAIN_FRACTION = 0.8


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.b(torch.relu(self.a(x))))


class DigitsResNet(nn.Module):
    """A ResNet-shaped CNN on the 8x8 digits, upsampled to 32x32 in the graph (nearest): a stem, then three
    stages of one residual block each at 32x32/16x16/8x8 with WIDTH/2x/4x channels, global average pool."""

    WIDTH = 16
    EPOCHS = 12

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTH
        self.net = nn.Sequential(
            nn.Upsample(scale_factor=4, mode="nearest"),
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), _Residual(w),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(), _Residual(2 * w),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(), _Residual(4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SelfAttention(nn.Module):
    """Attention written as its MatMuls, so exporters and FLOP counters see every product."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads, self.dh = heads, d // heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(self.dh), dim=-1)
        return self.out((att @ v).transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int) -> None:
        super().__init__()
        self.ln1, self.att = nn.LayerNorm(d), SelfAttention(d, heads)
        self.ln2, self.ff = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.att(self.ln1(x))
        return x + self.ff(self.ln2(x))


class TinyTransformer(nn.Module):
    VOCAB, SEQ, D = 1000, 32, 64

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(self.VOCAB, self.D)
        self.pos = nn.Parameter(torch.randn(1, self.SEQ, self.D) * 0.02)
        self.blocks = nn.Sequential(Block(self.D, 4, 128), Block(self.D, 4, 128))
        self.ln = nn.LayerNorm(self.D)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.blocks(self.tok(input_ids) + self.pos[:, : input_ids.shape[1]]))
        e = h.mean(dim=1)
        return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# name -> (class, input specs, dataset, task)
ZOO = {
    "mlp": (MLP, {"x": {"shape": ["batch", 64], "dtype": "float32", "range": (0.0, 1.0)}}, "digits", "classification"),
    "digits-cnn": (DigitsCNN, {"x": {"shape": ["batch", 1, 8, 8], "dtype": "float32", "range": (0.0, 1.0)}},
                   "digits", "classification"),
    "digits-resnet": (DigitsResNet, {"x": {"shape": ["batch", 1, 8, 8], "dtype": "float32", "range": (0.0, 1.0)}},
                      "digits", "classification"),
    "tiny-transformer": (TinyTransformer, {"input_ids": {"shape": ["batch", TinyTransformer.SEQ], "dtype": "int64",
                                                          "range": (0, TinyTransformer.VOCAB)}}, None, "embedding"),
}
RANDOM_WEIGHTS = {"tiny-transformer"}


def _add_standard() -> None:
    from effbench.models.standard import STANDARD
    for name, (cls, inputs) in STANDARD.items():
        ZOO[name] = (cls, inputs, None, "classification")
        RANDOM_WEIGHTS.add(name)


_add_standard()


def digits_split() -> tuple:
    """scikit-learn's bundled 8x8 digits, scaled to [0, 1], split by a fixed seed: (Xtr, ytr, Xte, yte)."""
    import numpy as np
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    idx = np.random.default_rng(DIGITS_SEED).permutation(len(x))
    cut = int(len(x) * TRAIN_FRACTION)
    return x[idx[:cut]], y[idx[:cut]], x[idx[cut:]], y[idx[cut:]]


def _train(model: nn.Module, shape: tuple[int, ...]) -> float:
    xtr, ytr, xte, yte = digits_split()
    g = torch.Generator().manual_seed(DIGITS_SEED)
    xt, yt = torch.from_numpy(xtr).reshape(-1, *shape), torch.from_numpy(ytr)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(getattr(model, "EPOCHS", 40)):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 64):
            b = perm[i:i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    model.eval()
    with torch.inference_mode():
        pred = model(torch.from_numpy(xte).reshape(-1, *shape)).argmax(1).numpy()
    return float((pred == yte).mean())


def build(name: str, cache_dir: Path) -> nn.Module:
    """The builtin model `name` in eval mode, trained and cached on first use."""
    cls, inputs, _, _ = ZOO[name]
    torch.manual_seed(DIGITS_SEED)
    model = cls()
    if name in RANDOM_WEIGHTS:
        return model.eval()
    path = Path(cache_dir) / "zoo" / f"{name}-v{ZOO_VERSION}.pt"
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    shape = tuple(inputs["x"]["shape"][1:])
    with torch.random.fork_rng():
        torch.manual_seed(DIGITS_SEED)
        acc = _train(model, shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps({"model": name, "test_top1": acc, "seed": DIGITS_SEED,
                                                     "dataset": "sklearn digits, 20% held out"}))
    return model.eval()


def info(name: str, cache_dir: Path) -> dict:
    p = Path(cache_dir) / "zoo" / f"{name}-v{ZOO_VERSION}.json"
    return json.loads(p.read_text()) if p.is_file() else {}
