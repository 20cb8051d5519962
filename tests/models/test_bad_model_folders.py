"""A model folder that cannot work fails with one line that names the problem and the fix: no
weights (checked before transformers is asked), a junk config.json, unreadable or missing tokenizer
files, a path that does not exist (never sent to the Hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, LlamaConfig

from lorakit.errors import LorakitError
from lorakit.models import load_classifier, load_model, load_tokenizer
from lorakit.models.loading import load_config
from tiny_models import tiny_bert, tiny_llama


def one_line(error: pytest.ExceptionInfo[LorakitError]) -> str:
    """The error's message, asserted to be a single line."""
    message = str(error.value)
    assert "\n" not in message, message
    return message


def test_folder_with_config_but_no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    LlamaConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(
        tmp_path
    )
    monkeypatch.setattr(AutoConfig, "from_pretrained", _not_asked)  # the check comes before transformers
    with pytest.raises(LorakitError) as error:
        load_model(str(tmp_path))
    assert one_line(error) == (
        f"model folder {tmp_path} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
        "copy the weight files into it or pass another model"
    )


def _not_asked(*args, **kwargs):
    raise AssertionError("transformers was asked to load a folder without weights")


def test_a_folder_with_weights_still_loads(tmp_path: Path):
    tiny_llama().save_pretrained(tmp_path)
    assert load_model(str(tmp_path)).config.num_hidden_layers == 2


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ("not json {", "is not a valid JSON file"),
        ("null", "argument of type 'NoneType' is not iterable"),
        ("{}", "Should have a `model_type` key"),
        ('{"model_type": "llama", "hidden_size": "wide"}', "Validation error for field 'hidden_size'"),
    ],
    ids=["not-json", "null", "no-model-type", "wrong-field-type"],
)
def test_junk_config_json(tmp_path: Path, config: str, reason: str):
    (tmp_path / "config.json").write_text(config)
    (tmp_path / "model.safetensors").write_bytes(b"")
    for load in (load_config, load_model):
        with pytest.raises(LorakitError) as error:
            load(str(tmp_path))
        message = one_line(error)
        assert message.startswith(f"cannot load model {str(tmp_path)!r} (") and reason in message, message


def test_junk_weights_file(tmp_path: Path):
    tiny_llama().config.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(LorakitError) as error:
        load_model(str(tmp_path))
    assert "Error while deserializing header" in one_line(error)


@pytest.mark.parametrize(
    ("files", "reason"),
    [
        ({}, "the folder has no tokenizer files"),
        ({"tokenizer.json": "junk"}, "Expecting value"),
        ({"tokenizer.json": '{"added_tokens": [], "model": {"type": "foo"}}'}, "data did not match any variant"),
    ],
    ids=["no-files", "not-json", "bad-model"],
)
def test_load_tokenizer_on_a_junk_folder(tmp_path: Path, files: dict[str, str], reason: str):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(LorakitError) as error:
        load_tokenizer(str(tmp_path))
    message = one_line(error)
    assert message.startswith(f"cannot load the tokenizer of model {str(tmp_path)!r} (") and reason in message
    assert message.endswith(
        "give the model folder its tokenizer files (tokenizer.json and tokenizer_config.json) or pass another model"
    )


@pytest.mark.parametrize("name", ["./no/such/model", "no/such/model", "/no/such/model"])
def test_load_tokenizer_on_a_missing_path(name: str):
    """A name with more than one "/" is no Hub id (`owner/name`): it is a path, and a missing one
    is said so, never sent to the Hub ("Repo id must be in the form ...")."""
    with pytest.raises(LorakitError) as error:
        load_tokenizer(name)
    assert one_line(error).startswith(f"no such model folder or file: {name};")


def test_a_tokenizer_without_its_vocabulary_is_refused(tmp_path: Path):
    """BERT's tokenizer class builds from a folder without vocab.txt, knowing only its 5 special
    tokens: every word would be [UNK] and training would learn nothing, silently."""
    tiny_bert().save_pretrained(tmp_path)
    with pytest.raises(LorakitError) as error:
        load_tokenizer(str(tmp_path))
    assert one_line(error) == (
        f"cannot load the tokenizer of model {str(tmp_path)!r} (it has no vocabulary beyond its 5 special tokens); "
        "give the model folder its tokenizer files (tokenizer.json and tokenizer_config.json) or pass another model"
    )


def test_a_classifier_base_with_another_number_of_classes_loads_with_a_fresh_head(tmp_path: Path):
    """A base fine-tuned on 3 classes, trained on 2: the head is replaced, not a size-mismatch error."""
    tiny_bert().save_pretrained(tmp_path)  # a 3-class head
    model = load_classifier(str(tmp_path), ["bad", "good"])
    assert model.classifier.out_features == 2 and model.config.id2label == {0: "bad", 1: "good"}
