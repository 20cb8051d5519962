"""Save and load adapters in the PEFT format.

A folder with `adapter_config.json` (a PEFT `LoraConfig`) and `adapter_model.safetensors`, whose
keys are the model's parameter names under `base_model.model.` without the adapter name:

    base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight   (r, in)
    base_model.model.bert.encoder.layer.0.attention.self.query.lora_B.weight   (out, r)
    base_model.model.classifier.weight                                         (a module to save)
    base_model.model.bert.encoder.layer.0.attention.self.query.base_layer.bias (bias="lora_only"/"all")

Only safetensors are read: a pickled `adapter_model.bin` is refused, never unpickled.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.tensor import DTensor

from lorakit.errors import LorakitError
from lorakit.folders import staged_files
from lorakit.jsontext import loads
from lorakit.lora.config import LoraConfig
from lorakit.lora.inject import (
    adapter_state,
    base_bias_parameters,
    check_new_adapter_name,
    find_heads_to_save,
    inject_adapter,
    named_wrappers,
    set_adapter,
)
from lorakit.lora.layer import LoraLinear, ModulesToSave, linear_features
from lorakit.lora.targets import LINEAR_TYPES, named_modules_outside

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
_LORA_SUFFIXES = (".lora_A.weight", ".lora_B.weight", ".lora_B.bias")


def adapter_state_dict(model: nn.Module, adapter_name: str | None = None) -> dict[str, torch.Tensor]:
    """The tensors of one adapter under PEFT's key names (see the module docstring)."""
    state = adapter_state(model)
    name = adapter_name or state.active
    if name not in state.configs:
        raise LorakitError(f"no adapter named {name!r}; this model has {', '.join(state.configs) or 'none'}")
    config = state.configs[name]
    tensors: dict[str, torch.Tensor] = {}
    for path, module in model.named_modules():
        if isinstance(module, LoraLinear) and name in module.lora_A:
            tensors[f"{path}.lora_A.weight"] = module.lora_A[name].weight
            tensors[f"{path}.lora_B.weight"] = module.lora_B[name].weight
            if module.lora_B[name].bias is not None:
                tensors[f"{path}.lora_B.bias"] = module.lora_B[name].bias
            if config.bias == "lora_only" and module.base_layer.bias is not None:
                tensors[f"{path}.base_layer.bias"] = module.base_layer.bias
        elif isinstance(module, ModulesToSave) and name in module.modules_to_save:
            for key, tensor in module.modules_to_save[name].state_dict().items():
                tensors[f"{path}.{key}"] = tensor
    if config.bias == "all":
        tensors.update(base_bias_parameters(model))
    return {PEFT_PREFIX + key: _cpu_copy(tensor) for key, tensor in tensors.items()}


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy of `tensor`; a sharded (FSDP) one gathered whole first, on every rank (a collective)."""
    whole = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
    return whole.detach().to("cpu", copy=True).contiguous()


def save_adapter(
    model: nn.Module,
    path: str | os.PathLike,
    adapter_name: str | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write one adapter (default: the active one) to folder `path` in the PEFT layout; `tensors`
    are its `adapter_state_dict` when gathered already (a sharded model).

    Both files are written under temporary names first and only then renamed into place, so a
    failed save leaves the previous adapter in the folder as it was (`lorakit.folders.staged_files`).

    Raises:
        LorakitError: the machine refused the write (disk full, permission denied), naming the weights file.
    """
    state = adapter_state(model)
    name = adapter_name or state.active
    tensors = adapter_state_dict(model, name) if tensors is None else tensors
    config = state.configs[name]
    base_name = config.base_model_name_or_path or getattr(getattr(model, "config", None), "_name_or_path", None)
    config = dataclasses.replace(config, inference_mode=True, base_model_name_or_path=base_name or None)
    text = json.dumps(config.to_peft_dict(), indent=2, sort_keys=True) + "\n"
    folder = Path(path)
    with staged_files(folder / WEIGHTS_NAME, folder / CONFIG_NAME) as (weights_file, config_file):
        save_file(tensors, str(weights_file), metadata={"format": "pt"})
        config_file.write_text(text)
    return folder


