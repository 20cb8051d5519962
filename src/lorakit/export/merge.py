r"""Merge an adapter into its base and write a standalone transformers model folder.

    W' = W + scaling · B·A        on every adapted layer, computed in fp32, then cast to the output dtype
    W' = Ŵ + scaling · B·A        for a QLoRA adapter (lorakit.json "quantize": "nf4"), Ŵ = dequant(nf4(W))

A QLoRA adapter learnt to correct the *quantized* weights Ŵ, not W: adding it to the original W
gives a model that was never trained (the most reported problem with merged QLoRA adapters), so
the base goes through the same NF4 round trip first.

The folder holds model.safetensors + config.json (+ generation_config.json), the base's tokenizer,
and lorakit.json (task, label names, ...). Plain `transformers` loads it; lorakit is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lorakit.artifacts import AdapterArtifact, load_base_model, read_adapter_artifact, write_artifact_info
from lorakit.errors import LorakitError
from lorakit.folders import check_output_folder, staged_folder
from lorakit.lora import load_adapter, merge_and_unload
from lorakit.models import load_tokenizer, resolve_model
from lorakit.models.loading import load_config

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# safetensors' dtype names → torch.
_STORED_DTYPES = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def merge_to_folder(adapter: str | Path, out_dir: str | Path, dtype: str = "auto", overwrite: bool = False) -> Path:
    """Load `adapter`'s base with the right head, merge the adapter in (fp32), cast, and save the
    model with its tokenizer to `out_dir`; returns `out_dir`.

    dtype: "auto" keeps the base checkpoint's own dtype (a bf16 base gives a bf16 folder), or
    "fp32" / "bf16" / "fp16". The folder appears only once complete; with `overwrite` it replaces
    an existing one, which stays intact if anything fails.

    Raises:
        LorakitError: an unknown dtype, an output folder that exists and is not empty (without
            `overwrite`) or that holds the adapter or the base, a missing or invalid adapter, a
            full-model run folder, an adapter that does not fit its base.
    """
    if dtype != "auto" and dtype not in DTYPES:
        raise LorakitError(f"dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    artifact = read_adapter_artifact(adapter)
    out = Path(out_dir).expanduser()
    check_output_folder(out, overwrite, [artifact.folder, *filter(None, [artifact.base_folder()])])
    target_dtype = DTYPES[dtype] if dtype != "auto" else checkpoint_dtype(artifact.base_model)
    model = merged_model(artifact).to(target_dtype)
    tokenizer = _base_tokenizer(artifact.base_model)
    info = artifact.derived_info().replace(method="merged", merged_from=str(artifact.folder.resolve()))
    if artifact.quantize:
        # The weights are full precision now; what they were merged onto is kept as a note.
        info = info.replace(quantize=None, merged_onto=f"{artifact.quantize}-dequantized base")
    with staged_folder(out) as staging:
        model.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        write_artifact_info(staging, info)
    return out


def merged_model(artifact: AdapterArtifact) -> nn.Module:
    """The plain transformers model (fp32, eval mode) with the adapter merged into its weights."""
    model = load_base_model(artifact)
    if artifact.quantize:
        from lorakit.quant import dequantize_model, quantize_model

        # Ŵ = dequant(nf4(W)) in place of W: the weights the adapter was trained against.
        quantize_model(model, artifact.quantize)
        dequantize_model(model, torch.float32)
    load_adapter(model, artifact.folder)
    return merge_and_unload(model).eval()


def checkpoint_dtype(base_model: str) -> torch.dtype:
    """The base checkpoint's own dtype: its config's `dtype` (`torch_dtype`), else the dtype most
    of its stored parameters have, else fp32."""
    declared = getattr(load_config(base_model), "dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    if isinstance(declared, torch.dtype) and declared.is_floating_point:
        return declared
    location = Path(resolve_model(base_model))
    counts = _stored_parameter_counts(location) if location.is_dir() else {}
    return max(counts, key=counts.get) if counts else torch.float32


@dataclass(frozen=True)
class ModelFolderSummary:
    """What a model folder holds, read from its files' headers."""

    files: list[str]
    size_bytes: int
    parameters: int
    dtypes: list[str]  # stored floating dtypes, most parameters first: "bfloat16", ...


def summarize_model_folder(folder: Path) -> ModelFolderSummary:
    """Files, bytes, parameter count and stored dtypes of a model folder, read from headers only."""
    counts = _stored_parameter_counts(folder)
    files = sorted(f for f in folder.rglob("*") if f.is_file())
    return ModelFolderSummary(
        files=[str(f.relative_to(folder)) for f in files],
        size_bytes=sum(f.stat().st_size for f in files),
        parameters=sum(counts.values()),
        dtypes=[str(d).removeprefix("torch.") for d in sorted(counts, key=counts.get, reverse=True)],
    )


def _stored_parameter_counts(folder: Path) -> dict[torch.dtype, int]:
    """Floating-point values stored per dtype across the folder's *.safetensors (headers only)."""
    counts: dict[torch.dtype, int] = {}
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as stored:
            for key in stored.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = stored.get_slice(key)
                dtype = _STORED_DTYPES.get(tensor.get_dtype())
                if dtype is not None:
                    counts[dtype] = counts.get(dtype, 0) + int(torch.Size(tensor.get_shape()).numel())
    return counts


def _base_tokenizer(base_model: str):
    """The base's tokenizer, or None when the base folder has none or an unusable one (the model
    is saved without)."""
    try:
        return load_tokenizer(base_model)
    except LorakitError:
        return None
