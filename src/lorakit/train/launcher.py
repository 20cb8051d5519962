"""What `accelerate launch --config_file FILE` asks of a run, read from the environment it sets.

An accelerate config with `distributed_type: FSDP` (examples/fsdp.yaml) reaches each process as
ACCELERATE_USE_FSDP=true plus FSDP_* variables. lorakit shards with its own FSDP2 code
(train/sharding.py: every transformer block, resharded after forward, weights loaded once and
scattered), so the config turns `--fsdp` on, its activation checkpointing turns
`--gradient-checkpointing on`, and a setting lorakit does not implement is refused in one line
rather than silently ignored. The wrap policy, state-dict type, prefetch and loading settings need
nothing: lorakit always wraps the model's own blocks, gathers full adapters on the main process
and loads the checkpoint once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig

# accelerate's variable → (the value lorakit implements, what to set in the config file).
SUPPORTED = {
    "FSDP_VERSION": ("2", "fsdp_version: 2 (lorakit shards with FSDP2)"),
    "FSDP_OFFLOAD_PARAMS": ("false", "fsdp_offload_params: false (lorakit keeps shards on the device)"),
    "FSDP_RESHARD_AFTER_FORWARD": ("true", "fsdp_reshard_after_forward: true (lorakit reshards every block)"),
}


def _on(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def with_launcher_settings(config: TrainConfig, environ: Mapping[str, str] = os.environ) -> TrainConfig:
    """`config` as the launcher's FSDP config asks (a new, re-checked config), or `config` itself
    when the process was not launched with one.

    Raises:
        LorakitError: the FSDP config asks for something lorakit does not do (names the setting
            and the value to use), or for sharding a run that cannot be sharded (--quantize).
    """
    if not _on(environ.get("ACCELERATE_USE_FSDP")):
        return config
    for variable, (wanted, fix) in SUPPORTED.items():
        value = environ.get(variable)
        if value is not None and value.strip().lower() != wanted:
            raise LorakitError(
                f"the accelerate config sets {variable.lower()} = {value}, which lorakit does not do; set {fix}"
            )
    changes: dict = {"fsdp": True}
    if _on(environ.get("FSDP_ACTIVATION_CHECKPOINTING")):
        changes["gradient_checkpointing"] = "on"
    if all(getattr(config, key) == value for key, value in changes.items()):
        return config
    return TrainConfig.from_dict({**config.to_dict(), **changes}, source="accelerate config")
