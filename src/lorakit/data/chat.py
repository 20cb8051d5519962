"""Token ids for generative training: what the model reads, which tokens the loss sees, batches.

Causal LM (`tokenize_causal`). With a chat template the whole conversation is rendered once and
the loss sees only the assistant turns, each through its end-of-turn token (ChatML shown)::

    <|im_start|>user\\nHi<|im_end|>\\n<|im_start|>assistant\\nHello!<|im_end|>\\n
    labels: -100 ................................................ Hello ! <|im_end|>  -100

Without a template the text is `bos + prompt + "\\n" + response + eos`, the loss on response and
eos. Either way the model learns to end its answer, and `generation_prompt` is exactly the text
before the response, so training and generation see the same prompt tokens.

Seq2seq (`tokenize_seq2seq`): the prompt is the encoder input, the response (+ eos) the labels.

Packing (`pack_examples`): several examples share one row, `position_ids` restarting at 0 for
each; the row carries no attention_mask. transformers 5.x (`masking_utils`) then builds a
block-diagonal causal mask from the position restarts, for eager and sdpa attention, but *only
when the model runs without a KV cache*: call the model with `use_cache=False` (or set
`config.use_cache = False`) on packed rows. With the cache on — the default of most configs, in
train mode too — the detection is skipped and each token attends to the earlier examples of its
row (tests/data/test_chat_packing.py shows both). flash_attention_2 detects packing only in a
batch of one row; batch packed rows with eager or sdpa attention.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from jinja2 import TemplateError

from lorakit.data.types import GenerativeExample
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # the label cross-entropy skips (torch and transformers' default ignore_index)
_ROLE_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def generation_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The text a causal LM continues to answer `messages` (a conversation without its answer, e.g.
    an example's `prompt_messages`): rendered by the chat template with `add_generation_prompt=True`;
    without a template, `bos + prompt + "\\n"` (the prompt as `plain_prompt` writes it). Tokenize it
    with `add_special_tokens=False`: any special tokens are already in the text."""
    if tokenizer.chat_template:
        return _render(tokenizer, messages, add_generation_prompt=True)
    return (tokenizer.bos_token or "") + plain_prompt(messages) + "\n"


