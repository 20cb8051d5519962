"""Continuous seq2seq decoding (lorakit/serve/engine/seq2seq_decoding.py): on T5 (relative positions)
and BART (absolute positions), rows joining and leaving a running batch each get what their adapter
alone gets from `model.generate()`: the same greedy tokens and the same logits at every step."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import SEQ2SEQ_TARGETS, add_random_adapter, run_to_end, tiny_seq2seq
from transformers import M2M100Config, M2M100ForConditionalGeneration

from lorakit.errors import LorakitError
from lorakit.lora import set_adapter
from lorakit.serve.engine.decoding import Row
from lorakit.serve.engine.seq2seq_decoding import Seq2SeqDecoder

NO_EOS = frozenset()


class Recording(Seq2SeqDecoder):
    """A Seq2SeqDecoder that keeps the logits each row drew its tokens from: id(row) → [(vocab,)]."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.logits: dict[int, list[torch.Tensor]] = {}

    def _draw(self, rows, logits):
        for row, row_logits in zip(rows, logits, strict=True):
            self.logits.setdefault(id(row), []).append(row_logits)
        return super()._draw(rows, logits)


@pytest.fixture(scope="module", params=["t5", "bart"])
def model(request: pytest.FixtureRequest) -> torch.nn.Module:
    model = tiny_seq2seq(request.param)
    targets = SEQ2SEQ_TARGETS[request.param]
    add_random_adapter(model, "a", r=4, task_type="SEQ_2_SEQ_LM", targets=targets, seed=1)
    add_random_adapter(model, "b", r=8, task_type="SEQ_2_SEQ_LM", targets=targets, seed=2)
    set_adapter(model, None)
    return model.eval()


def alone(model: torch.nn.Module, adapter: str | None, prompt: list[int], count: int) -> tuple[list[int], torch.Tensor]:
    """`model.generate()`'s greedy tokens of `prompt` on `adapter` alone, and its logits (count, vocab)."""
    set_adapter(model, adapter)
    try:
        with torch.no_grad():
            out = model.generate(
                torch.tensor([prompt]),
                max_new_tokens=count,
                do_sample=False,
                eos_token_id=None,
                return_dict_in_generate=True,
                output_logits=True,
            )
    finally:
        set_adapter(model, None)
    return out.sequences[0, 1:].tolist(), torch.cat(out.logits)


def test_rows_joining_and_leaving_generate_what_each_adapter_alone_does(model) -> None:
    rows = {
        "a": Row("a", [5, 6, 7], max_new_tokens=6, eos_ids=NO_EOS),
        "base": Row(None, [9, 10, 11, 12, 13], max_new_tokens=2, eos_ids=NO_EOS),
        "b": Row("b", [20, 21, 22, 23, 24, 25, 26], max_new_tokens=5, eos_ids=NO_EOS),
        "a-late": Row("a", [30], max_new_tokens=3, eos_ids=NO_EOS),
    }
    decoder = Recording(model, pad_id=0)
    arrivals = {0: [rows["a"], rows["base"]], 2: [rows["b"]], 4: [rows["a-late"]]}
    finished = run_to_end(decoder, arrivals)
    assert not torch.allclose(alone(model, "a", [5, 6, 7], 6)[1], alone(model, None, [5, 6, 7], 6)[1])  # adapters count
    for row in rows.values():
        tokens, logits = alone(model, row.adapter, row.prompt_ids, row.max_new_tokens)
        assert row.tokens == tokens, row
        torch.testing.assert_close(torch.stack(decoder.logits[id(row)]), logits, atol=1e-3, rtol=1e-3)
        assert row.finish_reason == "length"
    steps = {id(row): step for step, row in finished}
    assert steps[id(rows["base"])] == 0  # its 2nd token came with the first step: it left at once
    assert len(finished) == 4 and not decoder.rows


