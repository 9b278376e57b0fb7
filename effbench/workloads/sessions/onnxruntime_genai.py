"""ONNX Runtime GenAI: its model builder turns the HF folder into ONNX offline (cached), `og.Generator` decodes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from effbench.runners.onnxruntime_genai import OrtGenAIRunner
from effbench.variants.generative import ORT_ACCURACY_COMPUTE, ORT_ACCURACY_PRECISION
from effbench.workloads.session import GenerationSession, Kernel, TokenClock, Unsupported, register

ORT_DEFAULT_ACCURACY_LEVEL = 4      # int8 compute: what makes MatMulNBits fast on a CPU
ORT_DEFAULT_BLOCK_SIZE = 32


@register
class OrtGenAISession(GenerationSession):
    """The ORT GenAI model builder turns the HF folder into ONNX offline (cached); og.Generator decodes.

    int4/int8: MatMulNBits, weight-only in the graph (blockwise, block 32); with accuracy_level 4 the CPU
    kernel quantizes activations to int8 per block and computes in int8 (read back from the graph).
    """

    runtime = OrtGenAIRunner.name
    modules = (OrtGenAIRunner.runtime_module,)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        import onnxruntime_genai as og

        self._og = og
        built = self._build()
        view = self._thread_view(built)
        try:
            cfg = og.Config(str(view))
            cfg.clear_providers()          # CPU
            self._ogmodel = og.Model(cfg)
        except Exception as e:
            raise Unsupported(f"onnxruntime-genai cannot load the {self.precision} model on CPU: "
                              f"{_ort_message(e)}") from None
        graph = _matmulnbits_attrs(built / "model.onnx")
        gcfg = json.loads((view / "genai_config.json").read_text())
        kv = _ort_kv_dtype(built / "model.onnx")
        kv_bpe = {"float32": 4, "float16": 2, "bfloat16": 2}.get(kv, 4)
        if self.spec.quantized:
            levels = sorted({a.get("accuracy_level") for a in graph})
            bits = sorted({a.get("bits") for a in graph})
            blocks = sorted({a.get("block_size") for a in graph})
            self.kernel = Kernel(self.runtime, self.precision,
                                 weights=f"int{'/'.join(map(str, bits))} blockwise (block {'/'.join(map(str, blocks))}), "
                                         "MatMulNBits",
                                 quantization="weight-only",
                                 compute="; ".join(ORT_ACCURACY_COMPUTE.get(lv, str(lv)) for lv in levels),
                                 kv_cache=kv, kv_bytes_per_element=kv_bpe,
                                 detail={"op": "MatMulNBits", "nodes": len(graph), "accuracy_level": levels,
                                         "block_size": blocks, "bits": bits},
                                 compute_precision=ORT_ACCURACY_PRECISION.get(levels[0]) if len(levels) == 1 else None)
        else:
            self.kernel = Kernel(self.runtime, self.precision, weights=self.precision, quantization="none",
                                 compute=self.precision, kv_cache=kv, kv_bytes_per_element=kv_bpe, detail={},
                                 compute_precision=self.precision)
        self.weight_bytes, self.decode_weight_bytes = _onnx_weight_bytes(built / "model.onnx")
        try:   # some builds load and then fail on their first decode step (fp16 on CPU): say so now
            self.generate(list(range(1, 9)), 3)
        except Exception as e:
            raise Unsupported(f"onnxruntime-genai {self.precision} fails on CPU at run time: "
                              f"{_ort_message(e)}") from None
        self.info.update({"onnxruntime_genai": og.__version__ if hasattr(og, "__version__") else None,
                          "model_dir": str(built), "session_options": gcfg["model"]["decoder"].get("session_options")})

    def _build(self) -> Path:
        prec = self.spec.ort_builder
        extra = {"hf_token": "false"}
        if self.spec.quantized:
            extra["accuracy_level"] = str(int(self.options.get("accuracy_level", ORT_DEFAULT_ACCURACY_LEVEL)))
            extra["block_size"] = str(int(self.options.get("block_size", ORT_DEFAULT_BLOCK_SIZE)))
        key = "-".join(f"{k}{v}" for k, v in sorted(extra.items()) if k != "hf_token")
        out = self.cache_dir / "llm-ort" / f"{self.model.fingerprint}-{prec}{'-' + key if key else ''}"
        if (out / "genai_config.json").exists():
            return out
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(out) + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        work = Path(str(out) + f".{os.getpid()}.cache")
        cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", self.model.hf_dir, "-o", str(tmp),
               "-p", prec, "-e", "cpu", "-c", str(work), "--extra_options", *(f"{k}={v}" for k, v in extra.items())]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": str(self.threads)}
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
        shutil.rmtree(work, ignore_errors=True)
        if proc.returncode != 0 or not (tmp / "genai_config.json").exists():
            shutil.rmtree(tmp, ignore_errors=True)
            lines = [ln for ln in (proc.stderr + proc.stdout).strip().splitlines() if ln.strip()]
            reason = next((ln for ln in reversed(lines) if "Error" in ln or "error" in ln), lines[-1] if lines else "")
            raise Unsupported(f"the onnxruntime-genai builder cannot make {prec} for CPU: {reason.strip()[:300]}")
        try:
            os.rename(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)   # another worker finished first
        return out

    def _thread_view(self, built: Path) -> Path:
        """A sibling folder of links with its own genai_config.json: threads go in session_options, and
        workers with other thread counts share the built model without racing on one config file."""
        view = built.parent / f"{built.name}.threads{self.threads}"
        if (view / "genai_config.json").exists():
            return view
        tmp = Path(str(view) + f".{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in built.iterdir():
            if f.name != "genai_config.json":
                os.symlink(f.resolve(), tmp / f.name)
        cfg = json.loads((built / "genai_config.json").read_text())
        opts = cfg["model"]["decoder"].setdefault("session_options", {})
        opts["intra_op_num_threads"] = self.threads
        opts["inter_op_num_threads"] = 1
        (tmp / "genai_config.json").write_text(json.dumps(cfg, indent=2))
        try:
            os.rename(tmp, view)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
        return view

    def _decode(self, prompt_ids: Sequence[int], new_tokens: int, clock: TokenClock) -> tuple[int | None, str]:
        og = self._og
        length = len(prompt_ids) + new_tokens
        params = og.GeneratorParams(self._ogmodel)
        params.set_search_options(max_length=length, min_length=length, do_sample=False)
        ids = np.asarray(prompt_ids, dtype=np.int32)
        gen = og.Generator(self._ogmodel, params)      # fresh KV cache per request
        clock.start()
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()
            clock.token(int(gen.get_next_tokens()[0]))
        kv = self._present_bytes(gen)
        del gen
        return kv, "present.* tensors' bytes (allocated for prompt + new tokens: past/present share one buffer)"

    batching = None    # og.Generator decodes a batch: search option batch_size, the prompts as one [batch, prompt] array

    def _decode_batch(self, prompts: list[list[int]], new_tokens: int,
                      clocks: list[TokenClock]) -> tuple[int | None, str]:
        import time
        og = self._og
        length = len(prompts[0]) + new_tokens
        params = og.GeneratorParams(self._ogmodel)
        params.set_search_options(max_length=length, min_length=length, do_sample=False, batch_size=len(prompts))
        ids = np.asarray(prompts, dtype=np.int32)
        gen = og.Generator(self._ogmodel, params)      # fresh KV cache per batch
        t0 = time.perf_counter_ns()
        for c in clocks:
            c.start_ns = t0
        gen.append_tokens(ids)
        while not gen.is_done():
            gen.generate_next_token()
            toks = gen.get_next_tokens()
            for c, t in zip(clocks, toks):
                c.token(int(t))
        kv = self._present_bytes(gen)
        del gen
        return kv, "present.* tensors' bytes (allocated for prompt + new tokens: past/present share one buffer)"

    def _present_bytes(self, gen) -> int | None:
        total = 0
        try:
            for i in range(self.model.shape.layers):
                for kind in ("key", "value"):
                    total += gen.get_output(f"present.{i}.{kind}").nbytes
        except Exception:
            return None
        return total

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        og = self._og
        params = og.GeneratorParams(self._ogmodel)
        params.set_search_options(max_length=len(ids) + 1, do_sample=False)
        gen = og.Generator(self._ogmodel, params)
        gen.append_tokens(np.asarray(ids, dtype=np.int32))   # the prefill runs here, logits of every position
        out = np.array(gen.get_output("logits"), dtype=np.float32)[0]
        del gen
        if out.shape[0] != len(ids):
            raise RuntimeError(f"onnxruntime-genai returned logits for {out.shape[0]} of {len(ids)} positions")
        return out

    def close(self) -> None:
        self._ogmodel = None


def _ort_message(e: BaseException) -> str:
    text = " ".join(str(e).split())
    marker = "Status Message:"
    return (text.split(marker, 1)[1] if marker in text else text).strip()[:300]


def _onnx_graph(path: Path):
    import onnx
    return onnx.load(str(path), load_external_data=False)


def _matmulnbits_attrs(path: Path) -> list[dict]:
    import onnx
    g = _onnx_graph(path).graph
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in g.node if n.op_type == "MatMulNBits"]


def _ort_kv_dtype(path: Path) -> str:
    import onnx
    for i in _onnx_graph(path).graph.input:
        if i.name.startswith("past_key_values"):
            name = onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()
            return "float32" if name == "float" else name
    return "unknown"


def _onnx_weight_bytes(path: Path) -> tuple[int, int]:
    """Initializer bytes (external data lengths read from the graph), and those one decode step reads:
    one row of each table looked up by position or token (the embedding's Gather, the rotary caches)."""
    import onnx
    model = _onnx_graph(path)
    total, embed, row = 0, 0, 0
    gathered = {n.input[0] for n in model.graph.node if n.op_type in ("Gather", "GatherBlockQuantized")}
    # a table some other node also reads (a tied LM head) is read whole every step
    gathered -= {i for n in model.graph.node if n.op_type not in ("Gather", "GatherBlockQuantized") for i in n.input}
    for init in model.graph.initializer:
        ext = {e.key: e.value for e in init.external_data}
        n = int(ext["length"]) if "length" in ext else len(init.raw_data) or onnx.numpy_helper.to_array(init).nbytes
        total += n
        table = init.name in gathered or init.name.endswith(("cos_cache", "sin_cache"))
        if table and len(init.dims) == 2 and init.dims[0] > 1:
            embed += n
            row += n // int(init.dims[0])
    return total, total - embed + row


