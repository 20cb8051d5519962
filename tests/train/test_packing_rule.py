"""`--packing auto`: rows are packed only when length-grouped batches would still be mostly padding."""

from __future__ import annotations

import pytest

from lorakit.errors import LorakitError
from lorakit.train.config import TrainConfig
from lorakit.train.tasks import CausalLMTask
from lorakit.train.tasks.generative import PACK_ABOVE, padding_share


def rows(lengths: list[int]) -> list[dict[str, list[int]]]:
    return [{"input_ids": [1] * n, "labels": [1] * n} for n in lengths]


def test_padding_share_of_sorted_batches() -> None:
    assert padding_share([8, 8, 16, 16], 2) == 0.0
    # Batches (3, 5) → 2 × 8 and (20,) → 24: 28 real tokens of 40.
    assert padding_share([5, 20, 3], 2) == pytest.approx(1 - 28 / 40)
    assert padding_share([], 4) == 0.0


@pytest.mark.parametrize(
    ("lengths", "packed"),
    [([16] * 32, False), ([3, 5, 6, 7] * 8, True)],  # even lengths pad nothing; 3–7 tokens pad to 8
)
def test_auto_packs_only_where_padding_dominates(lengths: list[int], packed: bool) -> None:
    config = TrainConfig(task="causal-lm", max_length=64, batch_size=4)
    training = CausalLMTask(config).training_rows(rows(lengths))
    assert (padding_share(lengths, 4) > PACK_ABOVE) is packed
    assert config.packing == ("on" if packed else "off")
    assert (len(training) < len(lengths)) is packed


def test_packing_flag_values() -> None:
    assert TrainConfig(task="causal-lm", packing=True).packing == "on"  # YAML's `packing: true`
    assert TrainConfig(task="seq2seq", model="t5", packing="auto").packing == "auto"
    with pytest.raises(LorakitError, match="packing applies to task causal-lm only"):
        TrainConfig(task="seq2seq", model="t5", packing="on")
