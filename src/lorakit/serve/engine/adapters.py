"""What a served adapter is, and the checks an adapter folder passes before it joins a shared base.

A served adapter folder is a PEFT adapter (`adapter_config.json` + `adapter_model.safetensors`),
optionally with lorakit's `lorakit.json` (task, base_model, label_names, max_length), or a
`lorakit train` run folder whose adapter sits in `adapter/`.

Names are what HTTP clients send, so they are confined: letters, digits, '.', '_' and '-', not
starting with '.', and a folder must stay inside the adapters folder after resolving symlinks.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lorakit.artifacts import ArtifactInfo, find_artifact_folder
from lorakit.errors import LorakitError
from lorakit.lora.config import LoraConfig
from lorakit.lora.inject import find_heads_to_save, replace_module
from lorakit.lora.io import PEFT_PREFIX
from lorakit.lora.layer import LoraLinear, ModulesToSave
from lorakit.models import PACKAGED_MODELS
from lorakit.task_kind import TaskKind

_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]{0,127}")


@dataclass(frozen=True)
class AdapterInfo:
    """A loaded adapter: its public name, its name on the base model (`model_name`), and what serving needs.

    label_names: the classifier's labels in head order (None for non-classification adapters).
    max_length: the token length it was trained with, from lorakit.json (None when unknown).
    nbytes: bytes of its tensors in memory (LoRA A/B, head copies and its packed rows for mixed
        batches): what the budget counts.
    quantize: the 4-bit method its base was quantized with while it trained ("nf4", ...), None
        for a full-precision base. The shared base is served unquantized, so such an adapter's
        outputs differ slightly from what it gave in training (as in vLLM and LoRAX).
    """

    name: str
    model_name: str
    path: Path
    task_type: str | None  # PEFT's, from adapter_config.json: what /v1/models reports
    base_model: str | None
    label_names: tuple[str, ...] | None
    max_length: int | None
    nbytes: int
    quantize: str | None = None


def check_name(name: str) -> str:
    """`name` if it is a safe adapter name, else a LorakitError naming the rule."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise LorakitError(
            f"adapter name {name!r} is not allowed: use 1-128 letters, digits, '.', '_' or '-', not starting with '.'"
        )
    return name


def is_name(value: str) -> bool:
    """Whether `value` is a safe adapter name (`check_name` without the error)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


def folder_in(root: Path, name: str) -> Path:
    """Adapter `name`'s folder inside `root` (resolved), refusing anything that leaves `root`."""
    check_name(name)
    root = root.resolve()
    candidate = (root / name).resolve()
    if candidate.is_dir():
        candidate = find_artifact_folder(candidate).resolve()
    if not candidate.is_relative_to(root):
        raise LorakitError(f"adapter {name!r} resolves outside the adapters folder {root}; refusing to load it")
    if not candidate.is_dir():
        raise LorakitError(f"no adapter named {name!r} in {root}; add its folder there")
    return candidate


def check_servable(
    name: str, config: LoraConfig, info: ArtifactInfo, server_bases: Sequence[str], server_kind: TaskKind | None
) -> None:
    """Refuse adapters that cannot share this server's base: another base, task, or trained base biases.

    server_bases: the server's base model name first, then other names it goes by (its path).
    server_kind: what the server runs (None: any task); an adapter whose PEFT task_type is another
        kind's is refused, one without a task_type is let through.
    """
    adapter_base = info.base_model or config.base_model_name_or_path
    server_base = server_bases[0]
    if adapter_base and not same_base_model(adapter_base, *server_bases):
        raise LorakitError(
            f"adapter {name!r} was trained on base model {adapter_base!r} but this server runs {server_base!r}; "
            "serve it with its own base model"
        )
    if server_kind is not None and config.task_type and config.task_type != server_kind.peft_type:
        raise LorakitError(
            f"adapter {name!r} has task_type {config.task_type} but this server runs a {server_kind.peft_type} model"
        )
    if config.bias != "none":
        raise LorakitError(
            f"adapter {name!r} trains the base model's biases (bias={config.bias!r}), which one shared base "
            "cannot hold per adapter; merge it into its own model, or retrain with bias='none'"
        )


def same_base_model(adapter_base: str, *server_bases: str) -> bool:
    """Whether `adapter_base` names the same model as one of `server_bases`: equal paths, or the
    same final name part (`org/model` vs a local `.../model`), a packaged model's aliases counting
    as one name."""
    names = server_bases
    if any(_as_path(adapter_base) == _as_path(name) for name in names):
        return True
    keys = set().union(*(_name_keys(name) for name in names))
    return bool(_name_keys(adapter_base) & keys)


