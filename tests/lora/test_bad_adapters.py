"""Adapters that do not fit, broken adapter folders, and bad add_adapter / save_adapter calls.

Policy: every refusal is a `LorakitError` with a one-line message naming the problem, and a
failed operation leaves the model (and any adapter folder on disk) exactly as it was.
"""

from __future__ import annotations

import json
import pathlib
import pickle
import re
from pathlib import Path

import peft
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertModel,
    LlamaConfig,
    LlamaForCausalLM,
)

import lorakit.lora.io as lorakit_io
from lorakit import LoraConfig, LorakitError, add_adapter, list_adapters, load_adapter, save_adapter
from lorakit.lora import LoraLinear

PREFIX = "base_model.model."
CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"

# --- tiny models -----------------------------------------------------------------------------


def bert_config(hidden_size: int = 32, **kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=100,
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        **kwargs,
    )


def tiny_bert(num_labels: int = 2, hidden_size: int = 32, seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(hidden_size, num_labels=num_labels)).eval()


def tiny_bert_base(seed: int = 0) -> BertModel:
    torch.manual_seed(seed)
    return BertModel(bert_config()).eval()


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
    )
    return LlamaForCausalLM(config).eval()


INPUT_IDS = torch.tensor([[1, 5, 7, 9, 2], [3, 4, 8, 6, 2]])


def logits(model: nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=INPUT_IDS).logits


def make_adapter(folder: Path, model: nn.Module, name: str = "default", **config) -> Path:
    """Save a lorakit adapter with non-zero A and B (init_lora_weights=False), so loading it matters."""
    config.setdefault("target_modules", ["query", "value"])
    config.setdefault("init_lora_weights", False)
    add_adapter(model, LoraConfig(**config), name)
    return save_adapter(model, folder, name)


def seq_cls_adapter(folder: Path, num_labels: int = 2, **config) -> Path:
    return make_adapter(folder, tiny_bert(num_labels, seed=1), task_type="SEQ_CLS", **config)


def rewrite_weights(folder: Path, edit) -> None:
    tensors = load_file(folder / WEIGHTS)
    edit(tensors)
    save_file(tensors, folder / WEIGHTS, metadata={"format": "pt"})


def rewrite_config(folder: Path, **changes) -> None:
    data = json.loads((folder / CONFIG).read_text())
    data.update(changes)
    (folder / CONFIG).write_text(json.dumps(data))


# --- "the model is exactly as it was" --------------------------------------------------------


def snapshot(model: nn.Module) -> dict:
    state = getattr(model, "lorakit_adapters", None)
    return {
        "modules": {name: (type(module), id(module)) for name, module in model.named_modules()},
        "state": {key: value.detach().clone() for key, value in model.state_dict().items()},
        "grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "training": {name: module.training for name, module in model.named_modules()},
        "has_state": hasattr(model, "lorakit_adapters"),
        "adapters": None if state is None else (dict(state.configs), state.active),
        "active": {
            name: module.active_adapter for name, module in model.named_modules() if hasattr(module, "active_adapter")
        },
    }


def model_changes(model: nn.Module, before: dict) -> list[str]:
    after = snapshot(model)
    changes = []
    if after["modules"] != before["modules"]:
        names = set(after["modules"]) | set(before["modules"])
        moved = sorted(n for n in names if after["modules"].get(n) != before["modules"].get(n))
        changes.append(f"modules replaced or added: {moved[:4]}")
    if after["state"].keys() != before["state"].keys():
        changes.append("state_dict keys changed")
    else:
        changed = [key for key, value in before["state"].items() if not torch.equal(after["state"][key], value)]
        if changed:
            changes.append(f"tensors changed: {changed[:4]}")
    for key, what in [
        ("grad", "requires_grad changed"),
        ("training", "train/eval mode changed"),
        ("has_state", "lorakit_adapters attribute appeared or vanished"),
        ("adapters", "adapter registry changed"),
        ("active", "active adapter changed"),
    ]:
        if after[key] != before[key]:
            changes.append(what)
    return changes


