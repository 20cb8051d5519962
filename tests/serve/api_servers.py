"""Real `lorakit serve` processes on tiny models for the HTTP tests, and the folders they serve.

Bases are saved as folders with offline tokenizers; adapters carry random non-zero LoRA weights
(and heads) and a lorakit.json naming their base, as `lorakit train` leaves them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
import torch
from serve_helpers import SEQ2SEQ_TARGETS, add_random_adapter, tiny_seq2seq, tokenizer
from transformers import LlamaConfig, LlamaForCausalLM

from adapter_folders import save_tokenizer
from lorakit.lora import save_adapter
from lorakit.models import load_model
from tiny_models import CHATML, tiny_bert, word_tokenizer

STARTUP_TIMEOUT_S = 180


def classification_base(folder: Path) -> Path:
    """tiny_bert's encoder without a head (as a pretrained encoder is published: every adapter
    brings its own head, of any width) and a word tokenizer over `w2 … w99`."""
    tiny_bert().bert.save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def causal_base(folder: Path, max_positions: int = 64, hidden: int = 32) -> Path:
    """A 2-layer Llama (hidden 32) with a ChatML word tokenizer: `w4 … w99` are words, `<|im_end|>` ends a turn."""
    specials = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {token: i for i, token in enumerate(specials)} | {f"w{i}": i for i in range(len(specials), 100)}
    vocab |= {role: len(vocab) + i for i, role in enumerate(["system", "user", "assistant"])}
    tokenizer = word_tokenizer(
        vocab,
        CHATML,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def seq2seq_base(folder: Path) -> Path:
    """`tiny_seq2seq("t5")` with a word tokenizer over `w4 … w99` that ends every input with [SEP]
    (as T5's ends it with </s>), which also ends generation; no chat template; 64 positions."""
    tiny_seq2seq("t5").save_pretrained(folder)
    tokenizer(classifier=False, seq2seq=True).save_pretrained(folder)
    return folder


def classifier_adapter(base: Path, folder: Path, labels: list[str], seed: int, r: int = 4, **info) -> Path:
    """A SEQ_CLS adapter (q/v + a random `len(labels)`-way head) for `base`, with lorakit.json."""
    model = load_model(str(base), "SEQ_CLS", num_labels=len(labels))
    add_random_adapter(model, "default", r, "SEQ_CLS", ["query", "value"], seed)
    save_adapter(model, folder)
    facts = {"task": "classification", "base_model": str(base), "label_names": labels, "max_length": 32} | info
    (folder / "lorakit.json").write_text(json.dumps(facts))
    return folder


def generator_adapter(base: Path, folder: Path, seed: int, r: int = 4) -> Path:
    """A CAUSAL_LM adapter (q/v, random non-zero A and B) for `base`, with lorakit.json."""
    model = load_model(str(base), "CAUSAL_LM")
    add_random_adapter(model, "default", r, "CAUSAL_LM", ["q_proj", "v_proj"], seed)
    save_adapter(model, folder)
    (folder / "lorakit.json").write_text(json.dumps({"task": "causal-lm", "base_model": str(base)}))
    return folder


def seq2seq_adapter(base: Path, folder: Path, seed: int, r: int = 4) -> Path:
    """A SEQ_2_SEQ_LM adapter (every attention projection, random non-zero A and B) for `base`, with lorakit.json."""
    model = load_model(str(base), "SEQ_2_SEQ_LM")
    add_random_adapter(model, "default", r, "SEQ_2_SEQ_LM", SEQ2SEQ_TARGETS["t5"], seed)
    save_adapter(model, folder)
    (folder / "lorakit.json").write_text(json.dumps({"task": "seq2seq", "base_model": str(base)}))
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(base: Path, adapters: Path, log: Path, *flags: str, env: dict | None = None) -> Iterator[str]:
    """`lorakit serve` in a subprocess (one torch thread) on a free loopback port; yields its URL.

    On exit it is stopped with SIGINT (Ctrl-C), which must end it cleanly (status 0).
    """
    port = free_port()
    command = [sys.executable, "-m", "lorakit.cli.main", "serve", "--base", str(base), "--adapters", str(adapters)]
    command += ["--port", str(port), "--threads", "1", *flags]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, url, log)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            status = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert status == 0, f"lorakit serve exited with {status} on Ctrl-C:\n{log.read_text()}"


def wait_until_up(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"lorakit serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    raise AssertionError(f"lorakit serve did not answer /health within {STARTUP_TIMEOUT_S} s:\n{log.read_text()}")
