"""The growing KV cache layer: the same keys and values as transformers' concatenating one, written
in place, through growth and through the decoders' reassignments."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, MistralConfig
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

from lorakit.serve.engine.kv_cache import SlackLayer, slack_cache


def states(rows: int, positions: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, positions, 4, generator=generator), torch.randn(
        rows, 2, positions, 4, generator=generator
    )


def test_updates_equal_the_concatenating_layer_through_growth() -> None:
    ours, theirs = SlackLayer(), DynamicLayer()
    for step, positions in enumerate([5, 1, 1, 70, 1, 200]):  # growth at the 1st, 4th and 6th update
        key, value = states(3, positions, seed=step)
        got, expected = ours.update(key, value), theirs.update(key, value)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
        assert ours.get_seq_length() == theirs.get_seq_length()
    assert ours._keys.buffer.shape[-2] > ours.get_seq_length()  # room is kept for the next steps


def test_a_step_writes_in_place_until_the_room_runs_out() -> None:
    layer = SlackLayer()
    layer.update(*states(2, 10, seed=0))
    buffer = layer._keys.buffer
    for step in range(buffer.shape[-2] - 10):
        layer.update(*states(2, 1, seed=step + 1))
        assert layer._keys.buffer is buffer
    layer.update(*states(2, 1, seed=99))
    assert layer._keys.buffer is not buffer and layer.get_seq_length() == buffer.shape[-2] + 1


def test_assigned_keys_and_values_replace_the_cache() -> None:
    """As the decoders do when rows join (a longer cache) or leave (fewer rows, trimmed columns)."""
    ours, theirs = SlackLayer(), DynamicLayer()
    for layer in (ours, theirs):
        layer.update(*states(3, 6, seed=0))
        layer.keys, layer.values = layer.keys[[0, 2], :, 2:], layer.values[[0, 2], :, 2:]
        layer.update(*states(2, 1, seed=1))
        layer.keys = torch.cat([layer.keys, torch.zeros(1, 2, 5, 4)])
        layer.values = torch.cat([layer.values, torch.ones(1, 2, 5, 4)])
    got, expected = ours.update(*states(3, 1, seed=2)), theirs.update(*states(3, 1, seed=2))
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])
    ours.keys = ours.values = None
    assert ours.get_seq_length() == 0


def test_slack_cache_grows_full_attention_layers_and_keeps_sliding_ones() -> None:
    full = slack_cache(LlamaConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2))
    assert [type(layer) for layer in full.layers] == [SlackLayer, SlackLayer]
    sliding = slack_cache(MistralConfig(num_hidden_layers=2, hidden_size=8, num_attention_heads=2, sliding_window=4))
    assert all(type(layer) is DynamicSlidingWindowLayer for layer in sliding.layers)
