"""LoRA on half-precision bases and on every available device (CUDA when present)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lorakit import LoraConfig, add_adapter, load_adapter, merge_and_unload, save_adapter

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def tiny_llama(dtype: torch.dtype, device: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
    )
    return LlamaForCausalLM(config).to(device=device, dtype=dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_bf16_base_keeps_fp32_adapter_and_bf16_output(device: str) -> None:
    model = add_adapter(tiny_llama(torch.bfloat16, device), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    q_proj = model.model.layers[0].self_attn.q_proj
    assert q_proj.lora_A["default"].weight.dtype == torch.float32
    assert q_proj.lora_A["default"].weight.device.type == device
    ids = torch.randint(0, 64, (2, 8), device=device)
    logits = model(input_ids=ids).logits
    assert logits.dtype == torch.bfloat16
    logits.float().sum().backward()
    assert q_proj.lora_B["default"].weight.grad is not None
    assert q_proj.base_layer.weight.grad is None


@pytest.mark.parametrize("device", DEVICES)
def test_merge_keeps_base_dtype_and_round_trips_on_device(device: str, tmp_path) -> None:
    model = add_adapter(
        tiny_llama(torch.bfloat16, device), LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)
    )
    ids = torch.randint(0, 64, (2, 8), device=device)
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits.float()
    save_adapter(model, tmp_path / "adapter")
    reloaded = load_adapter(tiny_llama(torch.bfloat16, device), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits.float(), unmerged)
    merged = merge_and_unload(model)
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        merged_out = merged(input_ids=ids).logits.float()
    # bf16 has ~3 significant digits: the merged weights round once more than the unmerged path.
    assert torch.allclose(merged_out, unmerged, atol=0.1, rtol=0.05)
