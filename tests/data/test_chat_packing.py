"""Packing and collating generative examples, and the proof that packing does not leak: a tiny
Llama gives every packed example the logits (and loss) it gets alone."""

from __future__ import annotations

import itertools

import pytest
import torch
from data_testing import assert_one_line_error

from lorakit.data.chat import IGNORE_INDEX, CausalCollator, Seq2SeqCollator, pack_examples
from tiny_models import VOCAB, tiny_llama


class Tokenizer:
    """The two ids a collator reads from a tokenizer."""

    def __init__(self, pad_token_id: int | None = 0, eos_token_id: int | None = 2) -> None:
        self.pad_token_id = pad_token_id
        self.eos_token_id = eos_token_id


def example(length: int, start: int = 1, prompt: int = 2) -> dict[str, list[int]]:
    """`length` token ids counting from `start`, the first `prompt` of them unlabelled."""
    ids = list(range(start, start + length))
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]}


def unpack(row: dict[str, list[int]]) -> list[list[int]]:
    """A packed row's examples, cut where position_ids restart at 0."""
    starts = [t for t, position in enumerate(row["position_ids"]) if position == 0] + [len(row["input_ids"])]
    return [row["input_ids"][a:b] for a, b in itertools.pairwise(starts)]


# --- pack_examples -----------------------------------------------------------------------------


def test_best_fit_decreasing_fills_rows():
    examples = [example(length, start=10 * i) for i, length in enumerate([2, 6, 3, 5, 4])]
    rows = pack_examples(examples, max_length=8)
    # Longest first into the fullest row with room: 6+2, 5+3, then 4 alone.
    assert [unpack(row) for row in rows] == [
        [examples[0]["input_ids"], examples[1]["input_ids"]],
        [examples[2]["input_ids"], examples[3]["input_ids"]],
        [examples[4]["input_ids"]],
    ]
    assert rows[0]["position_ids"] == [0, 1, 0, 1, 2, 3, 4, 5]


def test_every_example_is_packed_once_with_its_labels():
    examples = [example(length, start=100 * i, prompt=0) for i, length in enumerate([7, 1, 3, 9, 2, 2, 5, 8, 4])]
    rows = pack_examples(examples, max_length=10)
    assert all(len(row["input_ids"]) == len(row["labels"]) == len(row["position_ids"]) <= 10 for row in rows)
    assert sorted(ids for row in rows for ids in unpack(row)) == sorted(e["input_ids"] for e in examples)
    assert len(rows) == 5  # 41 tokens need at least 5 rows of 10
    for row in rows:
        starts = {t for t, position in enumerate(row["position_ids"]) if position == 0}
        for t, (token, label) in enumerate(zip(row["input_ids"], row["labels"], strict=True)):
            # Every token was labelled, but the first of each example is no target in a row: it
            # would be predicted from the previous example's last token.
            assert label == (IGNORE_INDEX if t in starts else token)


def test_packing_errors():
    assert_one_line_error(lambda: pack_examples([example(5), example(9)], max_length=8), "example 1", "9 tokens")
    assert_one_line_error(lambda: pack_examples([{"input_ids": [], "labels": []}], 8), "example 0", "0 tokens")
    assert_one_line_error(lambda: pack_examples([example(3)], max_length=0), "max_length", "positive integer")


# --- collators ---------------------------------------------------------------------------------


def test_causal_collator_pads_plain_examples():
    batch = CausalCollator(Tokenizer(pad_token_id=0), pad_to_multiple_of=4)([example(3, 5), example(5, 7)])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0, 0, 0, 0, 0], [7, 8, 9, 10, 11, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, 7, *[-100] * 5], [-100, -100, 9, 10, 11, -100, -100, -100]]
    assert "position_ids" not in batch
    assert all(tensor.dtype == torch.long for tensor in batch.values())


def test_causal_collator_pads_packed_rows_as_one_more_sequence():
    rows = pack_examples([example(3, 1), example(2, 20), example(4, 30)], max_length=6)
    batch = CausalCollator(Tokenizer(pad_token_id=0))(rows)
    assert set(batch) == {"input_ids", "labels", "position_ids"}  # no attention_mask: positions mark examples
    # Row 0 holds examples 1 and 2 (in input order), row 1 example 0 and three pads.
    assert batch["position_ids"].tolist() == [[0, 1, 0, 1, 2, 3], [0, 1, 2, 0, 1, 2]]
    assert batch["input_ids"].tolist() == [[20, 21, 30, 31, 32, 33], [1, 2, 3, 0, 0, 0]]
    assert batch["labels"][1].tolist() == [-100, -100, 3, -100, -100, -100]


