"""Property: any damaged adapter folder loads or ends in one LorakitError line, the model untouched.

The folder is a real one (a tiny BERT classifier's adapter with its head, lorakit.json as
`lorakit train` writes it). Hypothesis damages one thing at a time: a field of adapter_config.json
(a value of another type, a missing key, a PEFT feature, junk JSON, not JSON at all), a field of
lorakit.json, or the safetensors file (its header length, its header's JSON, dtypes, shapes and
offsets, tensor names, truncation, tensors of other dtypes and shapes under the right names). The
adapter is then read as every command reads it (`read_adapter_artifact`) and loaded onto the base
(`load_adapter`). Allowed: a load, or a LorakitError with a one-line message after which the model
is exactly as it was.
"""

from __future__ import annotations

import copy
import json
import shutil
import struct
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file
from torch import nn

from adapter_folders import load_base, save_adapter_folder, save_base
from lorakit import LorakitError, load_adapter
from lorakit.artifacts import read_adapter_artifact

CONFIG, WEIGHTS, INFO = "adapter_config.json", "adapter_model.safetensors", "lorakit.json"
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(["", "LORA", "SEQ_CLS", "query", "(", "all-linear", "gaussian", "pissa", "nf4", "classifier"]),
    st.text(max_size=6),
    st.lists(st.sampled_from(["query", "value", "classifier", ""]) | st.integers(), max_size=3),
    st.dictionaries(st.sampled_from(["query", "(", "", "value"]), st.integers(-2, 9) | st.text(max_size=2), max_size=2),
)
NEW_KEYS = st.sampled_from(["use_dora", "lora_ga_config", "peft_type", "version"]) | st.text(max_size=4)
NOT_JSON = st.sampled_from([b"", b"{", b"[]", b'"x"', b"null", b"\xff\xfe{}", b"[" * 3_000 + b"]" * 3_000])
DTYPES = ["F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2", "U16", "C64"]
TORCH_DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.uint8, torch.bool]


class Adapter:
    """An intact adapter folder, its tensors, and the base it was trained on (copied for each load)."""

    def __init__(self, folder: Path, tensors: dict[str, torch.Tensor], base: nn.Module) -> None:
        self.folder, self.tensors, self.base = folder, tensors, base

    def __repr__(self) -> str:  # Hypothesis prints it with every failing example
        return f"Adapter({self.folder.name})"


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Adapter:
    root = tmp_path_factory.mktemp("fuzz-adapter")
    base = save_base("bert", root / "base")
    folder = save_adapter_folder("bert", base, root / "adapter")
    return Adapter(folder, load_file(folder / WEIGHTS), load_base("bert", base))


def damaged_json(draw: st.DrawFn, text: str) -> bytes:
    """The JSON object `text` with one field given a junk value, one field dropped, or one field added;
    or something that is no such object."""
    data = json.loads(text)
    how = draw(st.sampled_from(["value", "value", "value", "drop", "add", "whole"]))
    if how == "whole":
        return draw(NOT_JSON | JUNK.map(lambda value: json.dumps(value).encode()))
    if how == "add":
        data[draw(NEW_KEYS)] = draw(JUNK)
    else:
        key = draw(st.sampled_from(sorted(data)))
        if how == "drop":
            del data[key]
        else:
            data[key] = draw(JUNK)
    return json.dumps(data).encode()


def safetensors_parts(content: bytes) -> tuple[dict, bytes]:
    """(header, data) of a safetensors file: an 8-byte little-endian length, that much JSON, the data."""
    (length,) = struct.unpack("<Q", content[:8])
    return json.loads(content[8 : 8 + length]), content[8 + length :]


