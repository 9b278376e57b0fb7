"""One module per generative runtime, each registering its `GenerationSession` subclass
(`effbench.workloads.session.register`). Importing them imports no runtime: each session imports its
runtime when it opens."""
from __future__ import annotations


def load() -> None:
    """Register every shipped generative session."""
    from effbench.workloads.sessions import llamacpp as _llamacpp  # noqa: F401
    from effbench.workloads.sessions import onnxruntime_genai as _ort_genai  # noqa: F401
    from effbench.workloads.sessions import torch as _torch  # noqa: F401
