"""FSDP2 sharding of a LoRA model (lorakit/train/sharding.py), on 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lorakit.errors import LorakitError
from lorakit.train.sharding import transformer_blocks
from tiny_models import tiny_bert, tiny_llama

TESTS = Path(__file__).resolve().parents[1]


def test_blocks_are_the_classes_transformers_never_splits() -> None:
    assert [type(b).__name__ for b in transformer_blocks(tiny_llama())] == ["LlamaDecoderLayer"] * 2
    bert = [type(b).__name__ for b in transformer_blocks(tiny_bert())]
    assert bert == ["BertLayer", "BertLayer", "BertEmbeddings"]  # innermost (last) first


def test_a_model_without_blocks_is_refused() -> None:
    import torch

    with pytest.raises(LorakitError, match="names no transformer blocks to shard"):
        transformer_blocks(torch.nn.Linear(2, 2))


def test_two_sharded_ranks_train_like_one_process_and_gather_the_whole_adapter(tmp_path) -> None:
    """Each rank holds half of every frozen weight; 2 steps of 2 micro-batches per rank (gradient
    sync off for the first) end where one unsharded copy fed all 4 micro-batches per step ends;
    the gathered adapter has every LoRA tensor, and scattering it back round-trips."""
    report = tmp_path / "report.json"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29583"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [*launcher, str(TESTS / "train" / "fsdp_worker.py"), str(report)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    facts = json.loads(report.read_text())
    assert facts["sharded_fraction"] == 0.5
    assert facts["names"] and facts["moved_from_start"] > 1e-3
    assert facts["max_diff"] <= 1e-5
    assert facts["round_trip"] == 0.0
