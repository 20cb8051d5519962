"""`first_token_only`: the last layer on [CLS] alone gives the full model's logits and gradients.

Every comparison is between two models built from the same seed, one of them changed. A forward
hook on the last layer records the width of its output, so each test also proves which path ran
(1: first token only; the sequence length: the full layer).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    CamembertConfig,
    CamembertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    ErnieConfig,
    ErnieForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
    XLMRobertaConfig,
    XLMRobertaForSequenceClassification,
)

from lorakit import LoraConfig, add_adapter, save_adapter
from lorakit.cli.train import validate_train_flags
from lorakit.models.first_token import first_token_only
from lorakit.train.fast_paths import use_fast_paths
from lorakit.train.precision import cast_frozen_parameters
from tiny_models import tiny_llama

LENGTHS = (9, 5, 2)  # one padded batch: real tokens per row
BERT_SIZES = {"vocab_size": 100, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4}
BERT_SIZES |= {"intermediate_size": 64, "max_position_embeddings": 70, "num_labels": 3}
FAMILIES = {
    "bert": (BertConfig, BertForSequenceClassification),
    "roberta": (RobertaConfig, RobertaForSequenceClassification),
    "xlm-roberta": (XLMRobertaConfig, XLMRobertaForSequenceClassification),
    "camembert": (CamembertConfig, CamembertForSequenceClassification),
    "electra": (ElectraConfig, ElectraForSequenceClassification),
    "ernie": (ErnieConfig, ErnieForSequenceClassification),
    "distilbert": (DistilBertConfig, DistilBertForSequenceClassification),
}
# The attention implementations a model meets in training: transformers' two, and lorakit's
# training attention with fast dropout (installed as the training loop does).
ATTENTIONS = ("sdpa", "eager", "lorakit")


def config_for(family: str, dropout: float, **extra):
    """A tiny config of `family` with every dropout probability `dropout`; `extra` overrides fields."""
    config_class, _ = FAMILIES[family]
    if family == "distilbert":
        sizes = {"vocab_size": 100, "dim": 32, "n_layers": 2, "n_heads": 4, "hidden_dim": 64}
        dropouts = {"dropout": dropout, "attention_dropout": dropout, "seq_classif_dropout": dropout}
        return config_class(**(sizes | {"max_position_embeddings": 70, "num_labels": 3} | dropouts | extra))
    if family == "electra":
        extra.setdefault("embedding_size", 16)  # exercises Electra's embedding projection
    dropouts = {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
    return config_class(**(BERT_SIZES | dropouts | extra))


def build(family: str = "bert", attention: str = "sdpa", dropout: float = 0.0, seed: int = 0, **extra) -> nn.Module:
    """A tiny random classifier of `family` in eval mode; `attention` "lorakit" means lorakit's
    fast dropout and training attention, as the training loop installs them."""
    torch.manual_seed(seed)
    model = FAMILIES[family][1](config_for(family, dropout, **extra)).eval()
    if attention == "lorakit":
        use_fast_paths(model, fast_dropout=True)
    else:
        model.set_attn_implementation(attention)
    return model


def with_lora(model: nn.Module, dropout: float = 0.0) -> nn.Module:
    """LoRA r=4 on the preset (query/value), non-zero A and B, the head saved: same weights every call.
    The model keeps its train/eval mode (new modules start in train mode)."""
    torch.manual_seed(5)
    config = LoraConfig(r=4, task_type="SEQ_CLS", init_lora_weights=False, lora_dropout=dropout)
    return add_adapter(model, config).train(model.training)


def padded_batch(model: nn.Module) -> dict[str, torch.Tensor]:
    """Rows of different lengths, padded at the end with the model's pad id; labels included."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.full((len(LENGTHS), max(LENGTHS)), model.config.pad_token_id)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(LENGTHS):
        ids[row, :length] = torch.randint(3, 100, (length,), generator=generator)
        mask[row, :length] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 2, 1])}


def last_layer(model: nn.Module) -> nn.Module:
    base = model.base_model
    return (base.transformer if hasattr(base, "transformer") else base.encoder).layer[-1]


def run(model: nn.Module, batch: dict[str, torch.Tensor], **kwargs):
    """The model's output on `batch` and the width of its last layer's output (1 on the fast path)."""
    widths = []
    hook = last_layer(model).register_forward_hook(lambda module, args, output: widths.append(output.shape[1]))
    try:
        output = model(**batch, **kwargs)
    finally:
        hook.remove()
    assert len(widths) == 1
    return output, widths[0]