def test_columns_no_live_row_uses_are_trimmed(model) -> None:
    long, short = Row("a", list(range(4, 24)), 2, NO_EOS), Row("b", [4, 5], 6, NO_EOS)
    decoder = Seq2SeqDecoder(model, pad_id=0)
    decoder.admit([short])
    decoder.step()
    decoder.admit([long])  # a longer source, a shorter decoder history: padded right and left
    assert decoder.source.shape == (2, 20) and decoder.mask.shape == (2, 2)
    assert decoder.step() == [long]
    # Only the short row is left: its 2 source tokens; its start token and the 2 tokens fed back.
    assert decoder.source.shape == (1, 2) and decoder.encoded.shape[:2] == (1, 2)
    assert decoder.cross.layers[0].keys.shape[0] == 1 and decoder.cross.layers[0].keys.shape[2] == 2
    assert decoder.mask.shape == (1, 3) and decoder.mask.all()
    while decoder.rows:
        decoder.step()
    assert short.tokens == alone(model, "b", [4, 5], 6)[0]
    assert long.tokens == alone(model, "a", list(range(4, 24)), 2)[0]


def test_an_end_of_sequence_token_stops_its_row_only(model) -> None:
    expected, _ = alone(model, "b", [40, 41], 6)
    eos = expected[2]  # the third token it would generate
    stopping = Row("b", [40, 41], 6, frozenset({eos}))
    other = Row("a", [50, 51, 52], 4, NO_EOS)
    run_to_end(Seq2SeqDecoder(model, pad_id=0), {0: [stopping, other]})
    assert stopping.finish_reason == "stop" and stopping.tokens == expected[: expected.index(eos)]
    assert other.tokens == alone(model, "a", [50, 51, 52], 4)[0]


def test_a_dropped_row_leaves_at_once_and_the_others_go_on(model) -> None:
    gone, kept = Row("a", [60, 61, 62, 63, 64, 65], 20, NO_EOS), Row(None, [62, 63, 64], 5, NO_EOS)
    decoder = Seq2SeqDecoder(model, pad_id=0)
    decoder.admit([gone, kept])
    decoder.step()
    decoder.drop([gone])
    assert decoder.rows == [kept] and len(gone.tokens) == 2 and gone.finish_reason is None
    assert decoder.source.shape == (1, 3)
    run_to_end(decoder, {})
    assert kept.tokens == alone(model, None, [62, 63, 64], 5)[0]


def test_a_seed_reproduces_a_sampled_row_whatever_shares_its_batch(model) -> None:
    def sampled(seed: int) -> Row:
        return Row("a", [70, 71], 8, NO_EOS, temperature=3.0, top_p=0.95, seed=seed)

    by_itself = sampled(7)
    run_to_end(Seq2SeqDecoder(model, pad_id=0), {0: [by_itself]})
    crowded, other_seed = sampled(7), sampled(8)
    greedy = Row("b", [72, 73, 74, 75], 8, NO_EOS)
    run_to_end(Seq2SeqDecoder(model, pad_id=0), {0: [greedy, other_seed], 1: [crowded]})
    assert crowded.tokens == by_itself.tokens
    assert other_seed.tokens != by_itself.tokens
    assert greedy.tokens == alone(model, "b", [72, 73, 74, 75], 8)[0]


def test_the_prompt_and_the_new_tokens_each_fit_the_positions() -> None:
    decoder = Seq2SeqDecoder(tiny_seq2seq("t5"), pad_id=0)
    decoder.check_fits(64, 64, 64)  # encoder and decoder each have their own positions
    with pytest.raises(LorakitError, match="the prompt is 65 tokens; it must fit the model's 64 positions"):
        decoder.check_fits(65, 1, 64)
    with pytest.raises(LorakitError, match="max_new_tokens is 65 tokens"):
        decoder.check_fits(1, 65, 64)


def test_a_decoder_that_derives_its_positions_itself_is_refused() -> None:
    """M2M100 numbers positions from the padding of its inputs: rows of different ages cannot share."""
    config = M2M100Config(
        vocab_size=100,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=32,
    )
    with pytest.raises(LorakitError, match="derives its positions itself"):
        Seq2SeqDecoder(M2M100ForConditionalGeneration(config).eval(), pad_id=1)