def plain_prompt(messages: list[dict[str, str]]) -> str:
    """Prompt messages as plain text: a lone user message as its content, else one paragraph per
    message, `System: ...`, `User: ...`, `Assistant: ...`, separated by blank lines."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return "\n\n".join(f"{_ROLE_NAMES[message['role']]}: {message['content']}" for message in messages)


def tokenize_causal(
    tokenizer: PreTrainedTokenizerBase, example: GenerativeExample, max_length: int
) -> dict[str, list[int]] | None:
    """Token ids of a conversation for a causal LM, with labels on what the model must say.

    Returns `input_ids` and `labels`, n ≤ max_length ints each: `labels[t] = input_ids[t]` on the
    tokens of assistant turns (their end-of-turn token included), IGNORE_INDEX (-100) elsewhere.

    With a chat template, every assistant turn is labelled. Its characters are found by rendering
    prefixes of the conversation: the turn starts where `messages[:i]` rendered with the
    generation prompt ends and stops where `messages[:i+1]` rendered ends (trailing whitespace
    left out); both renderings must be prefixes of the full rendering, which is tokenized once,
    with character offsets, and a token is labelled when its characters overlap a turn. Templates
    that delimit turns with special tokens (ChatML, Llama 3, Gemma) put every turn boundary on a
    token boundary, so the prompt tokens equal the tokens of `generation_prompt`. If an earlier
    assistant turn renders differently inside the conversation (templates that hide past
    reasoning), that turn stays unlabelled; the final turn must be found or a LorakitError says
    why. A template that closes turns without a special token gets eos added after the final turn.

    Without a template: `bos + prompt + "\\n"` (see `generation_prompt`) unlabelled, then the
    response and eos labelled; prompt and response are tokenized apart, as at generation.

    Truncation keeps the final response whole and drops prompt tokens from the left (earlier turns
    first, then the start of the last question). A final response that cannot fit with at least
    one prompt token before it (response tokens ≥ max_length) is not cut — a cut answer teaches
    the model to stop mid-sentence or to answer without a question — and the example is dropped:
    the function returns None, and the caller counts the Nones. So is a response the template
    path finds no token of (only characters the tokenizer's normalizer drops).

    Raises:
        LorakitError: max_length is not a positive integer; the tokenizer has no eos token (needed
            without a template), is not a fast tokenizer (needed for offsets with a template), or
            its template refuses or garbles the conversation.
    """
    _check_length("max_length", max_length)
    if tokenizer.chat_template:
        tokens = _template_tokens(tokenizer, example)
        if tokens is None:
            return None
        ids, labels, response_start = tokens
    else:
        prompt = tokenizer(generation_prompt(tokenizer, example.prompt_messages), add_special_tokens=False)["input_ids"]
        response = tokenizer(example.response, add_special_tokens=False)["input_ids"] + [_eos_id(tokenizer)]
        ids, labels, response_start = prompt + response, [IGNORE_INDEX] * len(prompt) + response, len(prompt)
    if len(ids) - response_start >= max_length:
        return None
    start = max(0, len(ids) - max_length)
    return {"input_ids": ids[start:], "labels": labels[start:]}


def _template_tokens(
    tokenizer: PreTrainedTokenizerBase, example: GenerativeExample
) -> tuple[list[int], list[int], int] | None:
    """Token ids of the rendered conversation, labels on assistant turns, and the index of the
    final response's first token (see `tokenize_causal`); None when the final response has no
    tokens (characters the tokenizer's normalizer drops)."""
    if not tokenizer.is_fast:
        raise LorakitError(
            "labelling assistant turns of a chat template needs a fast tokenizer (character offsets); "
            "load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
        )
    messages = example.messages
    full = _render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1]).rstrip()
        if through.startswith(before) and full.startswith(through) and len(through) > len(before):
            spans.append((len(before), len(through)))
        elif index == len(messages) - 1:
            raise LorakitError(
                "the tokenizer's chat template renders the conversation differently from its prompt with "
                "add_generation_prompt=True, so the response cannot be located; fix the template or drop it "
                "(tokenizer.chat_template = None) to train on plain text"
            )
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(encoded["input_ids"]), encoded["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        for position, (first, last) in enumerate(offsets):
            if first < end and last > start:
                labels[position] = ids[position]
    final_start, final_end = spans[-1]
    final = [position for position, (first, last) in enumerate(offsets) if first < final_end and last > final_start]
    if not final:
        return None
    if ids[final[-1]] not in _special_ids(tokenizer):
        eos = _eos_id(tokenizer)
        ids.insert(final[-1] + 1, eos)
        labels.insert(final[-1] + 1, eos)
    return ids, labels, final[0]


def tokenize_seq2seq(
    tokenizer: PreTrainedTokenizerBase, example: GenerativeExample, max_length: int, max_target_length: int
) -> dict[str, list[int]]:
    """Token ids for an encoder-decoder model: `input_ids` (the prompt messages as `plain_prompt` writes them) and
    `labels` (the response).

    Both are tokenized with the tokenizer's special tokens and truncated by it (the source to
    max_length, on the tokenizer's `truncation_side`; the target to max_target_length, from the
    right). Labels end with eos — tokenizers that add none (GPT-2 style) get it appended — so a
    cut target, like a whole one, ends with eos, as transformers' own seq2seq preprocessing does.

    Raises:
        LorakitError: a length is not a positive integer or leaves no room after the special tokens.
    """
    for name, length in (("max_length", max_length), ("max_target_length", max_target_length)):
        _check_length(name, length)
        special = tokenizer.num_special_tokens_to_add()
        if length <= special:
            raise LorakitError(
                f"{name}={length} leaves no room for text after the {special} special tokens; "
                f"use at least {special + 1}"
            )
    source = tokenizer(plain_prompt(example.prompt_messages), truncation=True, max_length=max_length)["input_ids"]
    labels = tokenizer(text_target=example.response, truncation=True, max_length=max_target_length)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not labels or labels[-1] != eos):
        labels = [*labels[: max_target_length - 1], eos]
    return {"input_ids": list(source), "labels": list(labels)}


def pack_examples(examples: list[dict[str, list[int]]], max_length: int) -> list[dict[str, list[int]]]:
    """Pack tokenized causal-LM examples into rows of at most max_length tokens.

    Best-fit decreasing: longest example first, each into the fullest row it still fits, else a
    new row; rows keep their examples in input order. Each row holds `input_ids` and `labels`
    concatenated and `position_ids` counting 0, 1, ... within each example, so attention can be
    confined to each example (see the module docstring: the model must run with use_cache=False).
    The first label of every example is set to -100: the causal LM predicts it from the previous
    example's last token. Other keys (an attention_mask) are dropped.

    Raises:
        LorakitError: max_length is not a positive integer, or an example is empty or longer.
    """
    _check_length("max_length", max_length)
    lengths = [len(example["input_ids"]) for example in examples]
    for index, length in enumerate(lengths):
        if not 0 < length <= max_length:
            raise LorakitError(
                f"example {index} has {length} tokens; packing takes examples of 1 to max_length={max_length} "
                "tokens: tokenize with a max_length no larger than the packing length"
            )
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, row), sorted: the best fit is the first with room
    for index in sorted(range(len(examples)), key=lambda i: -lengths[i]):
        slot = bisect.bisect_left(free, (lengths[index], -1))
        if slot < len(free):
            space, row = free.pop(slot)
            rows[row].append(index)
        else:
            space, row = max_length, len(rows)
            rows.append([index])
        bisect.insort(free, (space - lengths[index], row))
    packed = []
    for members in rows:
        input_ids, labels, position_ids = [], [], []
        for index in sorted(members):
            example = examples[index]
            input_ids += example["input_ids"]
            labels += [IGNORE_INDEX, *example["labels"][1:]]
            position_ids += range(lengths[index])
        packed.append({"input_ids": input_ids, "labels": labels, "position_ids": position_ids})
    return packed