def one_line(error: BaseException, *words: str) -> str:
    assert isinstance(error, LorakitError), f"{type(error).__name__} instead of LorakitError: {error}"
    message = str(error)
    assert message.strip() and "\n" not in message, f"not a one-line message: {message!r}"
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def expect_clean_failure(model: nn.Module, action, *words: str) -> str:
    """`action()` must raise a one-line LorakitError naming `words` and leave `model` untouched."""
    before = snapshot(model)
    try:
        action()
    except Exception as error:  # anything else than LorakitError is reported below, with the damage done
        raised = error
    else:
        pytest.fail("no error was raised")
    changes = model_changes(model, before)
    assert isinstance(raised, LorakitError) and not changes, (
        f"raised {type(raised).__name__}: {raised}; the model was modified: {changes or 'no'}"
    )
    return one_line(raised, *words)


def failed_load(model: nn.Module, path, *words: str, adapter_name: str = "default") -> str:
    return expect_clean_failure(model, lambda: load_adapter(model, path, adapter_name=adapter_name), *words)


# --- control: the adapters these tests break load fine when intact ---------------------------


def test_intact_adapters_load(tmp_path):
    source = tiny_bert(seed=1)
    make_adapter(tmp_path / "plain", source)
    target = tiny_bert(seed=1)
    load_adapter(target, tmp_path / "plain")
    torch.testing.assert_close(logits(target), logits(source))

    source_cls = tiny_bert(3, seed=1)
    make_adapter(tmp_path / "cls", source_cls, task_type="SEQ_CLS")
    target_cls = tiny_bert(3, seed=2)
    load_adapter(target_cls, tmp_path / "cls")
    torch.testing.assert_close(target_cls.classifier.weight, source_cls.classifier.weight)


# --- adapters that do not fit the model ------------------------------------------------------


def test_hidden_size_mismatch(tmp_path):
    make_adapter(tmp_path, tiny_bert(hidden_size=48), r=8)
    message = failed_load(tiny_bert(hidden_size=32), tmp_path)
    assert re.search(r"'bert\.encoder\.layer\.\d\.attention\.self\.(query|value)'", message), "module not named"
    assert "(8, 48)" in message or "(48, 8)" in message, "the adapter's shape must be named"
    assert "(32, 32)" in message or "(8, 32)" in message or "(32, 8)" in message, "the model's shape must be named"


def test_llama_adapter_on_bert(tmp_path):
    make_adapter(tmp_path, tiny_llama(), target_modules=["q_proj", "v_proj"])
    message = failed_load(tiny_bert(), tmp_path)
    assert re.search(r"'model\.layers\.\d\.self_attn\.[qv]_proj'", message), "the missing module must be named"
    assert "not have" in message or "does not exist" in message or "no module" in message


