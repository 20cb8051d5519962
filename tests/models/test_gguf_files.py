"""`--model path/to/model.gguf`: any GGUF file of a supported architecture is checked, converted
once into lorakit's cache and loads like the GGUF itself; damaged or unsupported files fail with
one line and leave no cache folder behind."""

from __future__ import annotations

import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lorakit.errors import LorakitError
from lorakit.models import resolve_model
from lorakit.models.gguf_cache import READY_MARKER, cache_name

HIDDEN, LAYERS, HEADS, KV_HEADS, FFN = 64, 2, 4, 2, 128
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n"]


def byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 bytes, in its order: a complete byte-level BPE base vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(c) for c in printable] + [chr(256 + i) for i in range(len(others))]


def write_tiny_gguf(path: Path, architecture: str = "llama", seed: int = 0, q_rows: int = HIDDEN) -> Path:
    """A tiny random fp32 Llama in GGUF, tensors named as llama.cpp names them, with a byte-level
    BPE tokenizer of 263 tokens (3 specials, 256 bytes, 4 merges): converts in well under a second.

    llama.cpp stores q/k permuted for its rope layout and transformers undoes that on load; random
    tensors are fine, as both loads compared read this one file. `q_rows` != HIDDEN breaks layer 0.
    """
    tokens = SPECIALS + byte_level_alphabet() + [merge.replace(" ", "") for merge in MERGES]
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIALS) + [1] * (len(tokens) - len(SPECIALS)))  # 3: control, 1: normal
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    kv = KV_HEADS * HIDDEN // HEADS
    shapes = {"token_embd.weight": (len(tokens), HIDDEN), "output_norm.weight": (HIDDEN,)}
    shapes["output.weight"] = (len(tokens), HIDDEN)  # untied: the lm_head is checked too
    for i in range(LAYERS):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (HIDDEN,),
            f"blk.{i}.attn_q.weight": (q_rows if i == 0 else HIDDEN, HIDDEN),
            f"blk.{i}.attn_k.weight": (kv, HIDDEN),
            f"blk.{i}.attn_v.weight": (kv, HIDDEN),
            f"blk.{i}.attn_output.weight": (HIDDEN, HIDDEN),
            f"blk.{i}.ffn_norm.weight": (HIDDEN,),
            f"blk.{i}.ffn_gate.weight": (FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": (FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": (HIDDEN, FFN),
        }
    for name, shape in shapes.items():
        writer.add_tensor(name, (rng.standard_normal(shape) * 0.1).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty lorakit cache for this test."""
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def cached_folders(cache: Path) -> list[Path]:
    """The folders in the cache's models/ (lock files do not count)."""
    models = cache / "models"
    return sorted(p for p in models.iterdir() if p.is_dir()) if models.is_dir() else []


def assert_one_line_error(error: pytest.ExceptionInfo[LorakitError], *parts: str) -> None:
    """A single-line message that contains each of `parts`."""
    message = str(error.value)
    assert "\n" not in message, message
    for part in parts:
        assert part in message, message


def test_gguf_file_converts_once_and_matches_loading_the_gguf(tmp_path: Path, cache: Path):
    gguf_file = write_tiny_gguf(tmp_path / "tiny-llama.gguf")
    folder = Path(resolve_model(str(gguf_file)))
    assert folder.parent == cache / "models" and folder.name == cache_name(gguf_file)
    assert folder.name.startswith("tiny-llama-") and (folder / READY_MARKER).is_file()
    marker_time = (folder / READY_MARKER).stat().st_mtime_ns
    assert resolve_model(str(gguf_file)) == str(folder)
    assert (folder / READY_MARKER).stat().st_mtime_ns == marker_time, "the second use reads the cache"

    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    direct = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=gguf_file.name, dtype=torch.float32).eval()
    assert converted.dtype == torch.float32 and converted.config.num_hidden_layers == LAYERS
    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer("the cat in the hat", return_tensors="pt").input_ids
    assert ids.shape[1] > 1
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, direct(ids).logits)


def test_two_files_with_one_name_never_share_a_cache_folder(tmp_path: Path, cache: Path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = write_tiny_gguf(tmp_path / "a" / "model.gguf", seed=0)
    second = write_tiny_gguf(tmp_path / "b" / "model.gguf", seed=1)
    assert cache_name(first) != cache_name(second)
    before = cache_name(first)
    write_tiny_gguf(first, seed=2)  # rewritten in place: a stale conversion must not be reused
    os.utime(first, ns=(1, 1))
    assert cache_name(first) != before


def test_random_bytes_are_not_a_readable_gguf(tmp_path: Path, cache: Path):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(LorakitError) as error:
        resolve_model(str(junk))
    assert_one_line_error(error, str(junk), "is not a readable GGUF file (GGUF magic invalid)")
    assert cached_folders(cache) == []


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["tensor-data", "header"])
def test_truncated_gguf_is_not_readable(tmp_path: Path, cache: Path, keep: float):
    whole = write_tiny_gguf(tmp_path / "whole.gguf").read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(LorakitError) as error:
        resolve_model(str(cut))
    assert_one_line_error(error, "is not a readable GGUF file", "download it again")
    assert cached_folders(cache) == []


def test_unsupported_architecture_names_it_and_the_supported_ones(tmp_path: Path, cache: Path):
    foo = write_tiny_gguf(tmp_path / "foo.gguf", architecture="foo")
    with pytest.raises(LorakitError) as error:
        resolve_model(str(foo))
    assert_one_line_error(error, "architecture 'foo'", "supported: llama, mistral, qwen2")
    assert "tokenizer" not in str(error.value).split("supported:")[1], "metadata sections are no architectures"
    assert cached_folders(cache) == []


def test_a_failed_conversion_leaves_no_cache_folder(tmp_path: Path, cache: Path):
    """A readable llama GGUF that transformers cannot turn into a model: a q weight of the wrong shape."""
    bad = write_tiny_gguf(tmp_path / "bad.gguf", q_rows=HIDDEN // 2)
    with pytest.raises(LorakitError) as error:
        resolve_model(str(bad))
    assert_one_line_error(error, f"cannot convert {bad} into a transformers model (", "pass a model folder")
    assert cached_folders(cache) == []


@pytest.mark.parametrize("missing", ["missing.gguf", "./no/such/folder", "/no/such/model", "~/no-such-model"])
def test_missing_path_is_an_error_not_a_hub_lookup(tmp_path: Path, cache: Path, missing: str):
    with pytest.raises(LorakitError) as error:
        resolve_model(missing)
    assert_one_line_error(error, f"no such model folder or file: {missing};")
    assert cached_folders(cache) == []


def test_a_hub_id_is_still_returned_as_given(cache: Path):
    assert resolve_model("someone/some-model") == "someone/some-model"
