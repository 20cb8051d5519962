"""lorakit.json has one owner: a versioned ArtifactInfo, read back exactly, old files read, new ones refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lorakit.artifacts import (
    ARTIFACT_INFO_FILE,
    FORMAT_VERSION,
    ArtifactInfo,
    artifact_kind,
    find_artifact_folder,
    read_artifact_info,
    run_artifact_folder,
    save_artifact,
    write_artifact_info,
)
from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind


def test_round_trip_keeps_every_field(tmp_path: Path):
    info = ArtifactInfo(
        task=TaskKind.CLASSIFICATION,
        method="lora",
        base_model="sentence-transformers/all-MiniLM-L6-v2",
        max_length=128,
        label_names=("neg", "pos"),
        text_pair=True,
        combined={"method": "svd", "weights": [0.5, 0.5], "adapters": ["a", "b"], "svd_rank": 4},
    )
    write_artifact_info(tmp_path, info)
    written = json.loads((tmp_path / ARTIFACT_INFO_FILE).read_text())
    assert written["version"] == FORMAT_VERSION and written["task"] == "classification"
    assert written["label_names"] == ["neg", "pos"] and written["quantize"] is None
    assert read_artifact_info(tmp_path) == info


def test_a_lorakit_0_1_file_without_version_is_read(tmp_path: Path):
    old = {
        "task": "causal-lm",
        "method": "lora",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "max_length": 256,
        "quantize": None,
        "system_prompt": None,
        "max_new_tokens": 48,
    }
    (tmp_path / ARTIFACT_INFO_FILE).write_text(json.dumps(old, indent=2))
    info = read_artifact_info(tmp_path)
    assert info.version == 1 and info.task is TaskKind.CAUSAL_LM and info.max_new_tokens == 48
    assert info.replace(max_length=64).version == FORMAT_VERSION


def test_a_folder_without_the_file_has_no_facts(tmp_path: Path):
    assert read_artifact_info(tmp_path) == ArtifactInfo()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ({"version": FORMAT_VERSION + 1, "task": "classification"}, ["newer than this lorakit", "upgrade"]),
        ({"version": "two"}, ["version", "whole number"]),
        ({"tasks": "classification"}, ["unknown field", "tasks", "known:"]),
        ({"task": "regression"}, ["task must be one of", "classification"]),
        ({"max_length": "256"}, ["max_length", "whole number"]),
        ({"text_pair": None}, ["text_pair", "bool"]),
        ({"label_names": ["a", 1]}, ["label_names", "strings"]),
        ({"quantize": "int3"}, ["quantize", "nf4"]),
        (["not", "an", "object"], ["JSON object"]),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path: Path, content, words):
    (tmp_path / ARTIFACT_INFO_FILE).write_text(json.dumps(content))
    with pytest.raises(LorakitError) as caught:
        read_artifact_info(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and ARTIFACT_INFO_FILE in message
    for word in words:
        assert word in message


def test_broken_json_is_named(tmp_path: Path):
    (tmp_path / ARTIFACT_INFO_FILE).write_text("{not json")
    with pytest.raises(LorakitError, match="not valid JSON"):
        read_artifact_info(tmp_path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (json.dumps({"task": "classification"}).encode("utf-16"), "is not UTF-8 JSON text"),  # once a traceback
        (b"[" * 3_000 + b"]" * 3_000, "nested too deeply"),  # once a RecursionError
        (b'{"max_length": ' + b"1" * 5_000 + b"}", "4,300 digits"),  # once a bare ValueError
        (b'{"task\\n": 1}', "unknown field(s) task\\n"),  # the line break escaped: one line
    ],
)
def test_unreadable_files_are_one_line_errors(tmp_path: Path, content: bytes, problem: str):
    (tmp_path / ARTIFACT_INFO_FILE).write_bytes(content)
    with pytest.raises(LorakitError) as caught:
        read_artifact_info(tmp_path)
    message = str(caught.value)
    assert "\n" not in message and ARTIFACT_INFO_FILE in message and problem in message, message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "is not valid JSON (Expecting property name"),  # once a JSONDecodeError traceback
        (b"[1, 2]", "is not a transformers model config"),  # once an AttributeError
        (b'{"architectures": "BertModel"}', "is not a transformers model config"),
    ],
)
def test_artifact_kind_of_a_model_folder_with_a_damaged_config(tmp_path: Path, content: bytes, problem: str):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(LorakitError) as caught:
        artifact_kind(tmp_path)
    assert "config.json" in str(caught.value) and problem in str(caught.value)


def test_an_adapter_whose_head_is_no_matrix_is_damaged(tmp_path: Path):
    """A scalar classifier weight once crashed reading the folder (IndexError), before any model loaded."""
    from safetensors.torch import load_file, save_file

    from adapter_folders import save_adapter_folder, save_base
    from lorakit.artifacts import read_adapter_artifact

    adapter = save_adapter_folder("bert", save_base("bert", tmp_path / "base"), tmp_path / "adapter")
    tensors = load_file(adapter / "adapter_model.safetensors")
    tensors["base_model.model.classifier.weight"] = torch.tensor(1.0)
    save_file(tensors, adapter / "adapter_model.safetensors")
    with pytest.raises(LorakitError, match=r"classifier.weight is \(\), not a matrix .* damaged"):
        read_adapter_artifact(adapter)


def test_one_function_finds_what_a_run_folder_holds(tmp_path: Path):
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    assert find_artifact_folder(run) == run / "adapter" == run_artifact_folder(run, "lora")
    assert run_artifact_folder(run, "full") == run / "model"
    assert find_artifact_folder(run / "adapter") == run / "adapter"
    with pytest.raises(LorakitError, match="does not exist"):
        find_artifact_folder(tmp_path / "missing")


def test_save_artifact_replaces_the_folder_whole(tmp_path: Path):
    class Broken(torch.nn.Linear):
        def save_pretrained(self, folder: Path) -> None:
            (folder / "half-written").write_text("x")
            raise OSError("disk full")

    folder = tmp_path / "model"
    info = ArtifactInfo(task=TaskKind.CLASSIFICATION, method="full")
    folder.mkdir()
    (folder / "weights").write_text("old")
    with pytest.raises(OSError):
        save_artifact(folder, Broken(2, 2), info)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no staging folder is left behind"
    assert [p.name for p in folder.iterdir()] == ["weights"], "the old folder is untouched"


def test_artifact_kind_of_a_full_model_folder(tmp_path: Path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    assert artifact_kind(tmp_path / "model") is TaskKind.CAUSAL_LM
    write_artifact_info(folder, ArtifactInfo(task=TaskKind.SEQ2SEQ, method="merged"))
    assert artifact_kind(folder) is TaskKind.SEQ2SEQ
