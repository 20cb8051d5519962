"""Losses from logits at the labelled positions only equal the models' own full-logit losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorakit.inference.generation import labelled_logits
from tiny_models import VOCAB, tiny_gpt2, tiny_llama, tiny_t5


def causal_batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    input_ids = torch.randint(3, VOCAB, (3, 9))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[2, 6:] = 0  # right padding
    labels = input_ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[2, 6:] = -100
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2], ids=["llama", "gpt2"])
def test_causal_loss_from_labelled_positions_equals_the_models_loss(build):
    model = build().eval()
    batch = causal_batch()
    logits, labels = labelled_logits(model, batch, shift_labels=True)
    assert logits.shape[0] == labels.shape[0] == int((batch["labels"][:, 1:] != -100).sum())
    ours = nn.functional.cross_entropy(logits, labels)
    assert ours.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)


def test_causal_gradients_match_the_full_logit_loss():
    batch = causal_batch()
    grads = []
    for use_labelled in (True, False):
        model = tiny_llama()
        if use_labelled:
            logits, labels = labelled_logits(model, batch, shift_labels=True)
            nn.functional.cross_entropy(logits, labels).backward()
        else:
            model(**batch).loss.backward()
        grads.append(model.model.layers[0].self_attn.q_proj.weight.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_seq2seq_loss_equals_the_models_loss():
    model = tiny_t5().eval()
    torch.manual_seed(2)
    batch = {
        "input_ids": torch.randint(3, VOCAB, (2, 7)),
        "attention_mask": torch.ones(2, 7, dtype=torch.long),
        "labels": torch.tensor([[5, 6, 7, 1], [8, 9, 1, -100]]),
    }
    logits, labels = labelled_logits(model, batch, shift_labels=False)
    ours = nn.functional.cross_entropy(logits, labels, ignore_index=-100)
    assert ours.item() == pytest.approx(model(**batch).loss.item(), rel=1e-5)
