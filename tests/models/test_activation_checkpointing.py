"""Activation checkpointing changes memory, not results: gradients equal the unchecked run."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from lorakit.errors import LorakitError
from lorakit.lora import LoraConfig, add_adapter
from lorakit.models.activation_checkpointing import (
    activation_checkpointing_enabled,
    enable_activation_checkpointing,
)
from lorakit.quant import quantize_model
from tiny_models import ARCHS


def _adapted(arch: str, dropout: float, quantize: bool = False) -> nn.Module:
    spec = ARCHS[arch]
    model = spec.build()
    if quantize:
        quantize_model(model, "nf4")
    add_adapter(
        model,
        LoraConfig(
            r=4,
            lora_alpha=8,
            lora_dropout=dropout,
            target_modules=spec.targets,
            task_type=spec.task_type,
            init_lora_weights="gaussian",
        ),
    )
    return model.train()


def _loss_and_grads(model: nn.Module, arch: str, seed: int = 7) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    batch = ARCHS[arch].inputs()
    if arch == "bert":
        batch["labels"] = torch.tensor([0, 2])
    else:
        batch["labels"] = batch.get("decoder_input_ids", batch["input_ids"])
    torch.manual_seed(seed)  # the same dropout masks in both runs
    loss = model(**batch).loss
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("arch", ["llama", "gpt2", "t5", "bert"])
@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_gradients_equal_the_unchecked_run(arch: str, dropout: float) -> None:
    plain = _adapted(arch, dropout)
    checked = copy.deepcopy(plain)
    enable_activation_checkpointing(checked)
    assert activation_checkpointing_enabled(checked) and not activation_checkpointing_enabled(plain)
    loss, grads = _loss_and_grads(plain, arch)
    checked_loss, checked_grads = _loss_and_grads(checked, arch)
    torch.testing.assert_close(checked_loss, loss, rtol=0, atol=1e-6)
    assert grads.keys() == checked_grads.keys() and grads
    for name, grad in grads.items():
        # Dropout is replayed with the same random state, so even its masks agree.
        torch.testing.assert_close(checked_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_checkpointing_over_an_nf4_base() -> None:
    plain = _adapted("llama", 0.0, quantize=True)
    checked = _adapted("llama", 0.0, quantize=True)  # same seed; NF4 tensors do not deepcopy
    enable_activation_checkpointing(checked)
    _, grads = _loss_and_grads(plain, "llama")
    _, checked_grads = _loss_and_grads(checked, "llama")
    for name, grad in grads.items():
        torch.testing.assert_close(checked_grads[name], grad, rtol=0, atol=1e-6, msg=name)


def test_checkpointing_keeps_fewer_activations() -> None:
    """What backward keeps alive, counted through saved-tensor hooks: far less with checkpointing."""

    def saved_bytes(model: nn.Module) -> int:
        seen: dict[int, int] = {}

        def pack(tensor: torch.Tensor) -> torch.Tensor:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        batch = ARCHS["llama"].inputs()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(**batch, labels=batch["input_ids"])
        return sum(seen.values())

    plain = _adapted("llama", 0.0)
    checked = copy.deepcopy(plain)
    enable_activation_checkpointing(checked)
    assert saved_bytes(checked) < saved_bytes(plain) / 2


def test_a_model_without_support_is_a_clear_error() -> None:
    with pytest.raises(LorakitError, match=r"does not support activation checkpointing.*--gradient-checkpointing off"):
        enable_activation_checkpointing(nn.Sequential(nn.Linear(2, 2)))


def test_offloading_needs_cuda() -> None:
    with pytest.raises(LorakitError, match="host memory already"):
        enable_activation_checkpointing(ARCHS["llama"].build(), offload=True, device_type="cpu")
