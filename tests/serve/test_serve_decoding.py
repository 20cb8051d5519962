"""Continuous decoding (lorakit/serve/engine/decoding.py): rows joining and leaving a running batch
each get what their adapter alone generates, greedy or seeded sampling, and the log-probabilities
of a plain forward when they ask for them."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import add_random_adapter, run_to_end

from lorakit.errors import LorakitError
from lorakit.lora import set_adapter
from lorakit.serve.engine.decoding import Decoder, Row, _sample
from lorakit.serve.engine.generate import GenerateInput
from tiny_models import tiny_llama

TARGETS = ["q_proj", "v_proj"]
NO_EOS = frozenset()


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    model = tiny_llama()
    add_random_adapter(model, "a", r=4, task_type="CAUSAL_LM", targets=TARGETS, seed=1)
    add_random_adapter(model, "b", r=8, task_type="CAUSAL_LM", targets=TARGETS, seed=2)
    set_adapter(model, None)
    return model.eval()


def alone(model: torch.nn.Module, adapter: str | None, prompt: list[int], count: int) -> list[int]:
    """Greedy tokens of `prompt` on `adapter` alone, without a cache: the whole sequence each step."""
    set_adapter(model, adapter)
    ids = list(prompt)
    try:
        for _ in range(count):
            with torch.no_grad():
                ids.append(int(model(input_ids=torch.tensor([ids])).logits[0, -1].argmax()))
    finally:
        set_adapter(model, None)
    return ids[len(prompt) :]


def test_long_prompts_prefill_in_chunks_between_decode_steps(model) -> None:
    """prefill_tokens=4: prompts longer than 4 tokens are each a group, prefilled 4 columns at a
    time (the shorter first: its first chunk at admit, then one chunk per step) while the running
    row gains a token every step; every row then equals its adapter alone."""
    decoder = Decoder(model, pad_id=0, prefill_tokens=4)
    running = Row("a", [5, 6], max_new_tokens=12, eos_ids=NO_EOS)
    decoder.admit([running])  # 2 tokens: prefilled at once
    long, longer = Row(None, list(range(40, 47)), 4, NO_EOS), Row("b", list(range(20, 29)), 4, NO_EOS)
    assert decoder.admit([longer, long]) == []  # long's first chunk (columns 0-3) runs now
    assert decoder.prefilling == [long, longer] and decoder.size == 3 and not long.tokens
    decoder.step()  # long: columns 4-6; it draws its first token, joins and decodes
    assert decoder.rows == [running, long] and len(long.tokens) == 2 and decoder.prefilling == [longer]
    assert len(running.tokens) == 2
    for _ in range(3):  # longer: 9 columns, 3 chunks
        decoder.step()
    assert decoder.prefilling == [] and len(longer.tokens) == 2 and len(running.tokens) == 5
    run_to_end(decoder, {})
    for row in (running, long, longer):
        assert row.tokens == alone(model, row.adapter, row.prompt_ids, row.max_new_tokens), row


def test_a_row_dropped_while_prefilling_leaves_its_group(model) -> None:
    decoder = Decoder(model, pad_id=0, prefill_tokens=2)
    group = [Row("a", list(range(20, 29)), 3, NO_EOS), Row("b", list(range(40, 45)), 3, NO_EOS)]
    decoder.admit(group)
    decoder.step()
    decoder.drop([group[0]])
    assert decoder.prefilling == [group[1]]
    run_to_end(decoder, {})
    assert group[0].tokens == [] and group[1].tokens == alone(model, "b", group[1].prompt_ids, 3)
    decoder.admit([group[0]])  # dropping every row of a group ends it
    decoder.drop([group[0]])
    assert decoder.size == 0 and decoder.prefills == []


def test_rows_joining_and_leaving_generate_what_each_adapter_alone_does(model) -> None:
    rows = {
        "a": Row("a", [5, 6, 7], max_new_tokens=6, eos_ids=NO_EOS),
        "base": Row(None, [9, 10, 11, 12, 13], max_new_tokens=2, eos_ids=NO_EOS),
        "b": Row("b", [20, 21, 22, 23, 24, 25, 26], max_new_tokens=5, eos_ids=NO_EOS),
        "a-late": Row("a", [30], max_new_tokens=3, eos_ids=NO_EOS),
    }
    decoder = Decoder(model, pad_id=0)
    arrivals = {0: [rows["a"], rows["base"]], 2: [rows["b"]], 4: [rows["a-late"]]}
    finished = run_to_end(decoder, arrivals)
    assert alone(model, "a", [5, 6, 7], 6) != alone(model, None, [5, 6, 7], 6)  # the adapters matter
    for row in rows.values():
        assert row.tokens == alone(model, row.adapter, row.prompt_ids, row.max_new_tokens), row
        assert row.finish_reason == "length"
    steps = {id(row): step for step, row in finished}
    assert steps[id(rows["base"])] == 0  # its 2nd token came with the first step: it left at once
    assert len(finished) == 4 and not decoder.rows


def test_the_cache_is_trimmed_to_the_longest_live_row(model) -> None:
    long, short = Row("a", list(range(4, 24)), 2, NO_EOS), Row("b", [4, 5], 6, NO_EOS)
    decoder = Decoder(model, pad_id=0)
    decoder.admit([long, short])
    assert decoder.mask.shape == (2, 20)
    assert decoder.step() == [long]  # its 2 tokens: prefill's and this step's
    # Only the short row is left: its 2 prompt tokens and 1 generated one, no padding.
    assert decoder.mask.shape == (1, 3) and decoder.mask.all()
    assert decoder.cache.layers[0].keys.shape[0] == 1 and decoder.cache.layers[0].keys.shape[2] == 3
    while decoder.rows:
        decoder.step()
    assert short.tokens == alone(model, "b", [4, 5], 6)


def test_an_end_of_sequence_token_stops_its_row_only(model) -> None:
    expected = alone(model, "b", [40, 41], 6)
    eos = expected[2]  # the third token it would generate
    stopping = Row("b", [40, 41], 6, frozenset({eos}))
    other = Row("a", [50, 51, 52], 4, NO_EOS)
    decoder = Decoder(model, pad_id=0)
    run_to_end(decoder, {0: [stopping, other]})
    assert stopping.finish_reason == "stop" and stopping.tokens == expected[: expected.index(eos)]
    assert other.tokens == alone(model, "a", [50, 51, 52], 4)


def test_a_dropped_row_leaves_at_once_and_the_others_go_on(model) -> None:
    gone, kept = Row("a", [60, 61], 20, NO_EOS), Row(None, [62, 63, 64], 5, NO_EOS)
    decoder = Decoder(model, pad_id=0)
    decoder.admit([gone, kept])
    decoder.step()
    decoder.drop([gone])
    assert decoder.rows == [kept] and len(gone.tokens) == 2 and gone.finish_reason is None
    run_to_end(decoder, {})
    assert kept.tokens == alone(model, None, [62, 63, 64], 5)


def test_a_seed_reproduces_a_sampled_row_whatever_shares_its_batch(model) -> None:
    def sampled(seed: int) -> Row:
        return Row("a", [70, 71], 8, NO_EOS, temperature=1.5, top_p=0.9, seed=seed)

    by_itself = sampled(7)
    run_to_end(Decoder(model, pad_id=0), {0: [by_itself]})
    crowded, other_seed = sampled(7), sampled(8)
    greedy = Row("b", [72, 73, 74, 75], 8, NO_EOS)
    run_to_end(Decoder(model, pad_id=0), {0: [greedy, other_seed], 1: [crowded]})
    assert crowded.tokens == by_itself.tokens
    assert other_seed.tokens != by_itself.tokens
    assert greedy.tokens == alone(model, "b", [72, 73, 74, 75], 8)


def forward_logprobs(model: torch.nn.Module, adapter: str | None, ids: list[int]) -> torch.Tensor:
    """log_softmax of `adapter`'s logits at the last position of `ids`, alone and without a cache: (vocab,)."""
    set_adapter(model, adapter)
    try:
        with torch.no_grad():
            return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1], dim=-1)
    finally:
        set_adapter(model, None)


