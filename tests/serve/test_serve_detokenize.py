"""A row's text as its tokens arrive (lorakit/serve/engine/detokenize.py): stop strings across
token boundaries, streams holding back what may still change, each token's text for logprobs."""

from __future__ import annotations

from lorakit.serve.engine.decoding import Row, StepLogprobs
from lorakit.serve.engine.detokenize import RowText
from lorakit.serve.engine.stream import Piece

PIECES = ["He", "llo", " W", "or", "ld", "!", "\xc3", "\xa9"]  # "é" is split over its two UTF-8 bytes


class BytesTokenizer:
    """Token i is the bytes of PIECES[i] (latin-1, so ids 6 and 7 are half a character each),
    decoded as UTF-8, as a byte-level BPE tokenizer decodes."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return b"".join(PIECES[i].encode("latin-1") for i in ids).decode("utf-8", errors="replace")

    def batch_decode(self, sequences: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in sequences]


def feed(text: RowText, tokens: list[int], logprobs: bool = False) -> tuple[Row, list[Piece | None]]:
    """Take `tokens` one step at a time, as the scheduler does; the piece each step streams."""
    row = Row(None, [0], max_new_tokens=len(tokens), eos_ids=frozenset(), top_logprobs=1 if logprobs else None)
    pieces = []
    for token in tokens:
        row.take(token, StepLogprobs(-0.5, ((5, -1.0),)) if logprobs else None)
        text.update(row)
        pieces.append(text.piece(done=row.done or text.stopped))
        if text.stopped:
            break
    return row, pieces


def test_a_stop_string_across_token_boundaries_cuts_the_text_before_it() -> None:
    text = RowText(BytesTokenizer(), ["lo Wo", "xyz"])
    row, pieces = feed(text, [0, 1, 2, 3, 4, 5])
    assert text.stopped and text.text == "Hel"
    assert len(row.tokens) == 4  # it stopped at "or", the token that completed the stop string
    assert "".join(piece.text for piece in pieces if piece) == "Hel"


def test_a_stream_holds_back_what_may_begin_a_stop_string() -> None:
    text = RowText(BytesTokenizer(), ["o Wx"])
    _, pieces = feed(text, [0, 1, 2, 3, 4])
    # "Hello" → "o" may begin the stop: "Hell" goes; "Hello W" → "o W" held; "Hello Wor" cannot be it.
    assert [piece.text if piece else None for piece in pieces] == ["He", "ll", None, "o Wor", "ld"]
    assert not text.stopped and text.text == "Hello World"


def test_a_character_split_over_tokens_waits_for_its_last_byte() -> None:
    text = RowText(BytesTokenizer())
    _, pieces = feed(text, [0, 6, 7, 5])
    assert [piece.text if piece else None for piece in pieces] == ["He", None, "é", "!"]
    assert text.text == "Heé!"


def test_token_logprobs_carry_each_tokens_text_and_ride_with_the_next_piece() -> None:
    text = RowText(BytesTokenizer(), ["Wo"])
    row, pieces = feed(text, [0, 1, 2, 6, 7], logprobs=True)
    # Each token reads as it extends the one before; half a character reads as its replacement.
    assert [entry.token for entry in text.logprobs] == ["He", "llo", " W", "\ufffd", "\ufffd"]
    assert all(entry.logprob == -0.5 and entry.top == (("!", -1.0),) for entry in text.logprobs)
    assert [piece.text if piece else None for piece in pieces] == ["He", "llo", " ", None, "Wé"]
    # The held-back "W" and the half "é" send nothing; their tokens' entries go with the last piece.
    assert [[entry.token for entry in piece.logprobs] for piece in pieces if piece] == [
        ["He"],
        ["llo"],
        [" W"],
        ["\ufffd", "\ufffd"],
    ]
    assert len(row.tokens) == 5