def test_bert_adapter_on_llama(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    message = failed_load(tiny_llama(), tmp_path)
    assert re.search(r"'bert\.encoder\.layer\.\d\.attention\.self\.(query|value)'", message), message


def test_seq_cls_labels_mismatch(tmp_path):
    seq_cls_adapter(tmp_path, num_labels=2)
    message = failed_load(tiny_bert(num_labels=3), tmp_path, "classifier")
    assert "(2, 32)" in message and "(3, 32)" in message, message
    assert "num_labels" in message


def test_seq_cls_adapter_on_model_without_head(tmp_path):
    seq_cls_adapter(tmp_path)
    torch.manual_seed(0)
    masked_lm = BertForMaskedLM(bert_config()).eval()  # same "bert." body, an LM head instead of a classifier
    message = failed_load(masked_lm, tmp_path, "classifier")
    assert "modules_to_save" in message or "head" in message


def test_seq_cls_adapter_without_classifier_weights(tmp_path):
    seq_cls_adapter(tmp_path)

    def drop_head(tensors):
        for key in [k for k in tensors if k.startswith(f"{PREFIX}classifier.")]:
            del tensors[key]

    rewrite_weights(tmp_path, drop_head)
    message = failed_load(tiny_bert(), tmp_path, "classifier")
    assert "random" in message or "no weights" in message


def test_seq_cls_adapter_missing_classifier_bias(tmp_path):
    seq_cls_adapter(tmp_path)
    rewrite_weights(tmp_path, lambda tensors: tensors.pop(f"{PREFIX}classifier.bias"))
    failed_load(tiny_bert(), tmp_path, "classifier", "bias")


def test_head_tensor_the_model_head_does_not_have(tmp_path):
    """An extra tensor under the head's name must be refused before the model is touched."""
    seq_cls_adapter(tmp_path)
    rewrite_weights(tmp_path, lambda tensors: tensors.update({f"{PREFIX}classifier.extra_scale": torch.ones(2)}))
    failed_load(tiny_bert(), tmp_path, "classifier.extra_scale")


@pytest.mark.parametrize("shape", [(), (2,), (2, 32, 1)])
def test_seq_cls_head_weight_of_another_rank_is_damaged_not_another_label_count(tmp_path, shape):
    """Only a head of the base's rank with another row count means other labels (a scalar head
    once crashed the message: IndexError)."""
    seq_cls_adapter(tmp_path)
    rewrite_weights(tmp_path, lambda tensors: tensors.update({f"{PREFIX}classifier.weight": torch.zeros(shape)}))
    message = failed_load(tiny_bert(), tmp_path, "classifier", f"{shape} in the adapter", "it is damaged")
    assert "num_labels" not in message


@pytest.mark.parametrize("which", ["lora_A", "lora_B"])
@pytest.mark.parametrize("shape", [(), (4,), (4, 32, 1)])
def test_lora_weight_that_is_no_matrix(tmp_path, which, shape):
    """A LoRA weight of rank other than 2 (a scalar once crashed the message: IndexError)."""
    make_adapter(tmp_path, tiny_bert())
    key = f"{PREFIX}bert.encoder.layer.0.attention.self.query.{which}.weight"
    rewrite_weights(tmp_path, lambda tensors: tensors.update({key: torch.zeros(shape)}))
    failed_load(tiny_bert(), tmp_path, "'bert.encoder.layer.0.attention.self.query'", "must be matrices", "damaged")


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.complex64])
def test_lora_weight_that_is_not_floating_point(tmp_path, dtype):
    """Integers or booleans under a LoRA name are a damaged file; copying them once loaded them as weights."""
    make_adapter(tmp_path, tiny_bert())
    key = f"{PREFIX}bert.encoder.layer.0.attention.self.query.lora_A.weight"
    rewrite_weights(tmp_path, lambda tensors: tensors.update({key: tensors[key].to(dtype)}))
    failed_load(tiny_bert(), tmp_path, "lora_A of dtype", str(dtype).removeprefix("torch."), "floating point")


def test_lora_weights_in_half_precision_load(tmp_path):
    source = tiny_bert(seed=1)
    make_adapter(tmp_path, source)
    rewrite_weights(tmp_path, lambda tensors: tensors.update({k: v.half() for k, v in tensors.items()}))
    target = load_adapter(tiny_bert(seed=1), tmp_path)
    torch.testing.assert_close(logits(target), logits(source), atol=1e-2, rtol=1e-2)


def test_rank_in_config_differs_from_weights(tmp_path):
    make_adapter(tmp_path, tiny_bert(), r=4)
    rewrite_config(tmp_path, r=8)
    message = failed_load(tiny_bert(), tmp_path)
    assert re.search(r"'bert\.encoder\.layer\.\d\.attention\.self\.(query|value)'", message), message
    assert re.search(r"\b4\b", message) and re.search(r"\b8\b", message), "both ranks must be named"