class CausalCollator:
    """Collate causal-LM examples (from `tokenize_causal`) or packed rows (from `pack_examples`).

    Returns int64 tensors of shape (batch, width), width = the longest row rounded up to
    `pad_to_multiple_of`, padded on the right: `input_ids` with the pad token (eos when the
    tokenizer has none), `labels` with -100. Plain examples get `attention_mask` (0 on padding).
    Packed rows get `position_ids` instead, the padding numbered 0, 1, ... as one more sequence
    of its own, and no attention_mask, so transformers builds the block-diagonal mask from the
    positions (run the model with use_cache=False). A plain class, so DataLoader workers can
    pickle it.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int = 1) -> None:
        self.pad_token_id = _pad_id(tokenizer)
        self.pad_to_multiple_of = _check_multiple(pad_to_multiple_of)

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        packed = ["position_ids" in feature for feature in features]
        if any(packed) and not all(packed):
            raise LorakitError("a batch mixes packed rows (with position_ids) and plain examples; pack all or none")
        width = _width(features, "input_ids", self.pad_to_multiple_of)
        batch = {
            "input_ids": _pad(features, "input_ids", width, self.pad_token_id),
            "labels": _pad(features, "labels", width, IGNORE_INDEX),
        }
        if all(packed):
            rows = []
            for feature in features:
                positions = torch.as_tensor(feature["position_ids"], dtype=torch.long)
                rows.append(torch.cat([positions, torch.arange(width - len(positions))]))
            batch["position_ids"] = torch.stack(rows)
        else:
            batch["attention_mask"] = _mask(features, width)
        return batch


class Seq2SeqCollator:
    """Collate seq2seq examples (from `tokenize_seq2seq`) into int64 tensors, padded on the right.

    `input_ids` (pad token) and `attention_mask`: (batch, longest source rounded up to
    `pad_to_multiple_of`); `labels` (-100): (batch, longest target, rounded up likewise). The
    model derives `decoder_input_ids` from the labels (shifted right, -100 read as padding).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int = 1) -> None:
        self.pad_token_id = _pad_id(tokenizer)
        self.pad_to_multiple_of = _check_multiple(pad_to_multiple_of)

    def __call__(self, features: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, torch.Tensor]:
        width = _width(features, "input_ids", self.pad_to_multiple_of)
        target_width = _width(features, "labels", self.pad_to_multiple_of)
        return {
            "input_ids": _pad(features, "input_ids", width, self.pad_token_id),
            "attention_mask": _mask(features, width),
            "labels": _pad(features, "labels", target_width, IGNORE_INDEX),
        }


def _render(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], add_generation_prompt: bool = False
) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as error:  # a template's raise_exception(...), e.g. "roles must alternate"
        raise LorakitError(f"the tokenizer's chat template refuses the conversation: {error}") from None


def _special_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Named special tokens and added tokens marked special (end-of-turn tokens such as <|eot_id|>)."""
    added = {index for index, token in tokenizer.added_tokens_decoder.items() if token.special}
    return set(tokenizer.all_special_ids) | added


def _eos_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.eos_token_id is None:
        raise LorakitError(
            "the tokenizer has no eos token, which ends every response so the model learns to stop; "
            "set one first, e.g. tokenizer.eos_token = '</s>'"
        )
    return tokenizer.eos_token_id


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise LorakitError("the tokenizer has neither a pad nor an eos token to pad with; set tokenizer.pad_token")
    return pad


def _check_length(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LorakitError(f"{name} must be a positive integer, got {value!r}")


def _check_multiple(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LorakitError(f"pad_to_multiple_of must be a positive integer, got {value!r}")
    return value


def _width(features: Sequence[Mapping[str, Sequence[int]]], key: str, multiple: int) -> int:
    longest = max(len(feature[key]) for feature in features)
    return -(-longest // multiple) * multiple


def _pad(features: Sequence[Mapping[str, Sequence[int]]], key: str, width: int, fill: int) -> torch.Tensor:
    padded = torch.full((len(features), width), fill, dtype=torch.long)
    for row, feature in enumerate(features):
        padded[row, : len(feature[key])] = torch.as_tensor(feature[key], dtype=torch.long)
    return padded


def _mask(features: Sequence[Mapping[str, Sequence[int]]], width: int) -> torch.Tensor:
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, feature in enumerate(features):
        mask[row, : len(feature["input_ids"])] = 1
    return mask
