"""How far bf16 autocast moves mixed-batch logits from fp32, for lorakit and for PEFT.

The same random adapters (r=8, q/v, SmolLM2-135M-Instruct) on both; one prefill of `--batch` rows
× 32 tokens, row i on adapter i mod `--adapters`, last position's logits. Prints the largest
|difference| of each bf16 result from its own fp32 result, and between the two.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_bf16_error.py
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from serve_mixed import (
    add_random_adapters,
    base_model,
    inputs_for,
    lorakit_model_with,
    peft_model_with,
    rows_for,
    saved_adapters,
)

from lorakit.serve import AdapterSlots, mixed_adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    source = base_model("smollm")
    names = add_random_adapters(source, "smollm", "qv", args.adapters)
    with tempfile.TemporaryDirectory() as tmp:
        folders = saved_adapters(source, names, Path(tmp))
        ours, _ = lorakit_model_with("smollm", folders)
        theirs, _ = peft_model_with("smollm", folders)
    ours.eval()
    slots = {"fp32": AdapterSlots.packing(ours, names), "bf16": AdapterSlots(ours, dtype=torch.bfloat16)}
    slots["bf16"].add(*names)
    inputs = inputs_for(args.batch, 32, ours.config.vocab_size)
    prompt = {key: inputs[key] for key in ("input_ids", "attention_mask")}
    rows = rows_for(names, args.batch, 0)

    def lorakit(dtype: str) -> torch.Tensor:
        with torch.no_grad(), mixed_adapters(ours, rows, slots[dtype]):
            return ours(**prompt, logits_to_keep=1).logits.float()

    def peft() -> torch.Tensor:
        with torch.no_grad():
            return theirs(**prompt, logits_to_keep=1, adapter_names=rows).logits.float()

    fp32 = {"lorakit": lorakit("fp32"), "peft": peft()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = {"lorakit": lorakit("bf16"), "peft": peft()}
    print(f"largest |logit| (fp32): {fp32['lorakit'].abs().max().item():.2f}")
    print(f"fp32: |lorakit - peft| = {(fp32['lorakit'] - fp32['peft']).abs().max().item():.2e}")
    for name in ("lorakit", "peft"):
        print(f"{name}: |bf16 - fp32| = {(bf16[name] - fp32[name]).abs().max().item():.3f}")
    print(f"bf16: |lorakit - peft| = {(bf16['lorakit'] - bf16['peft']).abs().max().item():.3f}")


if __name__ == "__main__":
    main()
