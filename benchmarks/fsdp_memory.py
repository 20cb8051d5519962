"""Memory per process of FSDP2 sharding (`lorakit train --fsdp`): peak RSS of each rank for a
random-weight Llama of SmolLM2-1.7B's shape (benchmarks/scale_up.py `build_shape`, bf16), trained
by 1 process (no sharding) and by 2 sharded processes on this one machine.

Each process is launched by this script itself, with the environment torchrun would give it
(RANK, WORLD_SIZE, MASTER_ADDR …), so `os.wait4` reports each rank's own peak resident set. The
run: causal-LM LoRA r=8 on q_proj,v_proj, bf16, batch 2 per process, max_length 64, 3 optimizer
steps on a few synthetic question/answer rows; OMP threads split evenly between the processes.

    python benchmarks/fsdp_memory.py [--shape 1.7b] [--steps 3] [--out benchmarks/results-fsdp-memory.json]

What it shows: the frozen weights each rank holds (lorakit's own "sharding:" line, printed by the
main process) and each rank's peak RSS: over the whole run (`wait4`), and sampled every 50 ms in
two phases, setup (load and shard) and training with evaluation. Only the main process ever loads
the checkpoint; it moves each tensor out as it scatters it, and the other ranks build the model
on the meta device (lorakit/train/sharding.py `shard_from_main`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from scale_up import build_shape, machine

GIB = 2**30
FLAGS = ["--task", "causal-lm", "--quiet", "--generation-samples", "0", "--precision", "bf16"]
FLAGS += ["--r", "8", "--target-modules", "q_proj,v_proj", "--batch-size", "2", "--max-length", "64"]


def write_rows(path: Path) -> None:
    """48 short prompt/response rows (the CLI carves validation and test from them)."""
    countries = ["france", "spain", "italy", "japan", "peru", "kenya", "chile", "egypt"]
    rows = [
        {"prompt": f"what is the capital of {c} ({i})", "response": f"the capital of {c} is on the map"}
        for i in range(6)
        for c in countries
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


def launch(world: int, model: Path, data: Path, run_dir: Path, steps: int, logs: Path) -> list[dict]:
    """Start `world` processes of one run (sharded when world > 1); each one's status and peak RSS."""
    command = [sys.executable, "-m", "lorakit.cli.main", "train", *FLAGS, "--model", str(model)]
    command += ["--data", str(data), "--output-dir", str(run_dir), "--max-steps", str(steps)]
    command += ["--fsdp"] if world > 1 else []
    port, threads = free_port(), str(max(1, (os.cpu_count() or 2) // world))
    processes = []
    for rank in range(world):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": threads}
        if world > 1:
            env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank), "LOCAL_RANK": str(rank)}
            env |= {"WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world)}
        log = open(logs / f"world{world}-rank{rank}.log", "w")  # noqa: SIM115 (closed below)
        processes.append((subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    ended = watch([process for process, _ in processes], logs / f"world{world}-rank0.log")
    results = []
    for rank, (_, log) in enumerate(processes):
        log.close()
        text = Path(log.name).read_text(errors="replace")
        held = re.search(r"sharding: .*\((.+?) of (.+?) here\)", text)
        code = ended[rank]["exit_code"]
        results.append(
            {
                "rank": rank,
                **ended[rank],
                "sharding_line": held[0] if held else None,
                "output_tail": None if code == 0 else text[-3000:],
            }
        )
    return results


def watch(processes: list[subprocess.Popen], main_log: Path) -> list[dict[str, int]]:
    """Wait for every process; each one's exit code, peak RSS over the whole run (`wait4`), and its
    resident set sampled every 50 ms in two phases: setup (load, shard) until the main log's first
    "validation: scoring" line, then training and evaluation."""
    ended: list[dict] = [{"setup_peak_rss_bytes": 0, "training_peak_rss_bytes": 0} for _ in processes]
    phase = "setup_peak_rss_bytes"
    while any("exit_code" not in entry for entry in ended):
        if phase.startswith("setup") and "validation: scoring" in main_log.read_text(errors="replace"):
            phase = "training_peak_rss_bytes"
        for entry, process in zip(ended, processes, strict=True):
            if "exit_code" in entry:
                continue
            entry[phase] = max(entry[phase], rss(process.pid))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                entry["exit_code"] = os.waitstatus_to_exitcode(status)
                entry["peak_rss_bytes"] = usage.ru_maxrss * 1024  # Linux reports KiB
        time.sleep(0.05)
    return ended


def rss(pid: int) -> int:
    """The resident set of `pid` now, in bytes (0 once it has ended)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found[1]) * 1024 if found else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="1.7b")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--model-cache", type=Path, default=Path("/tmp/lorakit-bench-models"))
    parser.add_argument("--out", default="benchmarks/results-fsdp-memory.json")
    args = parser.parse_args()
    args.model_cache.mkdir(parents=True, exist_ok=True)
    model = build_shape(args.shape, args.model_cache)
    weights = sum(f.stat().st_size for f in model.glob("*.safetensors"))
    started, load_before = time.time(), os.getloadavg()
    runs = {}
    with tempfile.TemporaryDirectory(prefix="lorakit-fsdp-memory-") as work:
        work = Path(work)
        write_rows(work / "rows.jsonl")
        for world in (1, 2):
            print(f"{world} process(es)...", flush=True)
            t0 = time.time()
            ranks = launch(world, model, work / "rows.jsonl", work / f"run-{world}", args.steps, work)
            runs[str(world)] = {"wall_seconds": round(time.time() - t0, 1), "ranks": ranks}
    results = {
        "machine": machine(),
        "model": str(model),
        "checkpoint_bytes": weights,
        "settings": {"flags": FLAGS, "steps": args.steps},
        "runs": runs,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.time() - started, 1),
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{results['machine']['cpu']}; checkpoint {weights / GIB:.2f} GiB\n")
    print("| processes | rank | peak RSS | setup (load, shard) | training + evaluation | status |")
    print("|---|---|---|---|---|---|")
    for world, run in runs.items():
        for rank in run["ranks"]:
            cells = [rank["peak_rss_bytes"], rank["setup_peak_rss_bytes"], rank["training_peak_rss_bytes"]]
            status = "ok" if rank["exit_code"] == 0 else f"exit {rank['exit_code']}"
            sizes = " | ".join(f"{cell / GIB:.2f} GiB" for cell in cells)
            print(f"| {world} | {rank['rank']} | {sizes} | {status} |")
    lines = [rank["sharding_line"] for run in runs.values() for rank in run["ranks"] if rank["sharding_line"]]
    print("\n" + "\n".join(lines))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
