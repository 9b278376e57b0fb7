"""Ternary variants: weights in {-a, 0, +a} per output channel (Ternary Weight Networks, Li, Zhang and Liu
2016: threshold 0.7 x mean|W| per channel, a = the mean |W| of the weights above it), first and last weight
layers kept FP32 by default. Stored at 2 bits per weight so the size is real; run dequantized (no runtime
here has a ternary kernel), hence `emulated: true` (variants.packed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from effbench.models.sources import ModelArtifact
from effbench.variants import TORCH_STATE_LOADERS, Variant, builder
from effbench.variants.packed import Codec, build_packed, channel_shape, load_packed_state, register_codec

THRESHOLD = 0.7  # TWN's approximation of the optimal threshold for Gaussian-like weights (Li et al. 2016, eq. 6)


def ternarize(w: np.ndarray, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes in {-1, 0, 1} as int8, scale a per output channel): w ~ codes * a (broadcast on out_axis).
    A channel with no weight above its threshold (all zero) gets a = 0."""
    w = np.asarray(w, dtype=np.float32)
    other = tuple(a for a in range(w.ndim) if a != out_axis)
    shape = channel_shape(w.ndim, out_axis)
    delta = THRESHOLD * np.abs(w).mean(axis=other)
    big = np.abs(w) > delta.reshape(shape)
    count = big.sum(axis=other)
    total = np.where(big, np.abs(w), 0.0).sum(axis=other)
    scale = np.where(count > 0, total / np.maximum(count, 1), 0.0).astype(np.float32)
    return (np.sign(w) * big).astype(np.int8), scale


def dequantize(codes: np.ndarray, scale: np.ndarray, out_axis: int) -> np.ndarray:
    return codes.astype(np.float32) * scale.reshape(channel_shape(codes.ndim, out_axis))


def pack2(codes: np.ndarray) -> np.ndarray:
    """{-1, 0, 1} -> 2-bit fields (0 -> 0, +1 -> 1, -1 -> 2), four to a byte, first in the low bits."""
    u = np.where(codes < 0, 2, codes).astype(np.uint8).reshape(-1)
    u = np.concatenate([u, np.zeros((-len(u)) % 4, np.uint8)]).reshape(-1, 4)
    return (u[:, 0] | (u[:, 1] << 2) | (u[:, 2] << 4) | (u[:, 3] << 6)).astype(np.uint8)


def unpack2(packed: np.ndarray, count: int) -> np.ndarray:
    u = np.stack([(packed >> s) & 3 for s in (0, 2, 4, 6)], axis=1).reshape(-1)[:count]
    return np.where(u == 2, -1, u).astype(np.int8)


def _encode(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    codes, scale = ternarize(w, axis)
    return pack2(codes), scale


def _decode(packed: np.ndarray, scale: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    return dequantize(unpack2(packed, int(np.prod(shape))).reshape(shape), scale, axis)


TERNARY = register_codec(Codec(
    precision="ternary", kind="trits", bits=2, method="twn-threshold",
    tool="effbench.variants.ternary ({-a, 0, +a} per output channel, threshold 0.7 mean|W|, TWN)",
    stored_as="2-bit packed npz (four {-1, 0, +1} codes per byte + float32 per-channel scales)",
    layers_key="ternarized_layers", encode=_encode, decode=_decode))


@builder("ternary")
def build_ternary(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    return build_packed(artifact, label=label, options=options, folder=folder, codec=TERNARY)


TORCH_STATE_LOADERS["packed-trits"] = load_packed_state
