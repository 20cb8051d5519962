"""A model folder that cannot work fails with one line that names the problem and the fix: no
weights (checked before transformers is asked), a junk config.json, unreadable tokenizer files."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoConfig, LlamaConfig

from lorakit.errors import LorakitError
from lorakit.models import load_model, load_tokenizer
from lorakit.models.loading import load_config
from tiny_models import tiny_llama


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
        ({}, "Couldn't instantiate the backend tokenizer"),
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


def test_load_tokenizer_on_a_missing_path():
    with pytest.raises(LorakitError) as error:
        load_tokenizer("./no/such/model")
    assert one_line(error).startswith("no such model folder or file: ./no/such/model;")
