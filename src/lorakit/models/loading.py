"""Load a base model with the head its task needs, its config and its tokenizer.

A folder that cannot work (no weights, a junk config.json, unreadable tokenizer files) fails with
one-line `LorakitError`s, the missing weights before transformers is asked.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForQuestionAnswering,
    AutoModelForSeq2SeqLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from lorakit.errors import LorakitError
from lorakit.models.low_memory import low_memory_loading
from lorakit.models.packaged import PACKAGED_MODELS, resolve_model

MODEL_CLASSES = {
    "SEQ_CLS": AutoModelForSequenceClassification,
    "TOKEN_CLS": AutoModelForTokenClassification,
    "QUESTION_ANS": AutoModelForQuestionAnswering,
    "CAUSAL_LM": AutoModelForCausalLM,
    "SEQ_2_SEQ_LM": AutoModelForSeq2SeqLM,
    "FEATURE_EXTRACTION": AutoModel,
}
# Weight files transformers reads from a folder: single files, and the index of sharded ones.
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
# What from_pretrained raises on a junk config.json: OSError (not JSON), ValueError (no or unknown
# model_type), TypeError (JSON that is not an object, e.g. null), StrictDataclassError (a field of the wrong type).
_CONFIG_ERRORS = (OSError, ValueError, TypeError, StrictDataclassError)
# ... and on junk weight files: SafetensorError (bad header), UnpicklingError or struct.error (a junk .bin).
_WEIGHT_ERRORS = (OSError, ValueError, SafetensorError, pickle.UnpicklingError, struct.error)
# ... and on junk tokenizer files: ValueError (no usable backend, bad JSON), KeyError or TypeError (JSON of the
# wrong shape); the tokenizers library's bare Exception is handled in load_tokenizer.
_TOKENIZER_ERRORS = (OSError, ValueError, KeyError, TypeError)
# The files some tokenizer class reads: a folder with none of them has no tokenizer.
_TOKENIZER_PATTERNS = ("tokenizer*", "vocab*", "merges.txt", "*.model", "*.tiktoken")


def load_config(name_or_path: str) -> PretrainedConfig:
    """The transformers config of a packaged name, local folder or Hub id."""
    location = resolve_model(name_or_path)
    try:
        return AutoConfig.from_pretrained(location)
    except _CONFIG_ERRORS as error:
        raise LorakitError(_not_loadable(name_or_path, error)) from None


def context_length(model_config: PretrainedConfig) -> int | None:
    """The most positions the model can attend over, where its config says (None: unbounded, e.g. T5)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def infer_task_type(config: PretrainedConfig) -> str:
    """The natural LoRA task for an architecture: generation for LMs, classification for encoders."""
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if config.is_encoder_decoder or "ForConditionalGeneration" in architectures:
        return "SEQ_2_SEQ_LM"
    if "ForCausalLM" in architectures or "LMHeadModel" in architectures:
        return "CAUSAL_LM"
    return "SEQ_CLS"


def load_model(
    name_or_path: str,
    task_type: str | None = None,
    num_labels: int | None = None,
    dtype: torch.dtype | None = None,
    empty: bool = False,
) -> nn.Module:
    """Load a base model for `task_type` (inferred when None); classification gets `num_labels`.
    Tensors are read one at a time without mapping the files (models/low_memory.py), so the load
    peaks near the model's own size. With `empty`, nothing is read: the architecture is built with
    its parameters on the meta device (no memory) and real buffers, for a process that receives
    its weights from another (train/sharding.py).

    Raises:
        LorakitError: the name is neither a local folder, a GGUF file, a packaged model, nor loadable
            from the Hub (the message lists the packaged names); a folder without weight files.
    """
    location = resolve_model(name_or_path)
    _check_has_weights(Path(location))
    config = load_config(name_or_path)
    task = task_type or infer_task_type(config)
    if task not in MODEL_CLASSES:
        raise LorakitError(f"task_type must be one of {', '.join(MODEL_CLASSES)}; got {task!r}")
    kwargs: dict = {"dtype": dtype or torch.float32}
    if task in ("SEQ_CLS", "TOKEN_CLS") and num_labels is not None:
        # A base fine-tuned with another number of classes has a head of another size: the new
        # head starts fresh (training) or comes from the adapter (loading one) either way.
        kwargs.update(num_labels=num_labels, ignore_mismatched_sizes=True)
    if empty:
        return _empty_model(MODEL_CLASSES[task], config, kwargs)
    try:
        with low_memory_loading():
            return MODEL_CLASSES[task].from_pretrained(location, **kwargs)
    except _WEIGHT_ERRORS as error:
        raise LorakitError(_not_loadable(name_or_path, error)) from None