def test_lora_b_missing(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    rewrite_weights(tmp_path, lambda t: t.pop(f"{PREFIX}bert.encoder.layer.1.attention.self.value.lora_B.weight"))
    failed_load(tiny_bert(), tmp_path, "bert.encoder.layer.1.attention.self.value", "lora_B")


def test_lora_a_missing(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    rewrite_weights(tmp_path, lambda t: t.pop(f"{PREFIX}bert.encoder.layer.1.attention.self.value.lora_A.weight"))
    failed_load(tiny_bert(), tmp_path, "bert.encoder.layer.1.attention.self.value", "lora_A")


def test_lora_b_bias_without_lora_bias_in_config(tmp_path):
    make_adapter(tmp_path, tiny_bert(), lora_bias=True)
    rewrite_config(tmp_path, lora_bias=False)
    failed_load(tiny_bert(), tmp_path, "lora_B")


def test_lora_bias_in_config_but_no_bias_weights(tmp_path):
    """lora_bias=True with no lora_B.bias tensors would leave B's bias at nn.Linear's random init."""
    make_adapter(tmp_path, tiny_bert(), lora_bias=True)

    def drop_bias(tensors):
        for key in [k for k in tensors if k.endswith(".lora_B.bias")]:
            del tensors[key]

    rewrite_weights(tmp_path, drop_bias)
    failed_load(tiny_bert(), tmp_path, "lora_B")


def test_lora_b_bias_with_wrong_shape(tmp_path):
    make_adapter(tmp_path, tiny_bert(), lora_bias=True)
    key = f"{PREFIX}bert.encoder.layer.0.attention.self.query.lora_B.bias"
    rewrite_weights(tmp_path, lambda t: t.update({key: torch.zeros(7)}))
    failed_load(tiny_bert(), tmp_path, "bert.encoder.layer.0.attention.self.query")


def test_lora_weights_on_a_non_linear_module(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    extra = {
        f"{PREFIX}bert.embeddings.LayerNorm.lora_A.weight": torch.zeros(8, 32),
        f"{PREFIX}bert.embeddings.LayerNorm.lora_B.weight": torch.zeros(32, 8),
    }
    rewrite_weights(tmp_path, lambda t: t.update(extra))
    failed_load(tiny_bert(), tmp_path, "bert.embeddings.LayerNorm", "LayerNorm")


def test_tensor_for_a_parameter_the_base_lacks(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    rewrite_weights(tmp_path, lambda t: t.update({f"{PREFIX}bert.encoder.layer.5.output.dense.bias": torch.zeros(32)}))
    failed_load(tiny_bert(), tmp_path, "bert.encoder.layer.5.output.dense.bias")


def test_tensor_without_peft_prefix(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    rewrite_weights(tmp_path, lambda t: t.update({"bert.pooler.dense.bias": torch.zeros(32)}))
    failed_load(tiny_bert(), tmp_path, "bert.pooler.dense.bias")


def test_lora_variant_tensors(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    key = f"{PREFIX}bert.encoder.layer.0.attention.self.query.lora_magnitude_vector"
    rewrite_weights(tmp_path, lambda t: t.update({key: torch.ones(32)}))
    failed_load(tiny_bert(), tmp_path, "lora_magnitude_vector")


def test_no_lora_weights_at_all(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    save_file({f"{PREFIX}bert.pooler.dense.bias": torch.zeros(32)}, tmp_path / WEIGHTS)
    failed_load(tiny_bert(), tmp_path, "lora_A")


# --- broken adapter folders ------------------------------------------------------------------


class _WritesSentinelWhenUnpickled:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("lorakit must never unpickle an adapter")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def write_pickled_weights(folder: Path) -> Path:
    sentinel = folder.parent / f"{folder.name}-UNPICKLED"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_WritesSentinelWhenUnpickled(str(sentinel))))
    return sentinel


def test_pickled_weights_are_refused(tmp_path, no_unpickling):
    folder = tmp_path / "adapter"
    make_adapter(folder, tiny_bert())
    (folder / WEIGHTS).unlink()
    sentinel = write_pickled_weights(folder)
    message = failed_load(tiny_bert(), folder, "adapter_model.bin")
    assert "pickle" in message and "safetensors" in message
    assert not sentinel.exists(), "the pickle was unpickled"


def test_peft_pickled_adapter_is_refused(tmp_path, no_unpickling):
    """What `save_pretrained(safe_serialization=False)` writes: config + adapter_model.bin."""
    model = peft.get_peft_model(tiny_bert(), peft.LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query"]))
    model.save_pretrained(tmp_path, safe_serialization=False)
    assert (tmp_path / "adapter_model.bin").is_file() and not (tmp_path / WEIGHTS).exists()
    message = failed_load(tiny_bert(), tmp_path, "pickle")
    assert "safetensors" in message


def test_folder_with_only_pickled_weights(tmp_path, no_unpickling):
    folder = tmp_path / "adapter"
    folder.mkdir()
    sentinel = write_pickled_weights(folder)
    message = failed_load(tiny_bert(), folder, str(folder))
    assert CONFIG in message or "pickle" in message
    assert not sentinel.exists(), "the pickle was unpickled"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b'{"r": 4,}',
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"LORA"',
        b'{"peft_type": "LORA", "r": 0, "target_modules": ["query"]}',
        b'{"peft_type": "LORA", "r": "eight", "target_modules": ["query"]}',
        b'{"peft_type": "LORA", "r": 8, "target_modules": "("}',
        b'{"peft_type": "LORA", "r": 8, "lora_dropout": 2}',
        b'{"peft_type": "LOHA", "r": 8}',
        b'{"peft_type": "LORA", "r": 8, "rank_pattern": ["query"]}',
        b"[" * 3_000 + b"]" * 3_000,  # once a RecursionError
        b'{"peft_type": "LORA", "r": ' + b"8" * 5_000 + b"}",  # once a bare ValueError
        b'{"peft_type": "LORA", "r": 8, "target_modules": ["query"], "modules_to_save": true}',  # once a TypeError
        b'{"peft_type": "LORA", "r": 8, "target_modules": ["query"], "lora_bias": "false"}',  # once lora_bias on
        b'{"peft_type": "LORA\\r\\n", "r": 8}',
    ],
)
def test_malformed_adapter_config(tmp_path, content):
    make_adapter(tmp_path, tiny_bert())
    (tmp_path / CONFIG).write_bytes(content)
    failed_load(tiny_bert(), tmp_path)


def test_missing_adapter_config(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    (tmp_path / CONFIG).unlink()
    failed_load(tiny_bert(), tmp_path, CONFIG)


def test_missing_weights(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    (tmp_path / WEIGHTS).unlink()
    failed_load(tiny_bert(), tmp_path, WEIGHTS)


@pytest.mark.parametrize("content", [b"", b"not a safetensors file", b'\x08\x00\x00\x00\x00\x00\x00\x00{"a":1}'])
def test_corrupt_weights(tmp_path, content):
    make_adapter(tmp_path, tiny_bert())
    (tmp_path / WEIGHTS).write_bytes(content)
    failed_load(tiny_bert(), tmp_path, WEIGHTS)


def test_truncated_weights(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    data = (tmp_path / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    failed_load(tiny_bert(), tmp_path, WEIGHTS)


def test_missing_folder(tmp_path):
    failed_load(tiny_bert(), tmp_path / "no-such-adapter", "no-such-adapter", "does not exist")
    failed_load(tiny_bert(), str(tmp_path / "no" / "such" / "adapter"), "does not exist")


def test_missing_relative_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    failed_load(tiny_bert(), "no-such-adapter", "no-such-adapter")


def test_missing_hub_repo_gives_one_line(tmp_path, monkeypatch):
    """A name that looks like a Hub id and is no local folder: any Hub failure is one clean line."""
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to the Hub.\nCheck your internet connection.\nTraceback-ish detail")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    monkeypatch.chdir(tmp_path)
    message = failed_load(tiny_bert(), "someone/no-such-adapter", "someone/no-such-adapter")
    assert "couldn't connect" in message


def test_file_instead_of_folder(tmp_path):
    make_adapter(tmp_path, tiny_bert())
    failed_load(tiny_bert(), tmp_path / WEIGHTS, "is a file")
    failed_load(tiny_bert(), tmp_path / CONFIG, "is a file")


def test_dora_adapter_is_refused(tmp_path):
    config = peft.LoraConfig(r=4, target_modules=["query", "value"], use_dora=True)
    peft.get_peft_model(tiny_bert(), config).save_pretrained(tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["use_dora"] is True
    message = failed_load(tiny_bert(), tmp_path, "use_dora")
    assert "peft" in message


@pytest.mark.parametrize(
    "changes",
    [
        {"peft_type": "IA3"},
        {"init_lora_weights": "pissa"},
        {"init_lora_weights": "olora"},
        {"layer_replication": [[0, 1]]},
    ],
)
def test_unsupported_peft_features_are_refused(tmp_path, changes):
    make_adapter(tmp_path, tiny_bert())
    rewrite_config(tmp_path, **changes)
    failed_load(tiny_bert(), tmp_path, next(iter(changes)) if "peft_type" not in changes else "IA3")


# --- adapter names ---------------------------------------------------------------------------


def test_load_under_a_name_already_used(tmp_path):
    source = tiny_bert(seed=1)
    make_adapter(tmp_path / "one", source)
    make_adapter(tmp_path / "two", tiny_bert(seed=2), target_modules=["key"])
    model = tiny_bert(seed=1)
    load_adapter(model, tmp_path / "one", adapter_name="task")
    expected = logits(model)
    failed_load(model, tmp_path / "two", "task", adapter_name="task")
    assert list_adapters(model) == ["task"]
    torch.testing.assert_close(logits(model), expected)
    assert not any(isinstance(m, LoraLinear) for n, m in model.named_modules() if n.endswith(".key"))


def test_load_under_the_name_of_an_added_adapter(tmp_path):
    make_adapter(tmp_path, tiny_bert(seed=1))
    model = tiny_bert()
    add_adapter(model, LoraConfig(target_modules=["query"]))
    failed_load(model, tmp_path, "default")


@pytest.mark.parametrize("name", ["my.adapter", "a/b", "", "has space", "../x"])
def test_load_under_a_bad_name(tmp_path, name):
    make_adapter(tmp_path, tiny_bert())
    failed_load(tiny_bert(), tmp_path, adapter_name=name)


def test_model_still_loads_a_good_adapter_after_failures(tmp_path):
    source = tiny_bert(seed=1)
    make_adapter(tmp_path / "good", source, task_type="SEQ_CLS")
    make_adapter(tmp_path / "wide", tiny_bert(hidden_size=48))
    seq_cls_adapter(tmp_path / "three", num_labels=3)
    model = tiny_bert(seed=1)
    for bad in ("wide", "three", "missing"):
        with pytest.raises(LorakitError):
            load_adapter(model, tmp_path / bad)
    load_adapter(model, tmp_path / "good")
    torch.testing.assert_close(logits(model), logits(source))


# --- add_adapter errors ----------------------------------------------------------------------


def failed_add(model: nn.Module, config, name: str = "default", *words: str) -> str:
    return expect_clean_failure(model, lambda: add_adapter(model, config, name), *words)


def test_add_duplicate_name():
    model = tiny_bert()
    add_adapter(model, LoraConfig(target_modules=["query"]), "task")
    failed_add(model, LoraConfig(target_modules=["value"]), "task", "'task'", "already exists")


@pytest.mark.parametrize("name", ["my.adapter", "a/b", "", "tab\tname", 3, None])
def test_add_bad_name(name):
    failed_add(tiny_bert(), LoraConfig(target_modules=["query"]), name, repr(name))


def test_add_bad_name_on_model_with_adapter():
    model = tiny_bert()
    add_adapter(model, LoraConfig(target_modules=["query"]), "first")
    failed_add(model, LoraConfig(target_modules=["value"]), "second.one", "'second.one'")


@pytest.mark.parametrize("task_type", ["SEQ_CLS", "TOKEN_CLS"])
def test_add_seq_cls_on_model_without_head(task_type):
    message = failed_add(tiny_bert_base(), LoraConfig(target_modules=["query"], task_type=task_type))
    assert "classifier" in message and "score" in message
    assert "modules_to_save" in message


def test_add_seq_cls_on_causal_lm():
    message = failed_add(tiny_llama(), LoraConfig(target_modules=["q_proj"], task_type="SEQ_CLS"))
    assert "classifier" in message or "score" in message


def test_add_modules_to_save_missing():
    failed_add(tiny_bert(), LoraConfig(target_modules=["query"], modules_to_save=["poolr"]), "default", "'poolr'")


def test_add_modules_to_save_missing_alongside_a_good_one():
    config = LoraConfig(target_modules=["query"], task_type="SEQ_CLS", modules_to_save=["pooler", "lm_head"])
    failed_add(tiny_bert(), config, "default", "'lm_head'")


def test_add_with_a_peft_config():
    failed_add(tiny_bert(), peft.LoraConfig(target_modules=["query"]), "default", "LoraConfig")


def test_add_failure_on_model_with_an_adapter_leaves_it_alone():
    model = tiny_bert()
    add_adapter(model, LoraConfig(target_modules=["query"], task_type="SEQ_CLS"), "first")
    failed_add(model, LoraConfig(target_modules=["quary"]), "second", "quary")
    failed_add(model, LoraConfig(target_modules=["value"], modules_to_save=["nope"]), "second", "'nope'")
    assert list_adapters(model) == ["first"]


# --- save_adapter writes atomically ----------------------------------------------------------


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def assert_no_temporary_files(folder: Path) -> None:
    names = sorted(path.name for path in folder.iterdir())
    assert not [n for n in names if re.search(r"tmp|temp|~$|\.part$", n)], names
    assert names == sorted([CONFIG, WEIGHTS]), names


def test_save_over_existing_adapter_leaves_no_temporary_files(tmp_path):
    make_adapter(tmp_path, tiny_bert(seed=1), r=4)
    second = tiny_bert(seed=2)
    make_adapter(tmp_path, second, r=2, lora_alpha=4)
    assert_no_temporary_files(tmp_path)
    assert json.loads((tmp_path / CONFIG).read_text())["r"] == 2
    model = tiny_bert(seed=2)
    load_adapter(model, tmp_path)
    torch.testing.assert_close(logits(model), logits(second))


@pytest.fixture
def saved_first(tmp_path):
    """An adapter folder holding a first adapter, its bytes, and the logits it produces."""
    source = tiny_bert(seed=1)
    folder = make_adapter(tmp_path / "adapter", source, r=4, lora_alpha=8)
    return folder, folder_bytes(folder), logits(source)


def second_model() -> nn.Module:
    model = tiny_bert(seed=2)
    add_adapter(model, LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=32, init_lora_weights=False))
    return model


def assert_first_adapter_intact(folder: Path, before: dict[str, bytes], expected: torch.Tensor) -> None:
    assert folder_bytes(folder) == before, "the previous adapter files were changed"
    assert_no_temporary_files(folder)
    model = tiny_bert(seed=1)
    load_adapter(model, folder)
    torch.testing.assert_close(logits(model), expected)


def test_save_failing_while_writing_weights_keeps_previous_adapter(saved_first, monkeypatch):
    folder, before, expected = saved_first

    def half_written(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\x00" * 17)  # a partial file, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(lorakit_io, "save_file", half_written)
    with pytest.raises(
        LorakitError, match=f"^cannot write {folder}/adapter_model.safetensors: no space left on the device;"
    ):
        save_adapter(second_model(), folder)
    monkeypatch.undo()
    assert_first_adapter_intact(folder, before, expected)


def test_save_failing_while_writing_config_keeps_previous_adapter(saved_first, monkeypatch):
    """The weights and the config are one adapter: new weights next to the old config would load
    silently with the wrong lora_alpha."""
    folder, before, expected = saved_first
    real_write_text = Path.write_text

    def failing_write_text(self, *args, **kwargs):
        if self.parent == folder:
            raise OSError(28, "No space left on device")
        return real_write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", failing_write_text)
    with pytest.raises(
        LorakitError, match=f"^cannot write {folder}/adapter_model.safetensors: no space left on the device;"
    ):
        save_adapter(second_model(), folder)
    monkeypatch.undo()
    assert_first_adapter_intact(folder, before, expected)


def test_save_with_a_path_as_base_model_name(saved_first):
    """A pathlib.Path in base_model_name_or_path is saved as a string, or refused cleanly, before
    anything on disk changes."""
    folder, before, expected = saved_first
    model = tiny_bert(seed=2)
    config = LoraConfig(target_modules=["query"], base_model_name_or_path=Path("/models/tiny-bert"))
    add_adapter(model, config)
    try:
        save_adapter(model, folder)
    except LorakitError as error:
        assert "\n" not in str(error)
        assert_first_adapter_intact(folder, before, expected)
    else:
        assert json.loads((folder / CONFIG).read_text())["base_model_name_or_path"] == "/models/tiny-bert"


def test_save_without_adapter_or_with_unknown_name(tmp_path):
    model = tiny_bert()
    with pytest.raises(LorakitError) as error:
        save_adapter(model, tmp_path / "a")
    one_line(error.value)
    add_adapter(model, LoraConfig(target_modules=["query"]), "one")
    with pytest.raises(LorakitError) as error:
        save_adapter(model, tmp_path / "b", "two")
    one_line(error.value, "'two'")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
