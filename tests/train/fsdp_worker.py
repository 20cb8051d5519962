"""Run under `torchrun --nproc_per_node 2` (see test_sharding.py): FSDP2 LoRA steps against the
same steps on one unsharded copy, then the gathered adapter and its round trip; then a tied model
only rank 0 built for real, sharded from it; rank 0 writes a JSON report to argv[1]."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

from lorakit.lora import LoraConfig, add_adapter
from lorakit.train.sharding import gather_trainable, gradient_sync, load_trainable, shard_from_main, shard_model
from tiny_models import tiny_llama

STEPS, MICRO = 2, 2  # optimizer steps; micro-batches per rank per step


def batch(rank: int, step: int, micro: int) -> torch.Tensor:
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(100 * step + 10 * micro + rank))


def loss(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids, labels=ids).loss


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_llama()
    add_adapter(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
    reference = copy.deepcopy(model)
    shard_model(model)
    frozen = model.model.layers[0].self_attn.q_proj.base_layer.weight
    sharded_fraction = frozen.to_local().numel() / frozen.numel()
    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-2)
    reference_optimizer = torch.optim.AdamW([p for p in reference.parameters() if p.requires_grad], lr=1e-2)
    for step in range(STEPS):
        for micro in range(MICRO):
            with gradient_sync(model, enabled=micro == MICRO - 1):
                (loss(model, batch(rank, step, micro)) / MICRO).backward()
            for other in range(world):  # the unsharded copy sees every rank's micro-batches
                (loss(reference, batch(other, step, micro)) / (MICRO * world)).backward()
        optimizer.step(), reference_optimizer.step()
        optimizer.zero_grad(), reference_optimizer.zero_grad()
    main_rank = rank == 0
    gathered = gather_trainable(model, main_rank)
    expected = {n: p.detach() for n, p in reference.named_parameters() if p.requires_grad}
    moved = {n: t + 1.0 for n, t in gathered.items()}
    load_trainable(model, moved, main_rank)
    again = gather_trainable(model, main_rank)
    from_main = sharded_from_main(main_rank)
    if main_rank:
        report = {
            **from_main,
            "sharded_fraction": sharded_fraction,
            "names": sorted(gathered) == sorted(expected),
            "max_diff": max(float((gathered[n] - expected[n]).abs().max()) for n in expected),
            "moved_from_start": max(float(t.abs().max()) for n, t in gathered.items() if "lora_B" in n),
            "round_trip": max(float((again[n] - moved[n]).abs().max()) for n in moved),
        }
        with open(sys.argv[1], "w") as file:
            json.dump(report, file)
    dist.destroy_process_group()


def sharded_from_main(main_rank: bool) -> dict:
    """Rank 0 builds a tied-embedding Llama with an adapter for real, rank 1 the same on the meta
    device; after `shard_from_main` every full tensor and buffer equals rank 0's original."""
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    config = tiny_llama().config
    config.tie_word_embeddings = True
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
    if main_rank:
        torch.manual_seed(1)
        model = add_adapter(LlamaForCausalLM(config), lora)
        with torch.no_grad():  # B starts at 0: give it values, so a wrong scatter shows
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.normal_()
        reference = copy.deepcopy(model)
    else:
        with init_empty_weights(include_buffers=False):
            model = add_adapter(LlamaForCausalLM(config), lora)
    shard_from_main(model, main_rank, torch.device("cpu"))
    full = {name: p.full_tensor() for name, p in model.named_parameters()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    if not main_rank:
        return {}
    expected = dict(reference.named_parameters())
    return {
        "from_main_names": sorted(full) == sorted(expected),
        "from_main_diff": max(float((full[n] - expected[n]).abs().max()) for n in expected),
        "from_main_buffers": all(torch.equal(b, dict(reference.named_buffers())[n]) for n, b in buffers.items()),
        "from_main_tied": model.lm_head.weight is model.model.embed_tokens.weight,
        "from_main_meta": any(p.is_meta for p in model.parameters()),
    }


if __name__ == "__main__":
    main()
