"""`merge_to_folder`: the merged folder computes what base + adapter computed, loads in plain
transformers (a subprocess that never imports lorakit), keeps the base's dtype, and is written
all at once or not at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

import lorakit
from adapter_folders import LABELS, adapted_logits, load_base, save_adapter_folder, save_base
from lorakit.errors import LorakitError
from lorakit.export import merge_to_folder
from lorakit.models import load_classifier, resolve_model
from tiny_models import ARCHS

# Loads merged folders with transformers alone and prints their logits on the batches given.
# One process for all folders: starting Python with torch and transformers is the slow part.
PLAIN_TRANSFORMERS = """
import json, sys
import torch, transformers
results = []
for job in json.loads(sys.argv[1]):
    model = getattr(transformers, job["auto_class"]).from_pretrained(job["folder"]).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(job["folder"])
    with torch.no_grad():
        logits = model(**{k: torch.tensor(v) for k, v in job["batch"].items()}).logits
    results.append({
        "logits": logits.float().tolist(),
        "dtype": str(model.dtype),
        "id2label": model.config.id2label,
        "tokens": tokenizer("w3 w5")["input_ids"],
    })
imported = any(name == "lorakit" or name.startswith("lorakit.") for name in sys.modules)
print(json.dumps({"results": results, "lorakit_imported": imported}))
"""
ARCH_NAMES = ["bert", "llama", "t5"]


def stored_dtypes(folder: Path) -> set[str]:
    with safe_open(folder / "model.safetensors", "pt") as stored:
        return {stored.get_slice(key).get_dtype() for key in stored.keys()}  # noqa: SIM118


def load_without_lorakit(jobs: list[tuple[Path, str]]) -> list[dict]:
    """Each (folder, arch name) loaded by plain transformers in a fresh interpreter that must never
    import lorakit; returns per folder its logits on the arch's batch, dtype, labels, tokens."""
    payload = [
        {
            "folder": str(folder),
            "auto_class": ARCHS[name].auto_class,
            "batch": {k: v.tolist() for k, v in ARCHS[name].inputs().items()},
        }
        for folder, name in jobs
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-I", "-c", PLAIN_TRANSFORMERS, json.dumps(payload)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert output["lorakit_imported"] is False
    return output["results"]


@dataclass
class Merged:
    base: Path
    adapter: Path
    folder: Path
    expected: torch.Tensor  # base + adapter, unmerged, computed in this process
    loaded: dict  # what plain transformers computed from the merged folder


@pytest.fixture(scope="module")
def merged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Merged]:
    """Per arch (and "llama-bf16": a bf16 base merged with dtype auto) a merged folder, the
    unmerged adapter's logits, and the merged folder's logits from a process without lorakit."""
    root = tmp_path_factory.mktemp("merged")
    cases = {name: (name, torch.float32) for name in ARCH_NAMES} | {"llama-bf16": ("llama", torch.bfloat16)}
    built = {}
    for key, (name, dtype) in cases.items():
        base = save_base(name, root / key / "base", dtype=dtype)
        adapter = save_adapter_folder(name, base, root / key / "run" / "adapter")
        expected = adapted_logits(name, base, adapter)
        folder = merge_to_folder(root / key / "run", root / key / "merged")  # a run folder: adapter/ is found
        built[key] = (name, base, adapter, folder, expected)
    loaded = load_without_lorakit([(folder, name) for name, _, _, folder, _ in built.values()])
    return {key: Merged(*case[1:], result) for (key, case), result in zip(built.items(), loaded, strict=True)}


@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_merged_folder_equals_the_adapter_and_loads_without_lorakit(arch_name: str, merged: dict[str, Merged]) -> None:
    case = merged[arch_name]
    with torch.no_grad():
        base_logits = load_base(arch_name, case.base)(**ARCHS[arch_name].inputs()).logits
    assert (case.expected - base_logits).abs().max() > 1e-2, "the adapter should change the outputs"
    torch.testing.assert_close(torch.tensor(case.loaded["logits"]), case.expected, atol=1e-4, rtol=0)
    assert case.loaded["dtype"] == "torch.float32"
    assert case.loaded["tokens"] == [3, 5]
    info = json.loads((case.folder / "lorakit.json").read_text())
    assert info["method"] == "merged" and info["task"] in ("classification", "causal-lm", "seq2seq")
    if arch_name == "bert":
        assert [case.loaded["id2label"][str(i)] for i in range(3)] == LABELS
        assert info["label_names"] == LABELS
    assert not list(case.folder.parent.glob(".merged.*")), "no staging folder is left behind"


def test_auto_dtype_keeps_a_bf16_base_and_explicit_dtypes_are_honoured(merged: dict[str, Merged]) -> None:
    case = merged["llama-bf16"]
    assert stored_dtypes(case.folder) == {"BF16"}
    assert json.loads((case.folder / "config.json").read_text())["dtype"] == "bfloat16"
    assert (case.folder / "generation_config.json").is_file()
    # The bf16 folder is the fp32 merge rounded once: the same model up to bf16 precision.
    assert case.loaded["dtype"] == "torch.bfloat16"
    torch.testing.assert_close(torch.tensor(case.loaded["logits"]), case.expected, atol=0.1, rtol=0.05)
    root = case.folder.parent
    fp16 = merge_to_folder(case.adapter, root / "fp16", dtype="fp16")
    assert stored_dtypes(fp16) == {"F16"}
    fp32 = merge_to_folder(case.adapter, root / "fp32", dtype="fp32")
    assert stored_dtypes(fp32) == {"F32"}
    size = {folder: (folder / "model.safetensors").stat().st_size for folder in (case.folder, fp32)}
    assert size[fp32] > 1.9 * size[case.folder]


