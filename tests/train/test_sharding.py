"""FSDP2 sharding of a LoRA model (lorakit/train/sharding.py), on 2 gloo processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lorakit.errors import LorakitError
from lorakit.train.sharding import transformer_blocks
from tiny_models import tiny_bert, tiny_llama

TESTS = Path(__file__).resolve().parents[1]


def free_port() -> str:
    """A port nobody listens on now (a fixed one may still be held by an earlier run)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


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
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
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


def test_fsdp_training_writes_the_adapter_one_process_with_accumulation_writes(
    tiny_causal_dir, capitals_jsonl, tmp_path
) -> None:
    """`torchrun --nproc_per_node 2 ... train --fsdp` against one process with
    --gradient-accumulation-steps 2 and the same per-rank batch and seed (no dropout): the same
    adapter within 1e-4, complete, written once; metrics, report and samples from the main rank."""
    from safetensors.torch import load_file
    from test_train_generative import generative_args

    from lorakit.cli.main import main

    common = ["--lora-dropout", "0", "--batch-size", "8", "--max-steps", "4", "--generation-samples", "2"]
    single = tmp_path / "single"
    assert (
        main(
            generative_args(
                tiny_causal_dir, capitals_jsonl, single, "causal-lm", *common, "--gradient-accumulation-steps", "2"
            )
        )
        == 0
    )
    sharded = tmp_path / "fsdp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    args = generative_args(tiny_causal_dir, capitals_jsonl, sharded, "causal-lm", *common, "--fsdp")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [*launcher, "-m", "lorakit.cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected = load_file(single / "adapter" / "adapter_model.safetensors")
    written = load_file(sharded / "adapter" / "adapter_model.safetensors")
    assert written.keys() == expected.keys() and expected
    for name, tensor in expected.items():
        assert written[name].shape == tensor.shape
        assert float((written[name] - tensor).abs().max()) <= 1e-4, name
    metrics = json.loads((sharded / "metrics.json").read_text())
    assert metrics["steps"] == 4 and (sharded / "report.html").is_file()
    generations = json.loads((sharded / "generations.json").read_text())  # made on every rank alike
    assert generations == json.loads((single / "generations.json").read_text()) and generations
    assert result.stdout.count("test loss") <= 1  # the summary once, from the main rank


def test_fsdp_in_one_process_names_the_launch(tiny_causal_dir, capitals_jsonl, tmp_path, capsys) -> None:
    from test_train_generative import generative_args

    from lorakit.cli.main import main

    out = tmp_path / "run"
    assert main(generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", "--fsdp")) == 2
    error = capsys.readouterr().err.strip()
    assert "torchrun --nproc_per_node N -m lorakit.cli.main train" in error and len(error.splitlines()) == 1
    assert not out.exists()


def test_fsdp_resume_ends_where_the_uninterrupted_run_ends(tiny_causal_dir, capitals_jsonl, tmp_path) -> None:
    """A sharded run's step-4 checkpoint (adapter and AdamW state gathered on the main rank),
    resumed by a sharded run, ends with the uninterrupted run's adapter and history."""
    import shutil

    from safetensors.torch import load_file
    from test_train_generative import generative_args

    extra = ["--lora-dropout", "0", "--batch-size", "8", "--max-steps", "6", "--checkpoint-steps", "2", "--fsdp"]
    extra += ["--generation-samples", "0"]
    straight = tmp_path / "straight"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = [
        *launcher,
        "-m",
        "lorakit.cli.main",
        *generative_args(tiny_causal_dir, capitals_jsonl, straight, "causal-lm", *extra),
    ]
    assert subprocess.run(first, env=env, capture_output=True, text=True, timeout=600).returncode == 0
    # The same run as if killed after step 4: its folder then, pointing at that checkpoint.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(straight, interrupted)
    shutil.rmtree(interrupted / "checkpoints" / "step-6")
    (interrupted / "checkpoints" / "latest").write_text("step-4")
    for name in ("metrics.json", "history.json", "report.html"):
        (interrupted / name).unlink()
    resume = [*launcher, "-m", "lorakit.cli.main", "train", "--resume", str(interrupted), "--quiet"]
    result = subprocess.run(resume, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    a = load_file(straight / "adapter" / "adapter_model.safetensors")
    b = load_file(interrupted / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((straight / "history.json").read_text()) == json.loads((interrupted / "history.json").read_text())


@pytest.mark.parametrize(("extra", "words"), [({"quantize": "nf4"}, "--quantize"), ({"method": "full"}, "method full")])
def test_fsdp_refuses_what_it_does_not_shard_yet(extra, words) -> None:
    from lorakit.train.config import TrainConfig

    with pytest.raises(LorakitError, match=f"fsdp shards LoRA training of a full-precision base.*{words}"):
        TrainConfig(task="causal-lm", fsdp=True, **extra)
