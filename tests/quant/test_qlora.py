"""QLoRA end to end on tiny models: what gets quantized, LoRA training on top, save/load, merging."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from quant_models import batch, llama
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from lorakit import LoraConfig, LorakitError, add_adapter, load_adapter, merge_and_unload, save_adapter
from lorakit.lora import LoraLinear
from lorakit.quant import (
    QUANT_METHODS,
    Nf4Linear,
    dequantize_model,
    is_quantized,
    quantize_model,
    quantized_weight_bytes,
)
from tiny_models import ARCHS, logits

BODY = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def qlora(init_lora_weights: bool = False, seed: int = 0, **lora: object) -> nn.Module:
    """A tiny Llama quantized to NF4 with an all-linear LoRA adapter on top."""
    model = llama(seed=seed)
    quantize_model(model)
    torch.manual_seed(seed + 1)
    lora = {"target_modules": "all-linear", **lora}
    config = LoraConfig(r=8, lora_alpha=16, init_lora_weights=init_lora_weights, **lora)
    return add_adapter(model, config)


def test_realistic_widths_store_under_a_sixth_of_fp32_and_leave_heads_and_embeddings_alone() -> None:
    model = llama(hidden=256, intermediate=512, init_std=0.02)
    embeddings, head = model.model.embed_tokens.weight.clone(), model.lm_head.weight.clone()
    body_params = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith(BODY))
    reference = logits(model, batch())
    quantize_model(model)
    sizes = quantized_weight_bytes(model)
    assert sizes["quantized_linears"] == 2 * len(BODY)
    assert (sizes["fp32_bytes"], sizes["bf16_bytes"]) == (4 * body_params, 2 * body_params)
    assert sizes["quantized_linear_bytes"] <= 0.16 * sizes["fp32_bytes"]  # measured 0.129
    assert is_quantized(model)
    assert all(isinstance(model.model.layers[0].mlp.get_submodule(n), Nf4Linear) for n in ("gate_proj", "down_proj"))
    assert type(model.lm_head) is nn.Linear and torch.equal(model.lm_head.weight, head)
    assert torch.equal(model.model.embed_tokens.weight, embeddings)
    assert all(type(m) is not Nf4Linear for n, m in model.named_modules() if "norm" in n)
    quantized = logits(model, batch())
    # Gaussian weights at the pretrained scale, two blocks: ~9 % error per weight, ≈ 0.18 on the logits.
    assert ((quantized - reference).norm() / reference.norm()).item() < 0.25


def test_skip_modules_and_unblockable_widths_stay_full_precision() -> None:
    model = llama()
    model.model.layers[0].mlp.extra = nn.Linear(7, 3)  # 21 values: no block of 64 fits
    with pytest.warns(UserWarning, match=r"left 1 linear layer\(s\) unquantized.*layers\.0\.mlp\.extra"):
        quantize_model(model, skip_modules=["down_proj"])
    assert type(model.model.layers[0].mlp.extra) is nn.Linear
    assert all(type(layer.mlp.down_proj) is nn.Linear for layer in model.model.layers)
    assert isinstance(model.model.layers[1].mlp.up_proj, Nf4Linear)


def test_lora_on_nf4_trains_only_the_adapter() -> None:
    model = qlora(init_lora_weights=True)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if type(p.data) is torch.Tensor}
    codes = [m.weight.quantized_data.clone() for m in model.modules() if isinstance(m, Nf4Linear)]
    sizes = quantized_weight_bytes(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    inputs = batch(size=4, length=16)
    losses = []
    model.train()
    for _ in range(30):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses  # measured 4.8 → 0.3
    for name, p in model.named_parameters():
        if name in before:
            assert torch.equal(p, before[name]) != (".lora_" in name), name
    after = [m.weight.quantized_data for m in model.modules() if isinstance(m, Nf4Linear)]
    assert all(torch.equal(a, c) for a, c in zip(after, codes, strict=True))
    assert quantized_weight_bytes(model) == sizes


def test_gradients_flow_through_quantized_layers_to_earlier_lora_layers() -> None:
    # LoRA on block 0 only: its gradient has to pass back through every quantized linear of block 1.
    model = qlora(target_modules=list(BODY), layers_to_transform=[0])
    dense = qlora(target_modules=list(BODY), layers_to_transform=[0])
    dequantize_model(dense, torch.float32)
    inputs = batch()
    for m in (model, dense):
        m(**inputs, labels=inputs["input_ids"]).loss.backward()
    q_proj = model.model.layers[0].self_attn.q_proj
    assert q_proj.lora_A["default"].weight.grad.abs().sum() > 0
    assert not isinstance(model.model.layers[1].self_attn.q_proj, LoraLinear)
    # The NF4 backward is the dense backward with the dequantized weight.
    for (name, p), (dense_name, p_dense) in zip(model.named_parameters(), dense.named_parameters(), strict=True):
        assert name == dense_name
        if p.requires_grad:
            assert torch.allclose(p.grad, p_dense.grad, atol=1e-6, rtol=1e-4), name
        else:
            assert p.grad is None, name


def test_bf16_autocast_trains_with_fp32_adapter_weights() -> None:
    model = qlora()
    inputs = batch()
    fp32 = logits(model, inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**inputs, labels=inputs["input_ids"])
    assert out.logits.dtype == torch.bfloat16
    assert torch.allclose(out.logits.float(), fp32, atol=0.05, rtol=0.05)
    out.loss.backward()
    lora_B = model.model.layers[0].self_attn.q_proj.lora_B["default"].weight
    assert lora_B.dtype == torch.float32 and torch.isfinite(lora_B.grad).all() and lora_B.grad.abs().sum() > 0


def test_dequantized_model_computes_what_the_quantized_one_did() -> None:
    model = qlora()
    inputs = batch()
    quantized = logits(model, inputs)
    dequantize_model(model, torch.float32)
    assert not is_quantized(model)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj, LoraLinear) and type(q_proj.base_layer) is nn.Linear
    # Same weights, same fp32 matmul; only the bias-free addition order may differ.
    assert torch.allclose(logits(model, inputs), quantized, atol=1e-5, rtol=1e-5)


def test_merge_needs_dequantize_first_and_then_reproduces_the_trained_outputs() -> None:
    model = qlora()  # random A and B: the adapter changes the outputs
    inputs = batch()
    with_adapter = logits(model, inputs)
    with pytest.raises(LorakitError, match=r"quantized base layer; call lorakit\.quant\.dequantize_model"):
        merge_and_unload(model)
    dequantize_model(model, torch.float32)
    merged = merge_and_unload(model)
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    # x·(Ŵ + s·B·A)ᵀ vs x·Ŵᵀ + s·(x·Aᵀ)·Bᵀ in fp32: equal up to summation order (~1e-6 relative);
    # logits here are O(1), so 1e-4 leaves room for rounding and none for a wrong Ŵ (NF4 error ≈ 0.1).
    assert torch.allclose(logits(merged, inputs), with_adapter, atol=1e-4, rtol=1e-4)


def test_merge_in_bf16_stays_within_bf16_rounding() -> None:
    model = qlora()
    inputs = batch()
    with_adapter = logits(model, inputs)
    dequantize_model(model, torch.bfloat16)
    merged = merge_and_unload(model).to(torch.bfloat16)  # the export saves the whole model in one dtype
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    # bf16 keeps 8 significant bits: the merged weights round once more than the fp32 path.
    assert torch.allclose(logits(merged, inputs).float(), with_adapter, atol=0.1, rtol=0.05)


def test_adapter_saved_on_a_quantized_base_loads_back_exactly(tmp_path) -> None:
    model = qlora()
    inputs = batch()
    expected = logits(model, inputs)
    save_adapter(model, tmp_path / "adapter")
    base = llama()
    quantize_model(base)
    reloaded = load_adapter(base, tmp_path / "adapter")
    assert torch.equal(logits(reloaded, inputs), expected)


def test_clear_errors_for_bad_methods_and_bad_order() -> None:
    with pytest.raises(LorakitError, match=r"unknown quantization method 'int3'; choose one of nf4, bnb-nf4"):
        quantize_model(llama(), "int3")
    assert QUANT_METHODS == ("nf4", "bnb-nf4")
    with pytest.raises(LorakitError, match="quantize the base model before adding or loading adapters"):
        quantize_model(add_adapter(llama(), LoraConfig(r=4)))
    model = llama()
    quantize_model(model)
    with pytest.raises(LorakitError, match="already quantized"):
        quantize_model(model)
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=100, n_positions=32))
    with pytest.raises(LorakitError, match=r"found no nn\.Linear layer to quantize"):
        quantize_model(gpt2)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown without a GPU")
def test_bnb_without_cuda_says_what_is_missing_and_points_to_nf4() -> None:
    with pytest.raises(LorakitError, match=r"'bnb-nf4' needs a CUDA GPU.*use 'nf4'"):
        quantize_model(llama(), "bnb-nf4")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_qlora_moves_to_cuda_and_trains_there() -> None:
    model = qlora().to("cuda")
    inputs = {k: v.cuda() for k, v in batch().items()}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(**inputs, labels=inputs["input_ids"]).loss
    loss.backward()
    assert model.model.layers[0].self_attn.q_proj.base_layer.weight.quantized_data.device.type == "cuda"
    assert model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad.device.type == "cuda"


@pytest.mark.parametrize("name", ["bert", "llama", "t5"])
def test_each_nn_linear_architecture_trains_on_nf4_and_merges_back(name: str) -> None:
    arch = ARCHS[name]
    model = arch.build()
    quantize_model(model)
    torch.manual_seed(1)
    add_adapter(model, LoraConfig(r=4, target_modules=arch.targets, task_type=arch.task_type, init_lora_weights=False))
    inputs = arch.inputs()
    out = model(**inputs)
    out.logits.float().pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    expected = logits(model, inputs)
    dequantize_model(model, torch.float32)
    assert torch.allclose(logits(merge_and_unload(model), inputs), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="needs a CUDA GPU and bitsandbytes",
)
def test_bnb_nf4_trains_and_dequantizes_for_merging() -> None:
    model = llama(hidden=256, intermediate=512)
    quantize_model(model, "bnb-nf4")
    model.to("cuda")
    sizes = quantized_weight_bytes(model)
    assert sizes["quantized_linears"] == 2 * len(BODY) and sizes["quantized_linear_bytes"] <= 0.16 * sizes["fp32_bytes"]
    torch.manual_seed(1)
    add_adapter(model, LoraConfig(r=8, target_modules="all-linear", init_lora_weights=False))
    inputs = {k: v.cuda() for k, v in batch().items()}
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad is not None
    expected = logits(model, inputs)
    with pytest.raises(LorakitError, match="dequantize_model"):
        merge_and_unload(model)
    dequantize_model(model, torch.float32)
    assert not is_quantized(model)
    # bitsandbytes' kernels compute in their own order and dtype: close, not bit-equal.
    assert torch.allclose(logits(merge_and_unload(model), inputs), expected, atol=1e-2, rtol=1e-2)
