"""Which modules a `LoraConfig` puts LoRA on: PEFT's matching rules, and clear errors when
a spec matches nothing usable."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
)
from transformers.pytorch_utils import Conv1D

from lorakit import LoraConfig, LorakitError, add_adapter
from lorakit.lora import LoraLinear, ModulesToSave
from lorakit.lora.targets import find_targets

# --- tiny models -----------------------------------------------------------------------------


def tiny_bert_config(**kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, **kwargs
    )


def tiny_bert_cls(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    return BertForSequenceClassification(tiny_bert_config(num_labels=num_labels))


def tiny_llama_config(**kwargs) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        **kwargs,
    )


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(tiny_llama_config())


def tiny_gpt2() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(
        GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    )


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(8, 8)
        self.xquery = nn.Linear(8, 8)  # ends with "query" but is not a dotted suffix match
        self.value = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)

    def forward(self, x):
        return self.norm(self.query(x) + self.xquery(x) + self.value(x))


class Net(nn.Module):
    """A model with no `config` (so no preset) and names chosen to probe the matching rules."""

    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList([Block(), Block()])
        self.query = nn.Linear(8, 8)  # a top-level module with a bare name
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.head(self.query(x))


def targets(model: nn.Module, **kwargs) -> list[str]:
    return find_targets(model, LoraConfig(**kwargs))


def leaves(names: list[str]) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name in names}


def target_error(model: nn.Module, **kwargs) -> str:
    with pytest.raises(LorakitError) as error:
        find_targets(model, LoraConfig(**kwargs))
    message = str(error.value)
    assert "\n" not in message, f"message spans several lines: {message!r}"
    return message


def snapshot(model: nn.Module) -> dict:
    return {
        "types": {name: type(module) for name, module in model.named_modules()},
        "state": {key: value.detach().clone() for key, value in model.state_dict().items()},
        "grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "has_state": hasattr(model, "lorakit_adapters"),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["types"] == before["types"]
    assert after["state"].keys() == before["state"].keys()
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), key
    assert after["grad"] == before["grad"]
    assert after["has_state"] == before["has_state"]


# --- list entries: exact name or dotted suffix -----------------------------------------------


def test_dotted_suffix_does_not_match_a_longer_leaf_name():
    model = Net()
    assert targets(model, target_modules=["query"]) == ["layers.0.query", "layers.1.query", "query"]
    add_adapter(model, LoraConfig(target_modules=["query"]))
    assert isinstance(model.layers[0].query, LoraLinear)
    assert type(model.layers[0].xquery) is nn.Linear
    assert type(model.layers[1].xquery) is nn.Linear
    assert isinstance(model.query, LoraLinear)


def test_exact_full_name():
    model = Net()
    assert targets(model, target_modules=["layers.1.query"]) == ["layers.1.query"]
    assert targets(model, target_modules=["query", "layers.0.xquery"]) == [
        "layers.0.query",
        "layers.0.xquery",
        "layers.1.query",
        "query",
    ]


def test_multi_part_dotted_suffix():
    model = Net()
    assert targets(model, target_modules=["0.query"]) == ["layers.0.query"]
    assert targets(model, target_modules=["1.xquery", "0.value"]) == ["layers.0.value", "layers.1.xquery"]


def test_suffix_not_at_a_dot_matches_nothing():
    model = Net()
    message = target_error(model, target_modules=["uery"])
    assert "'uery'" in message


def test_bert_dotted_suffix():
    model = tiny_bert_cls()
    found = targets(model, target_modules=["self.query", "output.dense"])
    assert found == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.encoder.layer.1.attention.self.query",
        "bert.encoder.layer.1.attention.output.dense",
        "bert.encoder.layer.1.output.dense",
    ]


# --- regex strings: full match ---------------------------------------------------------------


def test_regex_must_match_the_full_name():
    model = Net()
    assert targets(model, target_modules=r".*\.query") == ["layers.0.query", "layers.1.query"]
    assert targets(model, target_modules=r".*query") == [
        "layers.0.query",
        "layers.0.xquery",
        "layers.1.query",
        "layers.1.xquery",
        "query",
    ]
    assert targets(model, target_modules=r"layers\.1\..*") == ["layers.1.query", "layers.1.xquery", "layers.1.value"]


@pytest.mark.parametrize("pattern", [r"layers\.0", r"xquer", r"layers\.\d\.val"])
def test_regex_partial_match_is_not_enough(pattern):
    target_error(Net(), target_modules=pattern)


def test_regex_on_bert():
    model = tiny_bert_cls()
    found = targets(model, target_modules=r".*\.layer\.1\..*\.(query|value)")
    assert found == ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value"]


# --- all-linear ------------------------------------------------------------------------------


def test_all_linear_llama_excludes_lm_head():
    model = tiny_llama()
    found = targets(model, target_modules="all-linear")
    assert "lm_head" not in found
    assert leaves(found) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(found) == 14


def test_all_linear_llama_seq_cls_excludes_score():
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(tiny_llama_config(num_labels=3))
    found = find_targets(model, LoraConfig(target_modules="all-linear", task_type="SEQ_CLS"))
    assert "score" not in found
    assert len(found) == 14
    # Without a task type PEFT does not know `score` is a head, and adapts it like any Linear.
    assert "score" in find_targets(model, LoraConfig(target_modules="all-linear"))


def test_all_linear_gpt2_includes_conv1d_and_excludes_lm_head():
    model = tiny_gpt2()
    found = targets(model, target_modules="all-linear")
    assert "lm_head" not in found
    names = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    assert found == [f"transformer.h.{i}.{name}" for i in range(2) for name in names]
    assert all(isinstance(model.get_submodule(name), Conv1D) for name in found)


@pytest.mark.parametrize("task_type", ["SEQ_CLS"])
def test_all_linear_bert_seq_cls_excludes_classifier(task_type):
    model = tiny_bert_cls()
    found = targets(model, target_modules="all-linear", task_type=task_type)
    assert "classifier" not in found
    assert "bert.pooler.dense" in found
    assert len(found) == 2 * 6 + 1  # q, k, v, attention.output.dense, intermediate.dense, output.dense; pooler
    add_adapter(model, LoraConfig(target_modules="all-linear", task_type=task_type))
    assert not isinstance(model.classifier, LoraLinear)
    assert not any(isinstance(m, LoraLinear) for m in model.classifier.modules())


def test_all_linear_with_exclude_modules_list():
    model = tiny_bert_cls()
    found = targets(model, target_modules="all-linear", exclude_modules=["key"], task_type="SEQ_CLS")
    assert "key" not in leaves(found)
    assert len(found) == 2 * 5 + 1


def test_all_linear_with_exclude_modules_regex():
    model = tiny_bert_cls()
    found = targets(model, target_modules="all-linear", exclude_modules=r".*\.layer\.0\..*", task_type="SEQ_CLS")
    assert not any(".layer.0." in name for name in found)
    assert len(found) == 6 + 1


def test_all_linear_with_modules_to_save():
    model = tiny_bert_cls()
    found = targets(model, target_modules="all-linear", task_type="SEQ_CLS", modules_to_save=["pooler"])
    assert "bert.pooler.dense" not in found
    assert len(found) == 2 * 6


# --- exclude_modules -------------------------------------------------------------------------


def test_exclude_modules_list():
    model = tiny_bert_cls()
    found = targets(model, target_modules=["query", "value"], exclude_modules=["layer.0.attention.self.query"])
    assert found == [
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.attention.self.query",
        "bert.encoder.layer.1.attention.self.value",
    ]


def test_exclude_modules_regex():
    model = Net()
    assert targets(model, target_modules=r".*query", exclude_modules=r".*\.xquery") == [
        "layers.0.query",
        "layers.1.query",
        "query",
    ]


def test_exclude_everything_is_an_error():
    message = target_error(Net(), target_modules=["query"], exclude_modules=r".*query")
    assert "query" in message


# --- layers_to_transform / layers_pattern ----------------------------------------------------


@pytest.mark.parametrize("layers", [[1], 1])
@pytest.mark.parametrize("pattern", [None, "layer", ["layer"]])
def test_layers_to_transform_bert(layers, pattern):
    model = tiny_bert_cls()
    found = targets(model, target_modules=["query", "value"], layers_to_transform=layers, layers_pattern=pattern)
    assert found == ["bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.value"]


def test_layers_to_transform_llama():
    model = tiny_llama()
    found = targets(model, target_modules=["q_proj", "down_proj"], layers_to_transform=[0], layers_pattern="layers")
    assert found == ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj"]
    both = targets(model, target_modules=["q_proj"], layers_to_transform=[0, 1])
    assert both == ["model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"]


def test_layers_to_transform_skips_modules_outside_any_layer():
    # Net.query is not inside a numbered layer, but its full name is listed: PEFT applies the layer
    # filter to suffix matches only, so it is taken as is.
    model = Net()
    found = targets(model, target_modules=["query"], layers_to_transform=[0], layers_pattern="layers")
    assert sorted(found) == ["layers.0.query", "query"]
    assert targets(model, target_modules=["value"], layers_to_transform=1, layers_pattern=["blocks", "layers"]) == [
        "layers.1.value"
    ]


def test_layers_pattern_that_matches_no_layer_list():
    target_error(tiny_bert_cls(), target_modules=["query"], layers_to_transform=[0], layers_pattern="blocks")


def test_layers_to_transform_out_of_range():
    message = target_error(tiny_bert_cls(), target_modules=["query"], layers_to_transform=[7])
    assert "query" in message


# --- modules_to_save and task heads are never LoRA targets -----------------------------------


def test_modules_inside_modules_to_save_are_not_targeted():
    model = tiny_bert_cls()
    found = targets(model, target_modules=["dense"], modules_to_save=["pooler"])
    assert "bert.pooler.dense" not in found
    assert len(found) == 2 * 3
    add_adapter(model, LoraConfig(target_modules=["dense"], modules_to_save=["pooler"]))
    assert isinstance(model.bert.pooler, ModulesToSave)
    assert not any(isinstance(m, LoraLinear) for m in model.bert.pooler.modules())


def test_task_head_is_not_targeted_by_a_regex():
    model = tiny_bert_cls()
    found = targets(model, target_modules=r".*(query|classifier)", task_type="SEQ_CLS")
    assert "classifier" not in found
    assert len(found) == 2
    add_adapter(model, LoraConfig(target_modules=r".*(query|classifier)", task_type="SEQ_CLS"))
    assert isinstance(model.classifier, ModulesToSave)
    assert type(model.classifier.original_module) is nn.Linear


# --- presets when target_modules is None -----------------------------------------------------


def test_preset_bert():
    found = targets(tiny_bert_cls())
    assert found == [f"bert.encoder.layer.{i}.attention.self.{name}" for i in range(2) for name in ("query", "value")]
    torch.manual_seed(0)
    assert targets(BertModel(tiny_bert_config())) == [
        f"encoder.layer.{i}.attention.self.{name}" for i in range(2) for name in ("query", "value")
    ]


def test_preset_llama_and_gpt2():
    assert leaves(targets(tiny_llama())) == {"q_proj", "v_proj"}
    assert targets(tiny_gpt2()) == ["transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]


def test_no_preset_for_unknown_model():
    model = Net()
    before = snapshot(model)
    message = target_error(model)
    assert "target_modules" in message
    with pytest.raises(LorakitError):
        add_adapter(model, LoraConfig())
    assert_unchanged(model, before)


def test_no_preset_for_unknown_model_type():
    model = Net()
    model.config = BertConfig()  # a config whose model_type has no preset
    model.config.model_type = "my-new-arch"
    message = target_error(model)
    assert "my-new-arch" in message and "target_modules" in message


# --- errors ----------------------------------------------------------------------------------


def test_unknown_target_lists_close_matches():
    model = tiny_bert_cls()
    before = snapshot(model)
    message = target_error(model, target_modules=["quary"])
    assert "quary" in message
    assert re.search(r"close matches?:[^;]*\bquery\b", message), message
    with pytest.raises(LorakitError):
        add_adapter(model, LoraConfig(target_modules=["quary"]))
    assert_unchanged(model, before)


def test_one_unknown_target_among_good_ones_is_an_error():
    model = tiny_llama()
    before = snapshot(model)
    message = target_error(model, target_modules=["q_proj", "v_porj"])
    assert "v_porj" in message and "v_proj" in message
    assert "'q_proj'" not in message.split(";")[0]  # only the bad entry is reported as unmatched
    with pytest.raises(LorakitError):
        add_adapter(model, LoraConfig(target_modules=["q_proj", "v_porj"]))
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("target", "kind"),
    [(["LayerNorm"], "LayerNorm"), (["word_embeddings"], "Embedding"), (["attention"], "BertAttention")],
)
def test_target_matching_only_non_linear_modules(target, kind):
    model = tiny_bert_cls()
    before = snapshot(model)
    message = target_error(model, target_modules=target)
    assert "non-Linear" in message or "not a Linear" in message or "Linear" in message
    assert kind in message
    with pytest.raises(LorakitError):
        add_adapter(model, LoraConfig(target_modules=target))
    assert_unchanged(model, before)


def test_custom_model_non_linear_target():
    message = target_error(Net(), target_modules=["norm"])
    assert "layers.0.norm" in message and "LayerNorm" in message


def test_regex_matching_nothing_is_an_error():
    message = target_error(tiny_llama(), target_modules=r".*\.qproj")
    assert "qproj" in message


def test_targets_are_in_model_order_and_unique():
    model = tiny_llama()
    found = targets(model, target_modules=["v_proj", "q_proj", "self_attn.q_proj"])
    assert found == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.v_proj",
    ]


def test_second_adapter_reuses_wrappers_and_skips_their_children():
    model = tiny_bert_cls()
    add_adapter(model, LoraConfig(target_modules=["query"]), "one")
    found = find_targets(model, LoraConfig(target_modules=r".*query.*"), existing_lora_types=(LoraLinear,))
    assert found == ["bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.1.attention.self.query"]
    add_adapter(model, LoraConfig(target_modules=["query", "value"]), "two")
    assert set(model.bert.encoder.layer[0].attention.self.query.lora_A) == {"one", "two"}
    assert type(model.bert.encoder.layer[0].attention.self.query.base_layer) is nn.Linear
