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
    # shard_from_main: rank 1 built on the meta device and received every tensor from rank 0.
    assert facts["from_main_names"] and facts["from_main_tied"] and facts["from_main_buffers"]
    assert facts["from_main_diff"] == 0.0 and not facts["from_main_meta"]


@pytest.fixture
def dropout_free_classifier_dir(tiny_classifier_dir, tmp_path) -> Path:
    """The tiny BERT without dropout: ranks and micro-batches cannot then draw different masks."""
    import shutil

    folder = tmp_path / "bert-no-dropout"
    shutil.copytree(tiny_classifier_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _sharded_and_single(
    args: list[str], tmp_path: Path, accelerate: bool = False
) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """Run `lorakit ARGS --output-dir X` once in one process with --gradient-accumulation-steps 2
    and once as 2 sharded processes: `torchrun ... --fsdp`, or (`accelerate`) `accelerate launch
    --config_file examples/fsdp.yaml` without the flag. Returns (single, sharded, sharded result)."""
    from lorakit.cli.main import main

    single, sharded = tmp_path / "single", tmp_path / "fsdp"
    assert main([*args, "--output-dir", str(single), "--gradient-accumulation-steps", "2"]) == 0
    if accelerate:
        config = TESTS.parent / "examples" / "fsdp.yaml"
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
        launcher += ["--main_process_port", free_port()]
        flags = []
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        launcher += ["--master_port", free_port()]
        flags = ["--fsdp"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [*launcher, "-m", "lorakit.cli.main", *args, "--output-dir", str(sharded), *flags]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # Measured and printed once: the frozen weights each process holds.
    assert result.stderr.count("sharding: each of 2 processes holds 1/2 of the frozen weights") == 1
    return single, sharded, result


def _same_adapter(single: Path, sharded: Path) -> None:
    from safetensors.torch import load_file

    expected = load_file(single / "adapter" / "adapter_model.safetensors")
    written = load_file(sharded / "adapter" / "adapter_model.safetensors")
    assert written.keys() == expected.keys() and expected
    for name, tensor in expected.items():
        assert written[name].shape == tensor.shape
        assert float((written[name] - tensor).abs().max()) <= 1e-4, name


def test_fsdp_causal_lm_writes_the_adapter_one_process_with_accumulation_writes(
    tiny_causal_dir, capitals_jsonl, tmp_path
) -> None:
    """`torchrun --nproc_per_node 2 ... train --fsdp` against one process with
    --gradient-accumulation-steps 2 and the same per-rank batch and seed (no dropout): the same
    adapter within 1e-4, complete, written once; metrics, report and samples from the main rank."""
    from test_train_generative import generative_args

    common = ["--lora-dropout", "0", "--batch-size", "8", "--max-steps", "4", "--generation-samples", "2"]
    args = generative_args(tiny_causal_dir, capitals_jsonl, tmp_path / "unused", "causal-lm", *common)
    args = [a for a in args if a not in ("--output-dir", str(tmp_path / "unused"))]
    single, sharded, result = _sharded_and_single(args, tmp_path)
    _same_adapter(single, sharded)
    metrics = json.loads((sharded / "metrics.json").read_text())
    assert metrics["steps"] == 4 and (sharded / "report.html").is_file()
    generations = json.loads((sharded / "generations.json").read_text())  # made on every rank alike
    assert generations == json.loads((single / "generations.json").read_text()) and generations
    assert result.stdout.count("test loss") == 1  # the summary once, from the main rank
    # PEFT loads the sharded run's adapter and computes what the single-process one computes.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[5, 9, 12, 7, 3]])
    logits = {}
    for run in (single, sharded):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_causal_dir), run / "adapter")
        with torch.no_grad():
            logits[run] = model.eval()(input_ids=ids).logits
    torch.testing.assert_close(logits[sharded], logits[single], rtol=0, atol=1e-4)
    _same_served_completions(tiny_causal_dir, single, sharded, tmp_path)


def _same_served_completions(base: Path, single: Path, sharded: Path, tmp_path: Path) -> None:
    """`lorakit serve` loads both runs' adapters and answers each prompt alike (greedy)."""
    import shutil

    import requests

    sys.path.insert(0, str(TESTS / "serve"))
    from api_servers import running_server

    adapters = tmp_path / "adapters"
    for name, run in (("single", single), ("sharded", sharded)):
        shutil.copytree(run / "adapter", adapters / name)
    prompts = ["what is the capital of france", "answer briefly what is the capital of peru"]
    answers: dict[str, list[str]] = {}
    with running_server(base, adapters, tmp_path / "serve.log") as url:
        for name in ("single", "sharded", str(base)):
            body = {"model": name, "prompt": prompts, "max_tokens": 8, "temperature": 0}
            response = requests.post(f"{url}/v1/completions", json=body, timeout=120)
            assert response.status_code == 200, response.text
            answers[name] = [choice["text"] for choice in response.json()["choices"]]
    assert answers["sharded"] == answers["single"] != answers[str(base)]