def _as_path(name: str) -> str:
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _last_part(name: str) -> str:
    return name.rstrip("/").rsplit("/", 1)[-1].lower()


def _name_keys(name: str) -> set[str]:
    keys = {_last_part(name)}
    for canonical, packaged in PACKAGED_MODELS.items():
        family = {_last_part(n) for n in (canonical, *packaged.aliases)}
        if keys & family:
            keys |= family
    return keys


def trains_classifier(config: LoraConfig) -> bool:
    """Whether the adapter carries a classifier head (and so labels): a CLASSIFICATION adapter, or
    PEFT's TOKEN_CLS, a classifier per token that has no `TaskKind` of its own."""
    return TaskKind.from_peft_type(config.task_type) is TaskKind.CLASSIFICATION or config.task_type == "TOKEN_CLS"


def label_names(
    model: nn.Module, adapter: str, config: LoraConfig, info: ArtifactInfo, name: str
) -> tuple[str, ...] | None:
    """A classification adapter's labels: lorakit.json's, else LABEL_0.. for its head's width."""
    if not trains_classifier(config):
        return None
    widths = [
        [m for m in wrapper.modules_to_save[adapter].modules() if isinstance(m, nn.Linear)][-1].out_features
        for wrapper in model.modules()
        if isinstance(wrapper, ModulesToSave) and adapter in wrapper.modules_to_save
    ]
    if not widths:
        raise LorakitError(f"classification adapter {name!r} has no head; it needs its classifier weights")
    names = info.label_names or [f"LABEL_{i}" for i in range(widths[0])]
    if len(names) != widths[0]:
        raise LorakitError(
            f"adapter {name!r}: lorakit.json lists {len(names)} label_names but its head has {widths[0]} outputs"
        )
    return tuple(str(label) for label in names)


def adapter_nbytes(model: nn.Module, adapter: str) -> int:
    """Bytes held by `adapter` on `model`: its A/B weights and its copies of heads to save."""
    tensors: list[torch.Tensor] = []
    for module in model.modules():
        if isinstance(module, LoraLinear) and adapter in module.lora_A:
            tensors += [*module.lora_A[adapter].parameters(), *module.lora_B[adapter].parameters()]
        elif isinstance(module, ModulesToSave) and adapter in module.modules_to_save:
            copy_ = module.modules_to_save[adapter]
            tensors += [*copy_.parameters(), *copy_.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def heads_sized_for(model: nn.Module, config: LoraConfig, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """While loading, make the base's classifier heads as wide as the adapter's (its label count).

    `load_adapter` checks a head against the base's and copies the base's to hold the adapter's
    weights; a classifier trained with another number of labels differs only in the output rows
    of its last Linear. Inside the block that Linear is replaced by one of the adapter's width (in
    a copy of the base head), so the check passes and the adapter's copy has its own width; on exit
    the base head comes back. Any other difference is left for `load_adapter` to refuse.
    """
    swaps: list[tuple[str, nn.Module, nn.Module]] = []
    if trains_classifier(config):
        for head in find_heads_to_save(model, config):
            module = model.get_submodule(head)
            original = module.original_module if isinstance(module, ModulesToSave) else module
            resized = _resized_head(original, head, tensors)
            if resized is None:
                continue
            if isinstance(module, ModulesToSave):
                module.original_module = resized
            else:
                replace_module(model, head, resized)
            swaps.append((head, original, resized))
    try:
        yield
    finally:
        for head, original, resized in swaps:
            module = model.get_submodule(head)
            if isinstance(module, ModulesToSave) and module.original_module is resized:
                module.original_module = original
            elif module is resized:
                replace_module(model, head, original)


def _resized_head(original: nn.Module, head: str, tensors: dict[str, torch.Tensor]) -> nn.Module | None:
    """A copy of `original` whose Linear layers have the output widths the adapter's tensors have."""
    resized = None
    for key, parameter in original.named_parameters():
        stored = tensors.get(f"{PEFT_PREFIX}{head}.{key}")
        if stored is None or stored.shape == parameter.shape or stored.shape[1:] != parameter.shape[1:]:
            continue
        path = key.rpartition(".")[0]
        linear = original.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            continue
        resized = resized if resized is not None else copy.deepcopy(original)
        if resized.get_submodule(path).out_features == stored.shape[0]:
            continue
        wide = nn.Linear(
            linear.in_features,
            stored.shape[0],
            bias=linear.bias is not None,
            device=linear.weight.device,
            dtype=linear.weight.dtype,
        )
        if path:
            replace_module(resized, path, wide)
        else:
            resized = wide
    return resized