def safetensors_file(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def damaged_header(draw: st.DrawFn, header: dict) -> dict:
    """The header with one tensor's dtype, shape, offsets or name changed, or a junk entry."""
    names = sorted(name for name in header if name != "__metadata__")
    name = draw(st.sampled_from(names))
    entry = header[name]
    what = draw(st.sampled_from(["dtype", "shape", "offsets", "rename", "entry", "metadata"]))
    if what == "dtype":
        entry["dtype"] = draw(st.sampled_from([*DTYPES, "X9"]) | JUNK)
    elif what == "shape":
        entry["shape"] = draw(st.lists(st.integers(-1, 40), max_size=3) | JUNK)
    elif what == "offsets":
        entry["data_offsets"] = draw(st.lists(st.integers(-1, 2**40), min_size=2, max_size=2) | JUNK)
    elif what == "rename":
        new = draw(st.sampled_from(["", "classifier.weight", name.removeprefix("base_model.model."), name + ".x"]))
        header[new or draw(st.text(max_size=5))] = header.pop(name)
    elif what == "entry":
        header[name] = draw(JUNK)
    else:
        header["__metadata__"] = draw(JUNK)
    return header


@st.composite
def damaged_weights(draw: st.DrawFn, content: bytes, tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors file, damaged in one way."""
    header, data = safetensors_parts(content)
    how = draw(st.sampled_from(["header", "header", "length", "truncate", "retype", "reshape", "bytes"]))
    if how == "header":
        return safetensors_file(damaged_header(draw, header), data)
    if how == "length":  # a length past the end, zero, or into the data
        return struct.pack("<Q", draw(st.integers(0, 2**64 - 1) | st.integers(0, 200))) + content[8:]
    if how == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "bytes":
        return draw(st.binary(max_size=64))
    name = draw(st.sampled_from(sorted(tensors)))
    changed = dict(tensors)
    if how == "retype":
        changed[name] = tensors[name].to(draw(st.sampled_from(TORCH_DTYPES)))
    else:
        shape = draw(st.lists(st.integers(0, 40), max_size=3))
        changed[name] = torch.zeros(shape, dtype=tensors[name].dtype)
    with tempfile.TemporaryDirectory() as folder:
        save_file(changed, f"{folder}/w.safetensors")
        return Path(f"{folder}/w.safetensors").read_bytes()


def state_of(model: nn.Module) -> tuple[list[str], dict[str, torch.Tensor]]:
    return [name for name, _ in model.named_modules()], {k: v.clone() for k, v in model.state_dict().items()}


def assert_loads_or_refuses_cleanly(folder: Path, template: nn.Module) -> None:
    """Read the folder as the commands do and load it onto a copy of the base: a load, or one
    LorakitError line with the model as it was."""
    model = copy.deepcopy(template)
    modules, state = state_of(model)
    try:
        read_adapter_artifact(folder)
        load_adapter(model, folder)
    except LorakitError as error:
        message = str(error)
        event(" ".join(message.replace(str(folder), "FOLDER").split()[:4]))
        assert message.strip() and "\n" not in message and "\r" not in message, repr(message)
        after_modules, after_state = state_of(model)
        assert after_modules == modules and after_state.keys() == state.keys()
        assert all(torch.equal(after_state[key], value) for key, value in state.items())
        return
    event("loaded")


def copied(folder: Path, into: str) -> Path:
    target = Path(into) / "adapter"
    shutil.copytree(folder, target)
    return target


@given(data=st.data())
def test_any_damaged_adapter_config_loads_or_is_refused_cleanly(adapter: Adapter, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as into:
        target = copied(adapter.folder, into)
        (target / CONFIG).write_bytes(damaged_json(data.draw, (adapter.folder / CONFIG).read_text()))
        if data.draw(st.booleans()):  # a plain PEFT folder: the config's base_model_name_or_path counts
            (target / INFO).unlink()
        assert_loads_or_refuses_cleanly(target, adapter.base)


@given(data=st.data())
def test_any_damaged_lorakit_json_loads_or_is_refused_cleanly(adapter: Adapter, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as into:
        target = copied(adapter.folder, into)
        (target / INFO).write_bytes(damaged_json(data.draw, (adapter.folder / INFO).read_text()))
        assert_loads_or_refuses_cleanly(target, adapter.base)


@given(data=st.data())
def test_any_damaged_safetensors_file_loads_or_is_refused_cleanly(adapter: Adapter, data: st.DataObject) -> None:
    content = (adapter.folder / WEIGHTS).read_bytes()
    with tempfile.TemporaryDirectory() as into:
        target = copied(adapter.folder, into)
        (target / WEIGHTS).write_bytes(data.draw(damaged_weights(content, adapter.tensors)))
        assert_loads_or_refuses_cleanly(target, adapter.base)
