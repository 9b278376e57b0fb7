"""Binary variants: 1-bit weights, sign(W) x per-output-channel scale mean|W| (XNOR-Net, Rastegari et al.
2016), first and last weight layers kept FP32 by default. Stored bit-packed (np.packbits) so the size is
real; run dequantized (no runtime here has a 1-bit kernel), hence `emulated: true` (variants.packed).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from effbench.models.sources import ModelArtifact
from effbench.variants import TORCH_STATE_LOADERS, Variant, builder
from effbench.variants.packed import Codec, build_packed, channel_shape, load_packed_state, register_codec


def binarize(w: np.ndarray, out_axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(signs as bool, scale per output channel): w ~ where(signs, 1, -1) * scale (broadcast on out_axis)."""
    w = np.asarray(w, dtype=np.float32)
    other = tuple(a for a in range(w.ndim) if a != out_axis)
    scale = np.abs(w).mean(axis=other).astype(np.float32)
    return w >= 0, scale


def dequantize(signs: np.ndarray, scale: np.ndarray, out_axis: int) -> np.ndarray:
    return np.where(signs, 1.0, -1.0).astype(np.float32) * scale.reshape(channel_shape(signs.ndim, out_axis))


def _encode(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    signs, scale = binarize(w, axis)
    return np.packbits(signs.reshape(-1)), scale


def _decode(codes: np.ndarray, scale: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    signs = np.unpackbits(codes, count=int(np.prod(shape))).astype(bool).reshape(shape)
    return dequantize(signs, scale, axis)


BINARY = register_codec(Codec(
    precision="binary", kind="bits", bits=1, method="sign-scale-xnor",
    tool="effbench.variants.binary (sign x mean|W| per output channel, XNOR-Net)",
    stored_as="bit-packed npz (np.packbits signs + float32 per-channel scales)", layers_key="binarized_layers",
    encode=_encode, decode=_decode))


@builder("binary")
def build_binary(artifact: ModelArtifact, *, label: str, method, options, folder: Path, calibration=None) -> Variant:
    return build_packed(artifact, label=label, options=options, folder=folder, codec=BINARY)


TORCH_STATE_LOADERS["packed-bits"] = load_packed_state