def read_adapter(path: str | os.PathLike) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """Read an adapter folder (or a Hugging Face Hub repo id) without touching any model."""
    folder = _adapter_folder(str(path))
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file():
        raise LorakitError(f"{folder} has no {CONFIG_NAME}: it is not a PEFT/lorakit adapter folder")
    if not weights_file.is_file():
        if (folder / "adapter_model.bin").is_file():
            raise LorakitError(
                f"{folder} holds adapter_model.bin (a pickle), which lorakit never unpickles; "
                "re-save it as safetensors with peft (save_pretrained(..., safe_serialization=True))"
            )
        raise LorakitError(f"{folder} has no {WEIGHTS_NAME}")
    try:
        data = loads(config_file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LorakitError(f"{config_file} is not valid JSON ({error})") from None
    config = LoraConfig.from_peft_dict(data, source=str(config_file))
    try:
        tensors = load_file(weights_file)
    except (SafetensorError, OSError) as error:
        raise LorakitError(f"{weights_file} is not a readable safetensors file ({error})") from None
    return config, tensors


def load_adapter(
    model: nn.Module, path: str | os.PathLike, adapter_name: str = "default", is_trainable: bool = False
) -> nn.Module:
    """Load a PEFT-format adapter onto `model` in place, make it active, and return the model.

    The adapter is checked against the model before anything changes: a module it names that
    the model lacks, or any shape that differs, raises with the module and both shapes, and
    the model is left as it was. Not trainable (the default) also puts the model in eval mode (on a
    model already in eval mode, only the adapter's new modules need it).
    """
    config, tensors = read_adapter(path)
    config = dataclasses.replace(config, inference_mode=not is_trainable, init_lora_weights=False)
    plan = _plan_load(model, config, tensors, adapter_name, str(path))
    inject_adapter(model, config, adapter_name, plan.targets, plan.heads)
    with torch.no_grad():
        for key, tensor in tensors.items():
            if key not in plan.ignored:
                _tensor_at(model, plan.destination(key[len(PEFT_PREFIX) :])).copy_(tensor)
    set_adapter(model, adapter_name)
    if not is_trainable:
        if model.training:
            model.eval()
        else:  # already in eval mode: only the modules just created are not (one walk of the wrappers)
            for _, wrapper in named_wrappers(model):
                if wrapper.training:  # a wrapper created now
                    wrapper.eval()
                    continue
                for store in ("lora_A", "lora_B", "lora_dropout", "modules_to_save"):
                    modules = getattr(wrapper, store, None)
                    if modules is not None and adapter_name in modules:
                        modules[adapter_name].eval()
    return model


@dataclasses.dataclass
class _LoadPlan:
    targets: list[str]
    heads: list[str]
    adapter_name: str
    ignored: set[str] = dataclasses.field(default_factory=set)

    def destination(self, key: str) -> str:
        """The model parameter a file key (without prefix) is copied into, after injection."""
        for suffix in _LORA_SUFFIXES:
            if key.endswith(suffix):
                path, kind, leaf = key[: -len(suffix)], *suffix[1:].split(".")
                return f"{path}.{kind}.{self.adapter_name}.{leaf}"
        for head in self.heads:
            if key.startswith(f"{head}."):
                return f"{head}.modules_to_save.{self.adapter_name}.{key[len(head) + 1 :]}"
        module_path, leaf = _split_base_key(key)
        if module_path in self.targets:
            return f"{module_path}.base_layer.{leaf}"
        return f"{module_path}.{leaf}"


def _plan_load(
    model: nn.Module, config: LoraConfig, tensors: dict[str, torch.Tensor], adapter_name: str, source: str
) -> _LoadPlan:
    """Match every tensor of the file to the model; raise on anything that does not fit. Three
    checks, in order: the LoRA pairs fit their target modules, the heads to save are complete and
    fit, and every other tensor (a trained bias) has a base parameter of its shape."""
    made_for = f" (adapter made for {config.base_model_name_or_path})" if config.base_model_name_or_path else ""
    check_new_adapter_name(model, adapter_name)
    _check_keys(list(tensors), source)
    # Wrappers are not entered: their inner modules are never targets, and the walk stays
    # O(model) however many adapters the model already holds.
    modules = dict(named_modules_outside(model, (LoraLinear, ModulesToSave)))
    plan = _LoadPlan(_lora_targets(modules, config, tensors, source, made_for), [], adapter_name)
    plan.heads = find_heads_to_save(model, config)
    for head in plan.heads:
        plan.ignored |= _check_head(modules[head], head, config, tensors, source, made_for)
    _check_base_tensors(model, modules, plan.heads, tensors, source, made_for)
    return plan


def _check_keys(keys: list[str], source: str) -> None:
    """Every key is a PEFT key, and every LoRA key one of the kinds lorakit implements."""
    foreign = [k for k in keys if not k.startswith(PEFT_PREFIX)]
    if foreign:
        raise LorakitError(
            f"{source}: tensor {foreign[0]!r} is not a PEFT adapter key (expected 'base_model.model.' names)"
        )
    unsupported = [k for k in keys if ".lora_" in k and not k.endswith(_LORA_SUFFIXES)]
    if unsupported:
        raise LorakitError(f"{source}: tensor {unsupported[0]!r} belongs to a LoRA variant lorakit does not implement")


def _lora_targets(
    modules: dict[str, nn.Module], config: LoraConfig, tensors: dict[str, torch.Tensor], source: str, made_for: str
) -> list[str]:
    """The modules the file's LoRA pairs adapt, in model order, each checked against its pair."""
    order = {name: i for i, name in enumerate(modules)}
    targets = sorted(
        {k[len(PEFT_PREFIX) :].rsplit(".", 2)[0] for k in tensors if k.endswith(_LORA_SUFFIXES)},
        key=lambda n: (order.get(n, len(order)), n),
    )
    if not targets:
        raise LorakitError(f"{source} holds no LoRA weights (no '.lora_A.weight' tensors)")
    for path in targets:
        _check_lora_module(modules.get(path), path, config, tensors, source, made_for)
    return targets


def _check_head(
    module: nn.Module, head: str, config: LoraConfig, tensors: dict[str, torch.Tensor], source: str, made_for: str
) -> set[str]:
    """The file holds every weight of `head`, each of the base head's shape, and nothing else
    under it; returns the keys to skip (copies PEFT writes inside its wrapper)."""
    original = module.original_module if isinstance(module, ModulesToSave) else module
    expected = original.state_dict()
    # PEFT with bias="all" also writes the wrapper's inner copies (`head.modules_to_save.bias`,
    # `head.original_module.bias`); the plain `head.bias` key holds the trained value.
    prefix = f"{PEFT_PREFIX}{head}."
    inner_copies = {f"{prefix}{inner}.{k}" for inner in ("modules_to_save", "original_module") for k in expected}
    extra = sorted(
        k for k in tensors if k.startswith(prefix) and k[len(prefix) :] not in expected and k not in inner_copies
    )
    if extra:
        raise LorakitError(
            f"{source} has tensor {extra[0][len(PEFT_PREFIX) :]!r}, which module {head!r} of this base model "
            f"does not have{made_for}"
        )
    for key, value in expected.items():
        stored = tensors.get(f"{prefix}{key}")
        if stored is None:
            raise LorakitError(
                f"{source} has no weights for {head!r} ({key}), which this adapter trains (modules_to_save / "
                f"task_type {config.task_type}); loading it would leave a random head"
            )
        if stored.shape != value.shape:
            # Only a head of the base's rank but another row count is a classifier with other labels.
            labels = stored.ndim == value.ndim >= 1 and stored.shape[1:] == value.shape[1:]
            fix = f"for a classifier, load the base with num_labels={stored.shape[0]}" if labels else "it is damaged"
            raise LorakitError(
                f"adapter does not fit module {head!r}: {key} is {tuple(value.shape)} in the base model but "
                f"{tuple(stored.shape)} in the adapter{made_for}; {fix}"
            )
    return inner_copies & set(tensors)


def _check_base_tensors(
    model: nn.Module,
    modules: dict[str, nn.Module],
    heads: list[str],
    tensors: dict[str, torch.Tensor],
    source: str,
    made_for: str,
) -> None:
    """Every tensor that is neither LoRA nor a head (a trained base bias) matches a base parameter."""
    for key in tensors:
        short = key[len(PEFT_PREFIX) :]
        if short.endswith(_LORA_SUFFIXES) or any(short.startswith(f"{h}.") for h in heads):
            continue
        module_path, leaf = _split_base_key(short)
        wrapped = isinstance(modules.get(module_path), LoraLinear)
        existing = _tensor_at(model, f"{module_path}.base_layer.{leaf}" if wrapped else f"{module_path}.{leaf}")
        if existing is None:
            raise LorakitError(
                f"{source} has tensor {short!r}, which matches no parameter of this base model{made_for}"
            )
        if existing.shape != tensors[key].shape:
            raise LorakitError(
                f"adapter does not fit {short!r}: {tuple(existing.shape)} in the base model, "
                f"{tuple(tensors[key].shape)} in the adapter{made_for}"
            )


def _tensor_at(model: nn.Module, name: str) -> torch.Tensor | None:
    """The parameter or buffer called `name` (dotted path), or None: one lookup, not a walk."""
    for get in (model.get_parameter, model.get_buffer):
        try:
            return get(name)
        except AttributeError:
            continue
    return None


def _check_lora_module(
    module: nn.Module | None,
    path: str,
    config: LoraConfig,
    tensors: dict[str, torch.Tensor],
    source: str,
    made_for: str,
) -> None:
    """One targeted module: it exists, is Linear, and A, B (and B's bias) fit its shape and r."""
    if module is None:
        raise LorakitError(
            f"the adapter has LoRA weights for module {path!r}, which this base model does not have{made_for}"
        )
    if not isinstance(module, (*LINEAR_TYPES, LoraLinear)):
        raise LorakitError(
            f"the adapter targets {path!r}, which is a {type(module).__name__} in this model, "
            f"not a Linear layer{made_for}"
        )
    base = module.base_layer if isinstance(module, LoraLinear) else module
    in_features, out_features = linear_features(base)
    r = config.rank_and_scaling(path)[0]
    a = tensors.get(f"{PEFT_PREFIX}{path}.lora_A.weight")
    b = tensors.get(f"{PEFT_PREFIX}{path}.lora_B.weight")
    if a is None or b is None:
        missing = "lora_A" if a is None else "lora_B"
        raise LorakitError(f"{source} has no {missing} weight for module {path!r}: the adapter file is incomplete")
    for name, weight in (("lora_A", a), ("lora_B", b)):
        if not weight.is_floating_point():  # copying would turn integers or booleans into weights
            dtype = str(weight.dtype).removeprefix("torch.")
            raise LorakitError(
                f"{source}: module {path!r} has {name} of dtype {dtype}; LoRA weights are floating point: "
                "the adapter file is damaged"
            )
    if a.ndim != 2 or b.ndim != 2:
        raise LorakitError(
            f"{source}: module {path!r} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}; both must be "
            "matrices: the adapter file is damaged"
        )
    if (a.shape[1], b.shape[0]) != (in_features, out_features):
        raise LorakitError(
            f"adapter does not fit module {path!r}: the base layer maps {in_features} → {out_features} "
            f"(weight {tuple(base.weight.shape)}) but the adapter's B·A maps {a.shape[-1]} → {b.shape[0]} "
            f"(lora_A {tuple(a.shape)}, lora_B {tuple(b.shape)}){made_for}"
        )
    if a.shape[0] != r or b.shape[1] != r:
        raise LorakitError(
            f"{source}: module {path!r} has rank {a.shape[0]} in the weights but r={r} in the config "
            "(check r / rank_pattern in adapter_config.json)"
        )
    bias = tensors.get(f"{PEFT_PREFIX}{path}.lora_B.bias")
    if (bias is not None) != config.lora_bias:
        raise LorakitError(
            f"{source}: lora_bias is {str(config.lora_bias).lower()} in the config but module {path!r} "
            f"{'has' if bias is not None else 'has no'} lora_B.bias weights"
        )
    if bias is not None and tuple(bias.shape) != (out_features,):
        raise LorakitError(
            f"adapter does not fit module {path!r}: lora_B.bias is {tuple(bias.shape)}, "
            f"the layer needs ({out_features},)"
        )


def _split_base_key(key: str) -> tuple[str, str]:
    """`a.b.base_layer.bias` or `a.b.bias` → (`a.b`, `bias`): the base module and its tensor."""
    module_path, _, leaf = key.rpartition(".")
    return module_path.removesuffix(".base_layer"), leaf


def _adapter_folder(path: str) -> Path:
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    if folder.exists():
        raise LorakitError(f"adapter path {path} is a file; pass the folder that holds {CONFIG_NAME}")
    if path.count("/") != 1 or path.startswith((".", "/", "~")):
        raise LorakitError(f"adapter folder {path} does not exist")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, "adapter_model.bin"]))
    except Exception as error:  # any Hub failure (offline, 404, auth) is one user-facing message
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LorakitError(
            f"adapter {path!r} is not a local folder and could not be fetched from the Hub: {first_line}"
        ) from None