def test_fsdp_classification_writes_the_adapter_one_process_with_accumulation_writes(
    dropout_free_classifier_dir, sentiment_csv, tmp_path
) -> None:
    """The same for MiniLM-style classification, launched by `accelerate launch` with the FSDP
    config shipped in examples/ (no --fsdp flag: the config turns it on); the new head included."""
    from tiny_runs import tiny_flags

    args = ["train", *tiny_flags(dropout_free_classifier_dir, sentiment_csv), "--max-steps", "4", "--lora-dropout", "0"]
    single, sharded, _ = _sharded_and_single(args, tmp_path, accelerate=True)
    _same_adapter(single, sharded)  # the LoRA tensors and the new head
    single_metrics = json.loads((single / "metrics.json").read_text())
    sharded_metrics = json.loads((sharded / "metrics.json").read_text())
    assert sharded_metrics["accuracy"] == single_metrics["accuracy"]
    assert sharded_metrics["loss"] == pytest.approx(single_metrics["loss"], abs=1e-5)


@pytest.fixture
def wide_causal_dir(tiny_causal_dir, tmp_path) -> Path:
    """The tiny Llama at hidden 256: each 4-bit weight then has an even number of scale groups."""
    import shutil

    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path / "wide-llama"
    shutil.copytree(tiny_causal_dir, folder)
    config = LlamaConfig.from_pretrained(folder)
    config.update({"hidden_size": 256, "intermediate_size": 512, "num_key_value_heads": 4})
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_fsdp_shards_a_4_bit_base_as_one_process_trains_it(wide_causal_dir, capitals_jsonl, tmp_path) -> None:
    """QLoRA under FSDP2, with activation checkpointing: torchao's NF4 weights split over 2
    processes (codes and scales alike); the adapter equals one process's with accumulation 2.
    Batches of 6 split the 16 test rows into 3 scoring batches: one rank is dealt one fewer and
    must still join the third forward."""
    from test_train_generative import generative_args

    common = ["--lora-dropout", "0", "--batch-size", "6", "--max-steps", "3", "--generation-samples", "0"]
    common += ["--quantize", "nf4", "--gradient-checkpointing", "on"]
    args = generative_args(wide_causal_dir, capitals_jsonl, tmp_path / "unused", "causal-lm", *common)
    args = [a for a in args if a not in ("--output-dir", str(tmp_path / "unused"))]
    single, sharded, _ = _sharded_and_single(args, tmp_path)
    _same_adapter(single, sharded)
    single_metrics = json.loads((single / "metrics.json").read_text())
    sharded_metrics = json.loads((sharded / "metrics.json").read_text())
    assert sharded_metrics["test_examples"] == single_metrics["test_examples"] == 16
    assert sharded_metrics["loss"] == pytest.approx(single_metrics["loss"], abs=1e-4)


def test_fewer_batches_than_processes_stops_every_process_in_one_line(
    tiny_causal_dir, capitals_jsonl, tmp_path
) -> None:
    from test_train_generative import generative_args

    out = tmp_path / "run"
    args = generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", "--batch-size", "8", "--fsdp")
    for process in _ranks_by_hand([[*args, "--max-train-examples", "5"]] * 2):
        assert process.wait(timeout=300) == 2
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        last = stderr.strip().splitlines()[-1]
        assert last.startswith("lorakit train: error: the training split has 5 rows, fewer than one batch per process")
    assert not out.exists()


def test_a_4_bit_weight_that_does_not_split_is_refused_by_name(tiny_causal_dir) -> None:
    from transformers import AutoModelForCausalLM

    from lorakit.quant import quantize_model
    from lorakit.train.sharding import check_shardable

    model = AutoModelForCausalLM.from_pretrained(tiny_causal_dir)  # hidden 128: one scale group a weight
    quantize_model(model, "nf4")
    check_shardable(model, 1)
    with pytest.raises(LorakitError, match=r"q_proj.weight \(128 rows, 1 scale group\) does not split into 2"):
        check_shardable(model, 2)


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


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"quantize": "bnb-nf4"}, "fsdp cannot shard bitsandbytes' 4-bit weights.*use --quantize nf4"),
        ({"method": "full"}, "fsdp shards LoRA training; it cannot be combined with method full"),
    ],
)
def test_fsdp_refuses_what_it_does_not_shard(extra, words) -> None:
    from lorakit.train.config import TrainConfig

    with pytest.raises(LorakitError, match=words):
        TrainConfig(task="causal-lm", fsdp=True, **extra)


