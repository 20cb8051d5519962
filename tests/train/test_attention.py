"""Training attention (train/attention.py): the matmul path computes SDPA's attention exactly,
takes the rows it should, and keeps causal models causal."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lorakit.lora import LoraConfig, add_adapter
from lorakit.train.attention import MATH_MAX_LENGTH, _takes_math, math_attention, use_training_attention
from lorakit.train.dropout import use_fast_dropout
from tiny_models import ARCHS, tiny_gpt2


def _qkv(heads: int, kv_heads: int, length: int = 6, batch: int = 3, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)

    def tensor(count: int) -> torch.Tensor:
        return torch.randn(batch, count, length, 8, generator=generator).to(dtype).requires_grad_(True)

    return tensor(heads), tensor(kv_heads), tensor(kv_heads)


def _padding_mask(length: int, batch: int = 3) -> torch.Tensor:
    """Causal bool masks (batch, 1, q, kv) with rows 1 and 2 right-padded after 4 and 2 tokens."""
    real = torch.tensor([length, 4, 2])[:batch]
    keys = torch.arange(length)[None, :] < real[:, None]  # (batch, kv)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (causal[None] & keys[:, None, :])[:, None]


def _outputs_and_grads(attend, query, key, value, real: torch.Tensor):
    """Output and gradients of q, k, v, back from a fixed upstream gradient on the `real`
    (batch, 1, q_len, 1) query rows: padded rows attend to nothing real, their output is moot."""
    out = attend(query, key, value) * real
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out).to(out.dtype))
    grads = [t.grad.clone() for t in (query, key, value)]
    for t in (query, key, value):
        t.grad = None
    return out.detach(), grads


CASES = {
    "causal, no mask": (None, True),
    "padding bool mask": ("bool", False),
    "padding additive mask": ("float", False),
    "per-head bool mask": ("heads", False),
    "bidirectional": (None, False),
}


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (6, 2), (4, 1)])
@pytest.mark.parametrize("case", list(CASES))
def test_math_attention_equals_sdpa(heads: int, kv_heads: int, case: str) -> None:
    kind, causal = CASES[case]
    query, key, value = _qkv(heads, kv_heads)
    mask = None if kind is None else _padding_mask(6)
    if kind == "float":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    elif kind == "heads":
        mask = mask.expand(-1, heads, -1, -1).clone()
        mask[:, 0, :, 1] = False  # one head ignores token 1: the mask must reach the right head
    real = torch.ones(3, 1, 6, 1)
    if kind is not None:
        real = (torch.arange(6)[None, :] < torch.tensor([6, 4, 2])[:, None]).float()[:, None, :, None]
    ours = _outputs_and_grads(lambda q, k, v: math_attention(q, k, v, mask, causal, None), query, key, value, real)
    sdpa = _outputs_and_grads(
        lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=heads != kv_heads
        ),
        query,
        key,
        value,
        real,
    )
    torch.testing.assert_close(ours[0], sdpa[0], atol=1e-5, rtol=1e-5)
    for mine, theirs in zip(ours[1], sdpa[1], strict=True):
        torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-5)


def test_bf16_matches_sdpa_to_bf16_rounding() -> None:
    query, key, value = _qkv(6, 2, length=40, dtype=torch.bfloat16)
    ours = math_attention(query, key, value, None, True, None)
    sdpa = F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=True)
    assert (ours.float() - sdpa.float()).abs().max() < 2e-2


def _adapted(arch: str, attention: str, dropout: float = 0.0) -> nn.Module:
    spec = ARCHS[arch]
    model = spec.build()
    add_adapter(
        model,
        LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=spec.targets, task_type=spec.task_type),
    )
    if attention == "lorakit":
        use_fast_dropout(model)
        assert use_training_attention(model, fast_dropout_masks=True)
    return model.train()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "bert"])
@pytest.mark.parametrize("padded", [False, True])
def test_training_a_model_gives_sdpa_loss_and_gradients(arch: str, padded: bool) -> None:
    batch = ARCHS[arch].inputs()
    if padded:
        batch["attention_mask"][1, 4:] = 0
    batch["labels"] = (
        torch.tensor([0, 2]) if arch == "bert" else batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    )
    results = []
    for attention in ("sdpa", "lorakit"):
        model = _adapted(arch, attention)
        loss = model(**batch).loss
        loss.backward()
        results.append((loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss, grads), (our_loss, our_grads) = results
    torch.testing.assert_close(our_loss, loss, atol=1e-6, rtol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(our_grads[name], grad, atol=1e-6, rtol=1e-5)


def test_attention_dropout_keeps_causal_models_causal() -> None:
    """GPT-2 with attention dropout and no padding (transformers passes no mask: "causal"):
    changing the last token must not change any earlier position."""
    model = tiny_gpt2()
    model.config.attn_pdrop = 0.1
    for block in model.transformer.h:
        block.attn.attn_dropout.p = 0.1
        block.attn.attention_dropout = 0.1
    use_fast_dropout(model)
    use_training_attention(model, fast_dropout_masks=True)
    model.train()
    ids = torch.randint(1, 100, (1, 8), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, -1] = ids[0, -1] % 99 + 1
    torch.manual_seed(1)
    first = model(input_ids=ids).logits
    torch.manual_seed(1)
    second = model(input_ids=changed).logits
    torch.testing.assert_close(first[0, :-1], second[0, :-1])
    assert not torch.allclose(first[0, -1], second[0, -1])


def test_routing() -> None:
    """Matmuls for short rows or attention dropout while training on CPU; SDPA otherwise."""
    module = nn.Module().train()
    short = torch.zeros(1, 4, MATH_MAX_LENGTH, 8)
    long = torch.zeros(1, 4, MATH_MAX_LENGTH + 1, 8)
    assert _takes_math(module, short, short, 0.0, {})
    assert not _takes_math(module, long, long, 0.0, {})
    assert _takes_math(module, long, long, 0.1, {})
    assert not _takes_math(module, short[:, :, :1], short, 0.0, {})  # decoding against a cache
    assert not _takes_math(module, short, short, 0.0, {"position_bias": torch.zeros(1)})
    with torch.no_grad():
        assert not _takes_math(module, short, short, 0.0, {})
    assert not _takes_math(copy.deepcopy(module).eval(), short, short, 0.0, {})


def test_other_attention_implementations_are_left_alone() -> None:
    model = ARCHS["llama"].build()
    model.set_attn_implementation("eager")
    assert not use_training_attention(model, fast_dropout_masks=True)
    assert model.config._attn_implementation == "eager"
