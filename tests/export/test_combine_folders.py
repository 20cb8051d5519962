"""`combine_adapter_folders`: adapter folders in, one adapter folder out, that PEFT, `load_adapter`
and `merge_to_folder` read — and the same numbers as PEFT's add_weighted_adapter on the same files."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import peft
import pytest
import torch
from transformers import AutoModelForSequenceClassification

import lorakit
from adapter_folders import LABELS, load_base, save_adapter_folder, save_base
from lorakit.errors import LorakitError
from lorakit.export import combine_adapter_folders, merge_to_folder
from lorakit.lora import read_adapter
from tiny_models import ARCHS, logits


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two BERT classifiers and two Llama LMs (ranks 4 and 6) on their own tiny bases."""
    root = tmp_path_factory.mktemp("combine")
    bert, llama = save_base("bert", root / "bert"), save_base("llama", root / "llama")
    return {
        "bert": bert,
        "llama": llama,
        "cls_a": save_adapter_folder("bert", bert, root / "cls_a", seed=1),
        "cls_b": save_adapter_folder("bert", bert, root / "cls_b", seed=2),
        "lm_a": save_adapter_folder("llama", llama, root / "lm_a", seed=1, r=4),
        "lm_b": save_adapter_folder("llama", llama, root / "lm_b", seed=2, r=6),
    }


@pytest.mark.parametrize("method", ["svd", "cat"])
def test_combined_folder_matches_peft_on_the_same_files(method: str, folders: dict[str, Path], tmp_path: Path) -> None:
    out = combine_adapter_folders([folders["lm_a"], folders["lm_b"]], [0.6, 0.3], tmp_path / "mix", method=method)
    base = load_base("llama", folders["llama"])
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), folders["lm_a"], adapter_name="first")
    theirs.load_adapter(folders["lm_b"], adapter_name="second")
    theirs.add_weighted_adapter(["first", "second"], [0.6, 0.3], "mix", combination_type=method)
    theirs.set_adapter("mix")
    batch = ARCHS["llama"].inputs()
    ours = lorakit.load_adapter(copy.deepcopy(base), out)
    torch.testing.assert_close(logits(ours, batch), logits(theirs, batch), atol=1e-5, rtol=0)
    reloaded_in_peft = peft.PeftModel.from_pretrained(copy.deepcopy(base), out)
    torch.testing.assert_close(logits(reloaded_in_peft, batch), logits(theirs, batch), atol=1e-5, rtol=0)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == {"svd": 6, "cat": 10}[method] and config["lora_alpha"] == config["r"]
    info = json.loads((out / "lorakit.json").read_text())
    assert info["task"] == "causal-lm" and info["base_model"] == str(folders["llama"])
    assert info["combined"]["method"] == method and info["combined"]["weights"] == [0.6, 0.3]


def test_combined_classifier_averages_heads_and_merges(folders: dict[str, Path], tmp_path: Path) -> None:
    out = combine_adapter_folders([folders["cls_a"], folders["cls_b"]], [0.5, 0.5], tmp_path / "mix")
    info = json.loads((out / "lorakit.json").read_text())
    assert info["label_names"] == LABELS and info["task"] == "classification"
    head = "base_model.model.classifier.weight"
    inputs = [read_adapter(folders[name])[1][head] for name in ("cls_a", "cls_b")]
    torch.testing.assert_close(read_adapter(out)[1][head], 0.5 * inputs[0] + 0.5 * inputs[1])
    # `lorakit merge` accepts the combined adapter and computes what it computes.
    combined = lorakit.load_adapter(load_base("bert", folders["bert"]), out)
    merged_folder = merge_to_folder(out, tmp_path / "merged")
    merged = AutoModelForSequenceClassification.from_pretrained(merged_folder)
    batch = ARCHS["bert"].inputs()
    torch.testing.assert_close(logits(merged, batch), logits(combined, batch), atol=1e-5, rtol=0)
    assert merged.config.id2label == dict(enumerate(LABELS))


def edited_copy(folder: Path, destination: Path, **info: object) -> Path:
    """A copy of an adapter folder with some lorakit.json fields changed."""
    destination.mkdir()
    for file in folder.iterdir():
        (destination / file.name).write_bytes(file.read_bytes())
    original = json.loads((folder / "lorakit.json").read_text())
    (destination / "lorakit.json").write_text(json.dumps({**original, **info}))
    return destination


def test_mismatched_adapters_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    relabelled = edited_copy(folders["cls_b"], tmp_path / "relabelled", label_names=["bad", "ok", "good"])
    qlora = edited_copy(folders["cls_b"], tmp_path / "qlora", quantize="nf4")
    other_base = save_base("bert", tmp_path / "other_base", seed=5)
    elsewhere = save_adapter_folder("bert", other_base, tmp_path / "elsewhere")
    cases = [
        ([folders["cls_a"], relabelled], [0.5, 0.5], "linear", "same label names"),
        ([folders["cls_a"], elsewhere], [0.5, 0.5], "linear", "only adapters of the same base model"),
        ([folders["cls_a"], qlora], [0.5, 0.5], "linear", "trained on a nf4 base but .* full-precision one"),
        ([folders["lm_a"], folders["lm_b"]], [0.5], "svd", "got 1 weights for 2 adapters"),
        ([folders["lm_a"], folders["lm_b"]], [0.5, 0.5], "linear", "needs equal ranks"),
        ([folders["lm_a"], folders["lm_b"]], [0.5, 0.5], "ties", "method must be one of"),
    ]
    for adapters, weights, method, message in cases:
        with pytest.raises(LorakitError, match=message) as error:
            combine_adapter_folders(adapters, weights, tmp_path / "out", method=method)
        assert "\n" not in str(error.value)
        assert not (tmp_path / "out").exists()
