"""The chunked causal-LM loss equals the plain one, in value and in every gradient."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from transformers import Gemma2Config, Gemma2ForCausalLM

from lorakit.inference.generation import labelled_logits
from lorakit.lora import LoraConfig, add_adapter
from lorakit.models import lm_loss
from lorakit.models.lm_loss import chunk_rows, chunked_causal_lm_loss, supports_chunked_loss
from tiny_models import ARCHS, VOCAB


def _batch(seed: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (3, 11), generator=generator)
    labels = ids.clone()
    labels[:, :4] = -100  # a prompt
    labels[2, 8:] = -100  # padding
    mask = torch.ones_like(ids)
    mask[2, 8:] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _plain_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits, labels = labelled_logits(model, batch, shift_labels=True)
    return nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)


def _run(model: nn.Module, loss_fn, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def _adapted(arch: str, targets: list[str] | None = None, **kwargs) -> nn.Module:
    spec = ARCHS[arch]
    model = spec.build()
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=targets or spec.targets,
        task_type="CAUSAL_LM",
        init_lora_weights="gaussian",
        **kwargs,
    )
    add_adapter(model, config)
    return model.train()


@pytest.fixture
def tiny_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 16 rows over a 100-word vocabulary: the 21 labelled rows span two chunks."""
    monkeypatch.setattr(lm_loss, "CHUNK_BYTES", 16 * VOCAB * 4)
    assert chunk_rows(VOCAB) == 16


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_frozen_head_loss_and_gradients_equal_the_plain_path(arch: str, tiny_chunks: None) -> None:
    model = _adapted(arch)
    assert supports_chunked_loss(model)
    loss, grads = _run(model, _plain_loss, _batch())
    chunked, chunked_grads = _run(model, chunked_causal_lm_loss, _batch())
    torch.testing.assert_close(chunked, loss, rtol=0, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_a_trained_head_gets_its_gradients_through_recomputed_chunks(tiny_chunks: None) -> None:
    model = _adapted("llama", targets=["q_proj", "v_proj", "lm_head"])
    loss, grads = _run(model, _plain_loss, _batch())
    chunked, chunked_grads = _run(model, chunked_causal_lm_loss, _batch())
    torch.testing.assert_close(chunked, loss, rtol=0, atol=1e-6)
    assert any("lm_head" in name for name in grads)
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_bf16_autocast_matches_the_plain_path(tiny_chunks: None) -> None:
    model = _adapted("llama")
    for parameter in model.parameters():  # frozen weights in bf16, as training stores them
        if not parameter.requires_grad:
            parameter.data = parameter.data.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, grads = _run(model, _plain_loss, _batch())
        chunked, chunked_grads = _run(model, chunked_causal_lm_loss, _batch())
    torch.testing.assert_close(chunked, loss, rtol=1e-3, atol=1e-3)
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=2e-2, atol=2e-3, msg=name)


def test_packed_rows_with_position_ids(tiny_chunks: None) -> None:
    model = _adapted("llama")
    model.config.use_cache = False
    batch = _batch()
    batch.pop("attention_mask")
    batch["labels"][2, 8:] = batch["input_ids"][2, 8:]
    batch["position_ids"] = torch.tensor([list(range(6)) + list(range(5))] * 3)
    loss, grads = _run(model, _plain_loss, batch)
    chunked, chunked_grads = _run(model, chunked_causal_lm_loss, batch)
    torch.testing.assert_close(chunked, loss, rtol=0, atol=1e-6)
    for name, grad in grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_no_labelled_token_is_a_zero_loss_with_a_graph() -> None:
    model = _adapted("llama")
    batch = _batch()
    batch["labels"][:] = -100
    loss = chunked_causal_lm_loss(model, batch)
    assert loss.item() == 0.0
    loss.backward()


def test_models_that_post_process_logits_take_the_plain_path() -> None:
    config = Gemma2Config(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        final_logit_softcapping=30.0,
    )
    assert not supports_chunked_loss(Gemma2ForCausalLM(config))
    assert not supports_chunked_loss(ARCHS["t5"].build())
    assert not supports_chunked_loss(nn.Linear(2, 2))
    assert supports_chunked_loss(copy.deepcopy(ARCHS["llama"].build()))


def test_chunks_fit_the_byte_budget() -> None:
    for vocab in (32_000, 49_152, 151_936):
        rows = chunk_rows(vocab)
        assert rows * vocab * 4 <= lm_loss.CHUNK_BYTES < 2 * rows * vocab * 4


def test_evaluation_sums_the_same_loss_in_chunks(tiny_chunks: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from lorakit.inference import generation

    model = _adapted("llama")
    batch = _batch()
    rows = [{"input_ids": batch["input_ids"][i].tolist(), "labels": batch["labels"][i].tolist()} for i in range(3)]

    def collate(part):
        return {
            "input_ids": torch.tensor([r["input_ids"] for r in part]),
            "labels": torch.tensor([r["labels"] for r in part]),
        }

    chunked = generation.response_loss(model, rows, collate, batch_size=2, shift_labels=True)
    monkeypatch.setattr(generation, "supports_chunked_loss", lambda model: False)
    plain = generation.response_loss(model, rows, collate, batch_size=2, shift_labels=True)
    assert chunked[1] == plain[1] == 7 + 7 + 4  # labels from position 4 on; row 2 padded after 8
    assert chunked[0] == pytest.approx(plain[0], rel=1e-6)