def test_qlora_adapter_merges_onto_the_dequantized_base(tmp_path: Path) -> None:
    base = save_base("llama", tmp_path / "base")
    adapter = save_adapter_folder("llama", base, tmp_path / "adapter", quantize="nf4")
    trained = adapted_logits("llama", base, adapter, quantize="nf4")  # what training computed
    naive = adapted_logits("llama", base, adapter)  # the adapter on the original weights
    out = merge_to_folder(adapter, tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(out)
    with torch.no_grad():
        logits = merged(**ARCHS["llama"].inputs()).logits
    torch.testing.assert_close(logits, trained, atol=1e-4, rtol=0)
    assert (naive - trained).abs().max() > 1e-3, "NF4 should change the outputs, or the test proves nothing"
    assert json.loads((out / "lorakit.json").read_text())["quantize"] is None


def test_a_non_empty_output_folder_is_refused_and_kept(tmp_path: Path) -> None:
    base = save_base("llama", tmp_path / "base")
    adapter = save_adapter_folder("llama", base, tmp_path / "adapter")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(LorakitError, match="exists and is not empty; pass overwrite=True"):
        merge_to_folder(adapter, out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    (out / "keep.txt").unlink()
    merge_to_folder(adapter, out)  # an empty folder is fine
    assert (out / "model.safetensors").is_file()


def test_overwrite_replaces_only_once_the_new_folder_is_complete(tmp_path: Path, monkeypatch) -> None:
    base = save_base("llama", tmp_path / "base")
    adapter = save_adapter_folder("llama", base, tmp_path / "adapter")
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old model")

    def fail_halfway(self, folder, **kwargs):
        (Path(folder) / "model.safetensors").write_bytes(b"half")
        raise OSError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(PreTrainedModel, "save_pretrained", fail_halfway)
        with pytest.raises(OSError, match="disk full"):
            merge_to_folder(adapter, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base", "out"], "no staging leftovers"

    merge_to_folder(adapter, out, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "base", "out"]


def test_bad_requests_are_refused_with_one_line(tmp_path: Path) -> None:
    base = save_base("bert", tmp_path / "base")
    adapter = save_adapter_folder("bert", base, tmp_path / "run" / "adapter")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "dtype must be auto, fp32, bf16, fp16; got 'int8'": lambda: merge_to_folder(adapter, tmp_path / "o", "int8"),
        "does not exist": lambda: merge_to_folder(tmp_path / "nowhere", tmp_path / "o"),
        "holds no adapter_config.json": lambda: merge_to_folder(empty, tmp_path / "o"),
        "holds the input": lambda: merge_to_folder(adapter, tmp_path / "run", overwrite=True),
    }
    for message, call in cases.items():
        with pytest.raises(LorakitError, match=message) as error:
            call()
        assert "\n" not in str(error.value)
    assert (adapter / "adapter_config.json").is_file()


def test_full_method_run_folders_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save_base("bert", run / "model")
    (run / "model" / "lorakit.json").write_text(json.dumps({"task": "classification", "method": "full"}))
    with pytest.raises(LorakitError, match=r"holds a full model .*--method full.*nothing to merge"):
        merge_to_folder(run, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_adapter_for_another_base_names_the_mismatch(tmp_path: Path) -> None:
    base = save_base("llama", tmp_path / "base")
    adapter = save_adapter_folder("llama", base, tmp_path / "adapter")
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=100,
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
        )
    ).save_pretrained(tmp_path / "other")
    info = json.loads((adapter / "lorakit.json").read_text())
    (adapter / "lorakit.json").write_text(json.dumps({**info, "base_model": str(tmp_path / "other")}))
    with pytest.raises(LorakitError, match=r"adapter does not fit module .*q_proj.*48 → 48"):
        merge_to_folder(adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.packaged
def test_packaged_minilm_classifier_merges_with_its_tokenizer(tmp_path: Path) -> None:
    """A classifier adapter on the packaged MiniLM, named by its Hub alias as `lorakit train` writes it."""
    model = load_classifier("sentence-transformers/all-MiniLM-L6-v2", LABELS)
    torch.manual_seed(0)
    config = lorakit.LoraConfig(
        r=8, lora_alpha=32, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False
    )
    lorakit.add_adapter(model, config)
    adapter = lorakit.save_adapter(model, tmp_path / "adapter")
    info = {"task": "classification", "base_model": "sentence-transformers/all-MiniLM-L6-v2", "label_names": LABELS}
    (adapter / "lorakit.json").write_text(json.dumps(info))
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))
    batch = tokenizer(["a fine film", "dull and long"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = model.eval()(**batch).logits

    out = merge_to_folder(adapter, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(out)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, expected, atol=1e-4, rtol=0)
    assert stored_dtypes(out) == {"F32"}  # the checkpoint's own dtype
    assert AutoTokenizer.from_pretrained(out)("a fine film")["input_ids"] == tokenizer("a fine film")["input_ids"]
    assert merged.config.id2label == dict(enumerate(LABELS))