def _ranks_by_hand(arguments: list[list[str]]) -> list[subprocess.Popen]:
    """One `lorakit ARGS` process per entry, each with the environment torchrun would give it (no
    launcher to report on them or to tear the job down); stderr piped."""
    port, processes = free_port(), []
    for rank, args in enumerate(arguments):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(len(arguments)))
        env.update(LOCAL_WORLD_SIZE=str(len(arguments)))
        command = [sys.executable, "-m", "lorakit.cli.main", *args]
        processes.append(subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True))
    return processes


def test_processes_launched_with_different_settings_all_stop_in_one_line(
    tiny_causal_dir, capitals_jsonl, tmp_path
) -> None:
    """Two processes of one job (the env torchrun sets, by hand) given different --lr: each ends
    with the same one-line error naming the setting, before anything is written."""
    from test_train_generative import generative_args

    arguments = [
        generative_args(tiny_causal_dir, capitals_jsonl, tmp_path / "run", "causal-lm", "--lr", lr, "--fsdp")
        for lr in ("1e-2", "5e-3")
    ]
    for process in _ranks_by_hand(arguments):
        assert process.wait(timeout=300) == 2
        stderr = process.stderr.read()
        assert "Traceback" not in stderr
        assert "given different settings: lr is 0.01 on rank 0 and 0.005 on rank 1" in stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_two_nodes_on_one_machine_train_like_one_process(tiny_causal_dir, capitals_jsonl, tmp_path) -> None:
    """Two `torchrun --nnodes 2 --nproc_per_node 1` launches meeting at one c10d rendezvous stand in
    for two machines: the sharded run's adapter equals one process with accumulation 2."""
    from test_train_generative import generative_args

    from lorakit.cli.main import main

    common = ["--lora-dropout", "0", "--batch-size", "8", "--max-steps", "3", "--generation-samples", "0"]
    single = tmp_path / "single"
    args = generative_args(tiny_causal_dir, capitals_jsonl, single, "causal-lm", *common)
    assert main([*args, "--gradient-accumulation-steps", "2"]) == 0
    sharded = tmp_path / "nodes"
    args = generative_args(tiny_causal_dir, capitals_jsonl, sharded, "causal-lm", *common, "--fsdp")
    endpoint = f"127.0.0.1:{free_port()}"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1"]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "lorakit-test"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    nodes = [
        subprocess.Popen([*launcher, "-m", "lorakit.cli.main", *args], env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for node in nodes:
        assert node.wait(timeout=600) == 0, node.stderr.read()[-3000:]
    _same_adapter(single, sharded)


def test_a_killed_rank_ends_the_other_in_one_line_and_the_job_resumes(
    tiny_causal_dir, capitals_jsonl, tmp_path
) -> None:
    """kill -9 of rank 1 mid-run (no launcher to tear the job down, as when a machine dies): rank 0
    stops within 60 s with one line saying so and how to resume; the same job resumed completes."""
    import signal
    import time

    from test_train_generative import generative_args

    out = tmp_path / "run"
    extra = ["--lora-dropout", "0", "--batch-size", "8", "--max-steps", "300", "--checkpoint-steps", "20"]
    args = generative_args(tiny_causal_dir, capitals_jsonl, out, "causal-lm", *extra, "--generation-samples", "0")
    args += ["--fsdp", "--eval-steps", "100"]
    ranks = _ranks_by_hand([args, args])
    pointer, deadline = out / "checkpoints" / "latest", time.time() + 300
    while not pointer.exists() and time.time() < deadline:
        assert ranks[0].poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    ranks[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = ranks[0].wait(timeout=60)
    stderr = ranks[0].stderr.read()
    assert code == 2 and time.time() - killed < 60, stderr[-3000:]
    assert "Traceback" not in stderr
    assert "another process of this job stopped" in stderr.strip().splitlines()[-1]
    assert f"--resume {out}" in stderr and not (out / "metrics.json").exists()
    ranks[1].wait()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", free_port()]
    resume = [*launcher, "-m", "lorakit.cli.main", "train", "--resume", str(out), "--quiet"]
    result = subprocess.run(resume, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 300