def _empty_model(auto_class: type, config: PretrainedConfig, kwargs: dict) -> nn.Module:
    """`auto_class`'s model for `config`, parameters on the meta device, buffers real."""
    from accelerate import init_empty_weights

    if "num_labels" in kwargs:
        config.num_labels = kwargs.pop("num_labels")
        kwargs.pop("ignore_mismatched_sizes")  # nothing is read, so nothing can mismatch
    with init_empty_weights(include_buffers=False):
        return auto_class.from_config(config, **kwargs)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of a packaged name, local folder, GGUF file or Hub id.

    Raises:
        LorakitError: the model cannot be found (as `resolve_model`), or its tokenizer files are
            missing or unreadable, or hold no vocabulary beyond the special tokens.
    """
    location = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
    except _TOKENIZER_ERRORS as error:
        raise LorakitError(_no_tokenizer(name_or_path, _tokenizer_problem(location, error))) from None
    except Exception as error:
        # The tokenizers library raises a bare Exception for a tokenizer.json it cannot parse; any
        # other type is a bug or a machine problem and keeps its traceback.
        if type(error) is not Exception:
            raise
        raise LorakitError(_no_tokenizer(name_or_path, _tokenizer_problem(location, error))) from None
    # Some tokenizer classes (BERT's) build without their vocabulary file, knowing only their
    # special tokens: every word would become [UNK], and a run would learn nothing, silently.
    specials = len(set(tokenizer.all_special_ids))
    if len(tokenizer) <= specials:
        reason = f"it has no vocabulary beyond its {specials} special tokens"
        raise LorakitError(_no_tokenizer(name_or_path, reason))
    return tokenizer


def _check_has_weights(folder: Path) -> None:
    if (folder / "config.json").is_file() and not any(any(folder.glob(p)) for p in _WEIGHT_PATTERNS):
        raise LorakitError(
            f"model folder {folder} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
            "copy the weight files into it or pass another model"
        )


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _tokenizer_problem(location: str, error: Exception) -> str:
    """What is wrong, in words: a folder without tokenizer files says so (transformers' own first
    line is "Couldn't instantiate the backend tokenizer from one of:"), else the error's first line."""
    folder = Path(location)
    if folder.is_dir() and not any(any(folder.glob(pattern)) for pattern in _TOKENIZER_PATTERNS):
        return "the folder has no tokenizer files"
    return _first_line(error)


def _no_tokenizer(name: str, reason: str) -> str:
    return (
        f"cannot load the tokenizer of model {name!r} ({reason}); give the model folder its "
        "tokenizer files (tokenizer.json and tokenizer_config.json) or pass another model"
    )


def _not_loadable(name: str, error: Exception) -> str:
    reason = _first_line(error)
    return (
        f"cannot load model {name!r} ({reason}); pass a local model folder, a packaged model "
        f"({', '.join(PACKAGED_MODELS)}) or a Hub id reachable from this machine"
    )


def load_classifier(model_name: str, label_names: Sequence[str], empty: bool = False) -> nn.Module:
    """The base model with a fresh `len(label_names)`-way head and the label names in its config
    (`empty`: on the meta device, as `load_model`)."""
    model = load_model(model_name, task_type="SEQ_CLS", num_labels=len(label_names), empty=empty)
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: i for i, name in enumerate(label_names)}
    return model
