"""HF folder -> GGUF (F32/F16) for llama.cpp: our own converter, since llama.cpp's `convert_hf_to_gguf.py`
ships with neither the gguf nor the llama-cpp-python wheel."""
from __future__ import annotations

import json
import os
from pathlib import Path

from effbench.errors import UserError
from effbench.models.llm import LlmModel

GGUF_FILE_TYPES = {"f32": 0, "f16": 1}    # llama_ftype: LLAMA_FTYPE_ALL_F32, LLAMA_FTYPE_MOSTLY_F16


def write_gguf(model: LlmModel, out: str | Path, *, ftype: str = "f32") -> Path:
    """Write the model's HF folder as a llama-architecture GGUF (F32 or F16 matrices, F32 norms).

    Our own converter: llama.cpp's `convert_hf_to_gguf.py` is not installed by the gguf or llama-cpp-python
    wheels. Like it, Q and K rows are permuted from HF's rotary layout to GGML's, and a vocabulary shorter
    than the embedding is padded with unused tokens. llama.cpp never tokenizes in our loop (token ids go in
    directly), so the tokenizer metadata only has to load.
    """
    import gguf
    import numpy as np
    import torch
    from safetensors.torch import load_file

    if ftype not in GGUF_FILE_TYPES:
        raise ValueError(f"ftype must be one of {sorted(GGUF_FILE_TYPES)}")
    folder = Path(model.hf_dir)
    s = model.shape
    state: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        state.update(load_file(str(f)))
    if "lm_head.weight" not in state and not s.tied_embeddings:
        raise UserError("untied model without lm_head.weight", file=folder, field="hf", fix="save the model again")

    def permute(w: np.ndarray, n_head: int) -> np.ndarray:
        return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    def mat(t: torch.Tensor) -> np.ndarray:
        a = t.to(torch.float32).numpy()
        return a.astype(np.float16) if ftype == "f16" else a

    def vec(t: torch.Tensor) -> np.ndarray:
        return t.to(torch.float32).numpy()

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".{os.getpid()}.tmp")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name(model.model_id)
    w.add_context_length(s.max_positions)
    w.add_embedding_length(s.hidden)
    w.add_block_count(s.layers)
    w.add_feed_forward_length(s.ffn)
    w.add_rope_dimension_count(s.dim_per_head)
    w.add_head_count(s.heads)
    w.add_head_count_kv(s.kv_heads)
    w.add_key_length(s.dim_per_head)
    w.add_value_length(s.dim_per_head)
    w.add_layer_norm_rms_eps(s.rms_norm_eps)
    w.add_rope_freq_base(s.rope_theta)
    w.add_vocab_size(s.vocab)
    w.add_file_type(GGUF_FILE_TYPES[ftype])
    _add_tokenizer(w, folder, s.vocab, model.tokenizer_pre)

    w.add_tensor("token_embd.weight", mat(state["model.embed_tokens.weight"]))
    for i in range(s.layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", vec(state[p + "input_layernorm.weight"]))
        w.add_tensor(f"blk.{i}.attn_q.weight", mat(torch.from_numpy(permute(vec(state[p + "self_attn.q_proj.weight"]), s.heads))))
        w.add_tensor(f"blk.{i}.attn_k.weight", mat(torch.from_numpy(permute(vec(state[p + "self_attn.k_proj.weight"]), s.kv_heads))))
        w.add_tensor(f"blk.{i}.attn_v.weight", mat(state[p + "self_attn.v_proj.weight"]))
        w.add_tensor(f"blk.{i}.attn_output.weight", mat(state[p + "self_attn.o_proj.weight"]))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", vec(state[p + "post_attention_layernorm.weight"]))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", mat(state[p + "mlp.gate_proj.weight"]))
        w.add_tensor(f"blk.{i}.ffn_up.weight", mat(state[p + "mlp.up_proj.weight"]))
        w.add_tensor(f"blk.{i}.ffn_down.weight", mat(state[p + "mlp.down_proj.weight"]))
    w.add_tensor("output_norm.weight", vec(state["model.norm.weight"]))
    if not s.tied_embeddings:
        w.add_tensor("output.weight", mat(state["lm_head.weight"]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, out)
    return out


def _add_tokenizer(w, folder: Path, vocab: int, pre: str) -> None:
    import gguf

    spec = json.loads((folder / "tokenizer.json").read_text())
    model = spec.get("model", {})
    if model.get("type") != "BPE":
        raise UserError(f"writing a GGUF needs a BPE tokenizer; this one is {model.get('type')}",
                        file=folder / "tokenizer.json", field="tokenizer",
                        fix="run this model on torch or onnxruntime-genai, or give llama.cpp a GGUF file")
    tokens = [f"[PAD{i}]" for i in range(vocab)]
    types = [gguf.TokenType.UNUSED] * vocab
    for text, i in model.get("vocab", {}).items():
        if i < vocab:
            tokens[i], types[i] = text, gguf.TokenType.NORMAL
    for added in spec.get("added_tokens", []):
        i = added["id"]
        if i < vocab:
            tokens[i] = added["content"]
            types[i] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    cfg = json.loads((folder / "config.json").read_text())
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)

    def first(v):
        return v[0] if isinstance(v, list) else v

    if cfg.get("bos_token_id") is not None:
        w.add_bos_token_id(int(first(cfg["bos_token_id"])))
    if cfg.get("eos_token_id") is not None:
        w.add_eos_token_id(int(first(cfg["eos_token_id"])))
    w.add_add_bos_token(False)
