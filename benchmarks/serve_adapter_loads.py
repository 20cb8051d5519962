"""Time to load N adapters one after another onto one base, as `lorakit serve` does (load + pack).

The adapters are those of `serve_mixed.py` (r=8, random non-zero weights) on SmolLM2-135M-Instruct,
on q/v or on all seven Linear layers of each block. PEFT's loading times for the same adapters are
in benchmarks/results-serve.json ("load_seconds"), from the full serve_mixed.py run.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_adapter_loads.py --targets all --adapters 128
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from serve_mixed import MODELS, add_random_adapters, base_model, lorakit_model_with, saved_adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="smollm")
    parser.add_argument("--targets", choices=["qv", "all"], default="all")
    parser.add_argument("--adapters", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = base_model(args.model)
    names = add_random_adapters(source, args.model, args.targets, args.adapters)
    with tempfile.TemporaryDirectory() as tmp:
        folders = saved_adapters(source, names, Path(tmp))
        del source
        _, seconds = lorakit_model_with(args.model, folders)
    print(f"lorakit loaded and packed {len(folders)} {args.model} {args.targets} adapters in {seconds:.1f} s")


if __name__ == "__main__":
    main()
