"""Tiny base models saved as folders, with a tokenizer that works offline, and trained-looking
adapters on them (random non-zero A and B, a perturbed head), as `lorakit train` would leave them.

Used by the merge / combine / export tests; every builder is seeded, so the same call writes the
same files.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import PreTrainedTokenizerFast

import lorakit
from lorakit.lora import ModulesToSave
from lorakit.models import load_classifier, load_model
from tiny_models import ARCHS, VOCAB

LABELS = ["negative", "neutral", "positive"]  # tiny_bert has 3 labels
TASKS = {"bert": "classification", "llama": "causal-lm", "gpt2": "causal-lm", "t5": "seq2seq"}
TASK_TYPES = {"classification": "SEQ_CLS", "causal-lm": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM"}


def save_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over the tiny models' vocabulary: "w3 w5" → [3, 5]."""
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, VOCAB)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)


def save_base(arch_name: str, folder: Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """The tiny `arch_name` model saved to `folder` in `dtype`, with the tokenizer."""
    ARCHS[arch_name].build(seed).to(dtype).save_pretrained(folder)
    save_tokenizer(folder)
    return folder


def load_base(arch_name: str, base: Path) -> nn.Module:
    """The base as lorakit loads it for training: fp32, the task's head (labels for classification)."""
    task = TASKS[arch_name]
    if task == "classification":
        return load_classifier(str(base), LABELS)
    return load_model(str(base), TASK_TYPES[task], dtype=torch.float32)


def save_adapter_folder(
    arch_name: str, base: Path, folder: Path, seed: int = 1, r: int = 4, quantize: str | None = None
) -> Path:
    """An adapter on `base` with non-zero B (and a head that differs from the base's), saved with
    lorakit.json as `lorakit train` writes it."""
    arch = ARCHS[arch_name]
    model = load_base(arch_name, base)
    if quantize:
        from lorakit.quant import quantize_model

        quantize_model(model, quantize)
    torch.manual_seed(seed)
    config = lorakit.LoraConfig(
        r=r,
        lora_alpha=2 * r,
        target_modules=list(arch.targets),
        task_type=arch.task_type,
        init_lora_weights=False,
        base_model_name_or_path=str(base),
    )
    lorakit.add_adapter(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, ModulesToSave):
                for p in module.modules_to_save["default"].parameters():
                    p.add_(0.5 * torch.randn(p.shape, generator=generator))
    lorakit.save_adapter(model, folder)
    task = TASKS[arch_name]
    info = {"task": task, "method": "lora", "base_model": str(base), "max_length": 32, "quantize": quantize}
    if task == "classification":
        info["label_names"] = list(LABELS)
    (folder / "lorakit.json").write_text(json.dumps(info, indent=2) + "\n")
    return folder


def adapted_logits(arch_name: str, base: Path, adapter: Path, quantize: str | None = None) -> torch.Tensor:
    """Logits of the unmerged base + adapter (quantized first when the adapter was trained so)."""
    model = load_base(arch_name, base)
    if quantize:
        from lorakit.quant import quantize_model

        quantize_model(model, quantize)
    lorakit.load_adapter(model, adapter)
    with torch.no_grad():
        return model(**ARCHS[arch_name].inputs()).logits.float()
