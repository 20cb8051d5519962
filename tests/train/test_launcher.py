"""What a launch of several processes changes: `accelerate launch` with an FSDP config
(lorakit/train/launcher.py, read from the environment accelerate sets; the end-to-end launch is in
test_sharding.py), and batches that do not split evenly over the processes."""

from __future__ import annotations

import pytest

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig
from lorakit.train.launcher import with_launcher_settings

# What `accelerate launch --config_file examples/fsdp.yaml` sets (accelerate 1.15).
FSDP_ENV = {
    "ACCELERATE_USE_FSDP": "true",
    "FSDP_VERSION": "2",
    "FSDP_OFFLOAD_PARAMS": "false",
    "FSDP_RESHARD_AFTER_FORWARD": "true",
    "FSDP_ACTIVATION_CHECKPOINTING": "false",
    "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    "FSDP_STATE_DICT_TYPE": "FULL_STATE_DICT",
}


def test_without_an_fsdp_launch_the_config_is_left_alone() -> None:
    config = TrainConfig(task="causal-lm")
    assert with_launcher_settings(config, {}) is config
    assert with_launcher_settings(config, {"ACCELERATE_USE_FSDP": "false"}) is config


def test_an_fsdp_config_turns_sharding_on_and_its_checkpointing_too() -> None:
    config = TrainConfig(task="causal-lm", lr=3e-4)
    sharded = with_launcher_settings(config, FSDP_ENV)
    assert sharded.fsdp and sharded.lr == 3e-4 and sharded.gradient_checkpointing == "auto"
    assert not config.fsdp  # a new config; the caller's is untouched
    checkpointed = with_launcher_settings(config, {**FSDP_ENV, "FSDP_ACTIVATION_CHECKPOINTING": "true"})
    assert checkpointed.gradient_checkpointing == "on"
    already = TrainConfig(task="causal-lm", fsdp=True)
    assert with_launcher_settings(already, FSDP_ENV) is already


@pytest.mark.parametrize(
    "variable, value, fix",
    [
        ("FSDP_VERSION", "1", "set fsdp_version: 2"),
        ("FSDP_OFFLOAD_PARAMS", "true", "set fsdp_offload_params: false"),
        ("FSDP_RESHARD_AFTER_FORWARD", "false", "set fsdp_reshard_after_forward: true"),
    ],
)
def test_settings_lorakit_does_not_implement_are_refused_by_name(variable: str, value: str, fix: str) -> None:
    with pytest.raises(LorakitError, match=f"sets {variable.lower()} = {value}, which lorakit does not do; {fix}"):
        with_launcher_settings(TrainConfig(task="causal-lm"), {**FSDP_ENV, variable: value})


def test_an_fsdp_launch_checks_the_config_again() -> None:
    assert with_launcher_settings(TrainConfig(task="causal-lm", quantize="nf4"), FSDP_ENV).fsdp
    with pytest.raises(LorakitError, match="fsdp cannot shard bitsandbytes' 4-bit weights"):
        with_launcher_settings(TrainConfig(task="causal-lm", quantize="bnb-nf4"), FSDP_ENV)


def test_batches_that_do_not_split_over_the_processes_are_named() -> None:
    """Every process takes as many batches (each step is collective): the remainder is said, once."""
    from lorakit.train.fit import leftover_batches

    note = leftover_batches(rows=100, batch_size=8, processes=2)  # 13 batches
    assert note.startswith("data: the 13 batches of an epoch do not split evenly over 2 processes; each takes 6")
    assert "and 1 sits out each epoch" in note and "multiple of 2 batches" in note
    assert leftover_batches(rows=96, batch_size=8, processes=2) is None  # 12 batches
    assert leftover_batches(rows=100, batch_size=8, processes=1) is None
    assert leftover_batches(rows=8, batch_size=8, processes=2) is None  # fewer than one each: an error instead
