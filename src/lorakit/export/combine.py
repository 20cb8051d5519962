"""Combine adapter folders into a new adapter folder (PEFT format + lorakit.json).

The adapters must share their base model, task, label names and quantization. They are loaded
onto one copy of the base, combined by `lorakit.lora.combine_adapters` (see there for the math of
each method), and the result is saved like any adapter: `load_adapter`, PEFT and `lorakit merge`
read it. lorakit.json comes from the first adapter, with a `combined` note of what went in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from lorakit.artifacts import AdapterArtifact, load_base_model, read_adapter_artifact, write_artifact_info
from lorakit.errors import LorakitError
from lorakit.folders import check_output_folder, staged_folder
from lorakit.lora import combine_adapters, load_adapter, save_adapter
from lorakit.lora.combine import METHODS
from lorakit.models import resolve_model

COMBINED = "combined"


def combine_adapter_folders(
    adapters: Sequence[str | Path],
    weights: Sequence[float],
    out_dir: str | Path,
    method: str = "linear",
    svd_rank: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the weighted combination of the adapters in `adapters` (adapter or run folders) to
    `out_dir`; returns `out_dir`. The folder appears only once complete.

    Raises:
        LorakitError: weights that do not match the adapters, an unknown method, adapters for
            different bases / tasks / label names / quantization, an output folder that exists
            and is not empty (without `overwrite`), anything `combine_adapters` refuses.
    """
    if not adapters:
        raise LorakitError("name at least one adapter folder to combine")
    if len(weights) != len(adapters):
        raise LorakitError(f"got {len(weights)} weights for {len(adapters)} adapters; give one weight per adapter")
    if method not in METHODS:
        raise LorakitError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    artifacts = [read_adapter_artifact(path) for path in adapters]
    check_compatible(artifacts)
    out = Path(out_dir).expanduser()
    check_output_folder(out, overwrite, [a.folder for a in artifacts])

    # The LoRA factors do not depend on the base weights, so a QLoRA base needs no quantizing here.
    model = load_base_model(artifacts[0])
    names = adapter_names(artifacts)
    for name, artifact in zip(names, artifacts, strict=True):
        load_adapter(model, artifact.folder, adapter_name=name)
    combine_adapters(model, names, weights, COMBINED, method=method, svd_rank=svd_rank)

    combined = {
        "method": method,
        "weights": [float(w) for w in weights],
        "adapters": [str(a.folder.resolve()) for a in artifacts],
        **({"svd_rank": svd_rank} if svd_rank is not None else {}),
    }
    with staged_folder(out) as staging:
        save_adapter(model, staging, COMBINED)
        write_artifact_info(staging, artifacts[0].derived_info().replace(combined=combined))
    return out


def adapter_names(artifacts: Sequence[AdapterArtifact]) -> list[str]:
    """A readable, distinct adapter name per folder (a run's name for its adapter/), for messages."""
    names: list[str] = []
    for artifact in artifacts:
        folder = artifact.folder.resolve()
        name = re.sub(r"[^A-Za-z0-9_\-]", "_", folder.parent.name if folder.name == "adapter" else folder.name)
        name = name or "adapter"
        names.append(name if name not in names and name != COMBINED else f"{name}_{len(names)}")
    return names


def check_compatible(artifacts: Sequence[AdapterArtifact]) -> None:
    """Same base model (as resolved on this machine), task, label names and quantization."""
    first = artifacts[0]
    for other in artifacts[1:]:
        if resolve_model(other.base_model) != resolve_model(first.base_model):
            raise LorakitError(
                f"{other.folder} was trained on {other.base_model} but {first.folder} on {first.base_model}; "
                "only adapters of the same base model can be combined"
            )
        if other.task_type != first.task_type:
            raise LorakitError(
                f"{other.folder} is a {other.task_type} adapter but {first.folder} is {first.task_type}; "
                "combine adapters of one task"
            )
        if other.label_names != first.label_names:
            raise LorakitError(
                f"{other.folder} has labels {other.label_names} but {first.folder} has {first.label_names}; "
                "only classifiers with the same label names, in the same order, can be combined"
            )
        if other.quantize != first.quantize:
            raise LorakitError(
                f"{other.folder} was trained on a {other.quantize or 'full-precision'} base but {first.folder} "
                f"on a {first.quantize or 'full-precision'} one; combine adapters trained on the same base weights"
            )