def test_logprobs_are_the_log_softmax_of_a_plain_forward_for_the_rows_that_ask(model) -> None:
    greedy = Row("a", [5, 6, 7], 5, NO_EOS, top_logprobs=3)
    sampled = Row("b", [8, 9], 6, NO_EOS, temperature=1.5, top_p=0.9, seed=4, top_logprobs=0)
    silent = Row(None, [10, 11, 12, 13], 4, NO_EOS)
    run_to_end(Decoder(model, pad_id=0), {0: [greedy, silent], 1: [sampled]})
    assert silent.logprobs == [] and len(silent.tokens) == 4
    for row in (greedy, sampled):
        assert len(row.logprobs) == len(row.tokens) == row.max_new_tokens
        for i, (token, logprobs) in enumerate(zip(row.tokens, row.logprobs, strict=True)):
            expected = forward_logprobs(model, row.adapter, row.prompt_ids + row.tokens[:i])
            assert logprobs.logprob == pytest.approx(expected[token].item(), abs=1e-4)
            values, ids = expected.topk(row.top_logprobs)
            assert [alternative for alternative, _ in logprobs.top] == ids.tolist()
            assert [value for _, value in logprobs.top] == pytest.approx(values.tolist(), abs=1e-4)
    assert all(logprobs.top[0][0] == token for token, logprobs in zip(greedy.tokens, greedy.logprobs, strict=True))