def test_collators_pad_with_eos_when_there_is_no_pad_token():
    batch = CausalCollator(Tokenizer(pad_token_id=None, eos_token_id=2))([example(1, 5), example(2, 7)])
    assert batch["input_ids"].tolist() == [[5, 2], [7, 8]]
    assert_one_line_error(lambda: CausalCollator(Tokenizer(None, None)), "neither a pad nor an eos", "pad_token")
    assert_one_line_error(lambda: Seq2SeqCollator(Tokenizer(None, None)), "pad_token")


def test_collator_errors():
    assert_one_line_error(lambda: CausalCollator(Tokenizer(), pad_to_multiple_of=0), "pad_to_multiple_of")
    packed = pack_examples([example(3)], max_length=4)
    assert_one_line_error(lambda: CausalCollator(Tokenizer())([*packed, example(2)]), "mixes packed rows", "pack all")


def test_seq2seq_collator_pads_sources_and_targets_apart():
    features = [{"input_ids": [5, 6, 7], "labels": [8, 2]}, {"input_ids": [9], "labels": [10, 11, 12, 2]}]
    batch = Seq2SeqCollator(Tokenizer(pad_token_id=0), pad_to_multiple_of=2)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [9, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["labels"].tolist() == [[8, 2, -100, -100], [10, 11, 12, 2]]


# --- packing does not leak attention across examples -------------------------------------------


def random_examples(lengths: list[int]) -> list[dict[str, list[int]]]:
    generator = torch.Generator().manual_seed(0)
    examples = []
    for length in lengths:
        ids = torch.randint(3, VOCAB, (length,), generator=generator).tolist()
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 2 + ids[2:]})
    return examples


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_give_each_example_its_own_logits_and_loss(attention):
    model = tiny_llama()
    model.set_attn_implementation(attention)
    examples = random_examples([9, 5, 7, 3, 6, 4])
    rows = pack_examples(examples, max_length=12)
    assert len(rows) == 3 and any(len(row["input_ids"]) < 12 for row in rows)  # padding in the batch too
    batch = CausalCollator(Tokenizer(pad_token_id=0), pad_to_multiple_of=8)(rows)
    with torch.no_grad():
        packed = model(**batch, use_cache=False)
        alone = [model(input_ids=torch.tensor([e["input_ids"]])).logits[0] for e in examples]

    for row, members in enumerate(rows):
        offset = 0
        for ids in unpack(members):
            index = next(i for i, e in enumerate(examples) if e["input_ids"] == ids)
            got = packed.logits[row, offset : offset + len(ids)]
            torch.testing.assert_close(got, alone[index], atol=1e-5, rtol=1e-5)
            offset += len(ids)

    # The loss is the mean over all labelled tokens of the examples' own next-token losses.
    total = count = 0
    for e, logits in zip(examples, alone, strict=True):
        labels = torch.tensor(e["labels"][1:])
        total += torch.nn.functional.cross_entropy(logits[:-1], labels, reduction="sum", ignore_index=IGNORE_INDEX)
        count += int((labels != IGNORE_INDEX).sum())
    torch.testing.assert_close(packed.loss, total / count, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_with_the_kv_cache_on_transformers_ignores_the_packing(attention):
    """Why packed rows must run with use_cache=False: with the cache (the config default, in train
    mode too) transformers skips its packed-sequence detection and the second example of a row
    attends to the first."""
    model = tiny_llama().train()  # dropout is 0: train mode changes nothing else
    model.set_attn_implementation(attention)
    assert model.config.use_cache
    first, second = random_examples([5, 4])
    batch = CausalCollator(Tokenizer())(pack_examples([first, second], max_length=9))
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([second["input_ids"]])).logits[0]
        leaky = model(**batch).logits[0, 5:]
        confined = model(**batch, use_cache=False).logits[0, 5:]
    torch.testing.assert_close(confined, alone, atol=1e-5, rtol=1e-5)
    assert (leaky - alone).abs().max() > 1e-2