def gradients(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(full: nn.Module, fast: nn.Module, atol: float, rtol: float = 0.0) -> None:
    expected, actual = gradients(full), gradients(fast)
    assert expected.keys() == actual.keys() and expected
    for name, grad in expected.items():
        assert (grad is None) == (actual[name] is None), name
        if grad is not None:
            torch.testing.assert_close(actual[name], grad, atol=atol, rtol=rtol, msg=name)
    assert any(grad is not None and grad.abs().sum() > 0 for grad in expected.values())


@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_logits_equal_the_full_model(family: str, attention: str) -> None:
    full, fast = build(family, attention), build(family, attention)
    assert first_token_only(fast)
    batch = padded_batch(full)
    with torch.no_grad():
        expected, full_width = run(full, batch)
        actual, width = run(fast, batch)
    assert (full_width, width) == (max(LENGTHS), 1)
    torch.testing.assert_close(actual.logits, expected.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("attention", ATTENTIONS)
@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert"])
def test_gradients_equal_in_train_mode(family: str, attention: str, method: str) -> None:
    """Train mode with dropout 0: the same loss and the same gradient on every trainable parameter."""
    full, fast = build(family, attention), build(family, attention)
    assert first_token_only(fast)  # before LoRA, as the training loop does it
    if method == "lora":
        full, fast = with_lora(full), with_lora(fast)
    batch = padded_batch(full)
    for model in (full, fast):
        model.train()
    expected, _ = run(full, batch)
    actual, width = run(fast, batch)
    assert width == 1
    expected.loss.backward()
    actual.loss.backward()
    torch.testing.assert_close(actual.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(full, fast, atol=1e-5)


def test_lora_added_before_or_after_gives_the_same_model_for_bert() -> None:
    """BERT's head (pooler → classifier) is recognised either way: LoRA wraps only the classifier."""
    before, after = build(), with_lora(build())
    assert first_token_only(before) and first_token_only(after)
    before = with_lora(before)
    batch = padded_batch(before)
    with torch.no_grad():
        torch.testing.assert_close(run(after, batch)[0].logits, run(before, batch)[0].logits, atol=0, rtol=0)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_bf16_autocast_is_close(family: str) -> None:
    """The training loop's setting: bf16 autocast with the frozen base stored in bf16, LoRA in fp32."""
    full, fast = build(family, "lorakit"), build(family, "lorakit")
    assert first_token_only(fast)
    full, fast = with_lora(full), with_lora(fast)
    batch = padded_batch(full)
    for model in (full, fast):
        cast_frozen_parameters(model, "bf16")
        model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, _ = run(full, batch)
        actual, width = run(fast, batch)
    assert width == 1
    expected.loss.backward()
    actual.loss.backward()
    torch.testing.assert_close(actual.logits.float(), expected.logits.float(), atol=2e-2, rtol=2e-2)
    assert_same_gradients(full, fast, atol=2e-2, rtol=5e-2)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_dropout_in_train_mode_runs_on_the_first_token(family: str) -> None:
    """With dropout on, the masks differ from the full layer's (other shapes), so only this is checked:
    the first-token path runs, dropout acts (two passes differ), eval mode still matches exactly."""
    full, fast = build(family, "lorakit", dropout=0.1), build(family, "lorakit", dropout=0.1)
    assert first_token_only(fast)
    full, fast = with_lora(full, dropout=0.1), with_lora(fast, dropout=0.1)
    batch = padded_batch(fast)
    fast.train()
    first, width = run(fast, batch)
    second, _ = run(fast, batch)
    assert width == 1 and not torch.equal(first.logits, second.logits)
    first.loss.backward()
    assert all(grad is not None and torch.isfinite(grad).all() for grad in gradients(fast).values())
    fast.eval()
    with torch.no_grad():
        torch.testing.assert_close(run(fast, batch)[0].logits, run(full, batch)[0].logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_attention_dropout_acts_on_the_first_token(attention: str) -> None:
    """A one-layer model whose only dropout is on the attention probabilities: two training passes
    differ only if the first-token path applies it."""
    model = build(attention=attention, num_hidden_layers=1, attention_probs_dropout_prob=0.5)
    assert first_token_only(model)
    batch = padded_batch(model)
    model.train()
    with torch.no_grad():
        (first, width), (second, _) = run(model, batch), run(model, batch)
        assert width == 1 and not torch.equal(first.logits, second.logits)
        model.eval()
        assert torch.equal(run(model, batch)[0].logits, run(model, batch)[0].logits)


@pytest.mark.parametrize("how", ["call", "config"])
def test_recorded_hidden_states_and_attentions_use_the_full_layer(how: str) -> None:
    full, fast = build(attention="eager"), build(attention="eager")
    assert first_token_only(fast)
    batch = padded_batch(full)
    request = {"output_hidden_states": True, "output_attentions": True}
    if how == "config":
        for model in (full, fast):
            for key, value in request.items():
                setattr(model.config, key, value)
        request = {}
    with torch.no_grad():
        expected, _ = run(full, batch, **request)
        actual, width = run(fast, batch, **request)
    assert width == max(LENGTHS)
    assert len(actual.hidden_states) == len(expected.hidden_states) == 3
    assert len(actual.attentions) == len(expected.attentions) == 2
    mine, theirs = actual.hidden_states + actual.attentions, expected.hidden_states + expected.attentions
    for tensor, reference in zip(mine, theirs, strict=True):
        torch.testing.assert_close(tensor, reference, atol=0, rtol=0)


def test_each_output_request_alone_uses_the_full_layer() -> None:
    model = build(attention="eager")
    assert first_token_only(model)
    batch = padded_batch(model)
    with torch.no_grad():
        assert run(model, batch, output_hidden_states=True)[1] == max(LENGTHS)
        assert run(model, batch, output_attentions=True)[1] == max(LENGTHS)
        assert run(model, batch, output_hidden_states=False)[1] == 1


class MeanPooler(nn.Module):
    """A pooler that reads every position: the first-token shortcut would change its output."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden_states.mean(dim=1)))


class SubclassedClassifier(BertForSequenceClassification):
    """A user subclass may read the hidden states its own way."""


def bert_with_mean_pooler() -> nn.Module:
    model = build()
    model.bert.pooler = MeanPooler(model.config.hidden_size)
    return model


def bert_token_classifier() -> nn.Module:
    torch.manual_seed(0)
    return BertForTokenClassification(config_for("bert", 0.0))


def bert_encoder() -> nn.Module:
    torch.manual_seed(0)
    return BertModel(config_for("bert", 0.0))


def roberta_with_wrapped_head() -> nn.Module:
    """LoRA first: the head is now a module-to-save wrapper, not the stock class (documented: apply before)."""
    return with_lora(build("roberta"))


def subclassed_classifier() -> nn.Module:
    torch.manual_seed(0)
    return SubclassedClassifier(config_for("bert", 0.0))


@pytest.mark.parametrize(
    "make",
    [
        bert_token_classifier,
        bert_encoder,
        tiny_llama,
        bert_with_mean_pooler,
        subclassed_classifier,
        roberta_with_wrapped_head,
        lambda: build(is_decoder=True),
        lambda: build("distilbert", chunk_size_feed_forward=2),
    ],
    ids=["token-cls", "encoder", "llama", "mean-pooler", "subclass", "wrapped-head", "decoder", "chunked-ffn"],
)
def test_models_it_is_not_exact_for_are_left_unchanged(make) -> None:
    model = make()
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert first_token_only(model) is False
    assert not any("forward" in vars(module) for module in model.modules())
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_state_dict_and_saved_adapter_are_unchanged(family: str, tmp_path: Path) -> None:
    """Parameter names stay the same, so checkpoints and PEFT-format adapters do not change."""
    full, fast = build(family), build(family)
    assert first_token_only(fast)
    full, fast = with_lora(full), with_lora(fast)
    expected, actual = full.state_dict(), fast.state_dict()
    assert list(actual) == list(expected)
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
    theirs, mine = save_adapter(full, tmp_path / "full"), save_adapter(fast, tmp_path / "fast")
    names = sorted(path.name for path in theirs.iterdir())
    assert names == sorted(path.name for path in mine.iterdir()) and "adapter_model.safetensors" in names
    for name in names:
        assert (mine / name).read_bytes() == (theirs / name).read_bytes(), name


def test_idempotent_and_survives_deepcopy() -> None:
    full, fast = build(), build()
    assert first_token_only(fast) and first_token_only(fast)
    twin = copy.deepcopy(fast)
    assert vars(last_layer(twin))["forward"].__self__ is last_layer(twin)
    batch = padded_batch(full)
    with torch.no_grad():
        expected = run(full, batch)[0].logits
        actual, width = run(twin, batch)
    assert width == 1
    torch.testing.assert_close(actual.logits, expected, atol=1e-5, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    full, fast = build(), build()
    assert first_token_only(fast)
    full, fast = with_lora(full), with_lora(fast)
    batch = padded_batch(full)
    for model in (full, fast):
        model.gradient_checkpointing_enable()
        model.train()
    expected, _ = run(full, batch)
    actual, width = run(fast, batch)
    assert width == 1
    expected.loss.backward()
    actual.loss.backward()
    assert_same_gradients(full, fast, atol=1e-5)


def test_train_flag_turns_it_off() -> None:
    assert validate_train_flags([]).first_token_only is True
    assert validate_train_flags(["--no-first-token-only"]).first_token_only is False