def test_a_row_finished_from_outside_draws_no_more(model) -> None:
    stopped, other = Row("a", [60, 61], 20, NO_EOS), Row(None, [62, 63, 64], 5, NO_EOS)
    decoder = Decoder(model, pad_id=0)
    decoder.admit([stopped, other])
    stopped.finish("stop")  # as the scheduler does when its text reaches a stop string
    decoder.drop([stopped])
    run_to_end(decoder, {})
    assert stopped.tokens == alone(model, "a", [60, 61], 1) and stopped.finish_reason == "stop"
    assert other.tokens == alone(model, None, [62, 63, 64], 5)


def test_nucleus_sampling_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    draws = {_sample(logits, 1.0, 0.8, torch.Generator().manual_seed(s)) for s in range(200)}
    assert draws == {0, 1}  # 0.5 + 0.3 reach 0.8
    assert {_sample(logits, 1.0, 1e-6, torch.Generator().manual_seed(s)) for s in range(50)} == {0}
    assert {_sample(logits, 1.0, 1.0, torch.Generator().manual_seed(s)) for s in range(400)} == {0, 1, 2, 3}


@pytest.mark.parametrize("temperature", [1e-300, 5e-324, 1e-30])
def test_a_temperature_below_float32s_range_draws_the_likeliest_token(temperature: float) -> None:
    """1e-300 is 0 in float32: logits / temperature once made NaNs and multinomial raised (a 500)."""
    logits = torch.tensor([0.1, 2.5, -1.0, 2.4])
    assert {
        _sample(logits, temperature, top_p, torch.Generator().manual_seed(s)) for s in range(20) for top_p in (1.0, 0.5)
    } == {1}


@pytest.mark.parametrize("temperature", [float("inf"), float("nan"), -0.5])
def test_a_temperature_that_is_no_finite_number_is_refused(temperature: float) -> None:
    with pytest.raises(LorakitError, match=r"temperature must be 0 \(greedy\) or a finite number above"):
        GenerateInput("w5", temperature=temperature)


def test_an_empty_prompt_is_refused() -> None:
    with pytest.raises(LorakitError, match="the prompt is empty"):
        Row(None, [], 4, NO_EOS)
