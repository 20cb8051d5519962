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


def test_scoring_deals_whole_batches_and_names_the_rank_dealt_one_fewer() -> None:
    """Evaluation over processes: length-sorted rows cut into scoring batches, dealt round-robin;
    every row scored once; a rank dealt one batch fewer knows it (under FSDP it runs one more
    forward so that every rank's forwards pair up)."""
    from lorakit.train.loop import deal_batches

    order = list(range(17))  # 3 batches of 8, 8 and 1 rows over 2 ranks
    first, second = deal_batches(order, 8, 2, 0), deal_batches(order, 8, 2, 1)
    assert first == ([*range(8), 16], False) and second == (list(range(8, 16)), True)
    shares = [deal_batches(order, 4, 3, rank) for rank in range(3)]  # 5 batches over 3 ranks
    assert sorted(i for rows, _ in shares for i in rows) == order
    assert [short for _, short in shares] == [False, False, True]
    assert deal_batches([], 8, 2, 1) == ([], False)
    assert deal_batches(order, 8, 1, 0) == (order, False)
