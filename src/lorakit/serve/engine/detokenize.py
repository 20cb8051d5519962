"""A generating row's text as its tokens arrive: what it says, where a stop string ends it, what a
stream may send now, and each token's own text for its log-probabilities.

    tokens  w5 w6 w7 w8             text "w5 w6 w7 w8"      stop "w7"  →  text "w5 w6 ", stopped
    stream  sends "w5", then holds " w" back (it may begin "w7"), then sends " w6 " at the end

The text is decoded whole at every step (as transformers' TextStreamer does), so a character
split over tokens comes out whole. A stream holds back what may still change: a trailing
incomplete character ("\ufffd") and a tail that may begin a stop string. So it never sends text
that turns out to be part of a stop string, and the pieces it sends join to the final text.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lorakit.serve.engine.decoding import Row, StepLogprobs
from lorakit.serve.engine.stream import Piece, TokenLogprob

INCOMPLETE = "\ufffd"  # what decoding shows for the first bytes of a character split over tokens


class RowText:
    """One row's text, kept up to date by `update(row)` after every step.

    text: the generated text so far (special tokens skipped), cut before the first stop string.
    stopped: whether a stop string appeared (the row must end; its finish_reason is "stop").
    logprobs: one `TokenLogprob` per token of the row, if it asks for log-probabilities.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        self.text = ""
        self.stopped = False
        self.logprobs: list[TokenLogprob] = []
        self._sent = 0  # characters of `text` streamed
        self._sent_logprobs = 0  # entries of `logprobs` streamed

    def update(self, row: Row) -> None:
        """Decode the row's tokens; cut the text before the first stop string, if one appeared;
        give its new tokens their `TokenLogprob`s."""
        if self.stopped:
            return
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = min((text.find(stop) for stop in self.stops if stop in text), default=None)
        if cut is not None:
            text, self.stopped = text[:cut], True
        self.text = text
        for i in range(len(self.logprobs), len(row.logprobs)):
            self.logprobs.append(self._token_logprob(row.tokens[i], row.logprobs[i], row.tokens[i - 1] if i else None))

    def piece(self, done: bool) -> Piece | None:
        """What a stream may send now, None if nothing: the text that can no longer change (all of
        it once the row is `done`), with the log-probabilities of the tokens drawn since the last
        piece (those of a token whose text is held back go with the next piece)."""
        end = len(self.text) if done or self.stopped else len(self.text) - self._held(self.text)
        text = self.text[self._sent : end] if end > self._sent else ""
        if not text and not (done and self._sent_logprobs < len(self.logprobs)):
            return None
        logprobs = tuple(self.logprobs[self._sent_logprobs :])
        self._sent, self._sent_logprobs = max(self._sent, end), len(self.logprobs)
        return Piece(text, logprobs)

    def _held(self, text: str) -> int:
        """How many trailing characters may still change: an incomplete character, and then the
        longest tail that begins a stop string."""
        whole = text.rstrip(INCOMPLETE)
        held = len(text) - len(whole)
        for stop in self.stops:
            held_stop = next((size for size in range(len(stop) - 1, 0, -1) if whole.endswith(stop[:size])), 0)
            held = max(held, len(text) - len(whole) + held_stop)
        return held

    def _token_logprob(self, token: int, logprobs: StepLogprobs, previous: int | None) -> TokenLogprob:
        """The token's and its alternatives' text, each as it reads after `previous` (the row's
        previous token; None for the first, read alone as the text is)."""
        ids = [token, *(alternative for alternative, _ in logprobs.top)]
        texts = self._texts(ids, previous)
        top = tuple((text, value) for text, (_, value) in zip(texts[1:], logprobs.top, strict=True))
        return TokenLogprob(texts[0], logprobs.logprob, top)

    def _texts(self, ids: list[int], previous: int | None) -> list[str]:
        """Each token's text after `previous`: what decoding (previous, token) adds to decoding
        previous alone, so a token that starts a word keeps its leading space (special tokens
        shown). Where that is no extension (a character split over tokens), the token alone."""
        if previous is None:
            return self.tokenizer.batch_decode([[token] for token in ids])
        before = self.tokenizer.decode([previous])
        after = self.tokenizer.batch_decode([[previous, token] for token in ids])
        extends = not before.endswith(INCOMPLETE)
        return [
            both[len(before) :] if extends and both.startswith(before) else self.tokenizer.decode([token])
            for token, both in zip(ids, after, strict=True)
        ]
