"""Tokenizing conversations: labels only on what the assistant says, its end-of-turn included;
the prompt tokens are the generation prompt's; truncation keeps the response; seq2seq.

The tokenizers are the packaged MiniLM one (given a ChatML template, or none) and, where the
checkout packages it, SmolLM2's: hence `packaged`."""

from __future__ import annotations

import types

import pytest
from data_testing import assert_one_line_error
from transformers import AutoTokenizer

from lorakit.data.chat import (
    IGNORE_INDEX,
    generation_prompt,
    plain_prompt,
    tokenize_causal,
    tokenize_seq2seq,
)
from lorakit.data.generative import GenerativeExample, load_generative_data
from lorakit.errors import LorakitError
from lorakit.models import resolve_model
from tiny_models import CHATML

pytestmark = pytest.mark.packaged


def chat(*turns: str, system: str | None = None) -> GenerativeExample:
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": ("user", "assistant")[i % 2], "content": turn} for i, turn in enumerate(turns)]
    return GenerativeExample(messages)


@pytest.fixture(scope="module")
def minilm_folder() -> str:
    return resolve_model("all-MiniLM-L6-v2")


@pytest.fixture
def chatml(minilm_folder):
    """The packaged MiniLM WordPiece tokenizer given ChatML special tokens and template."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture
def plain(minilm_folder):
    """The packaged MiniLM tokenizer as is (no chat template), with [SEP] as its eos."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)
    tokenizer.eos_token = "[SEP]"
    return tokenizer


def labelled(tokenizer, features) -> list[str]:
    """The labelled tokens, in order; each label must equal its input id."""
    pairs = [(i, label) for i, label in zip(features["input_ids"], features["labels"], strict=True) if label != -100]
    assert all(i == label for i, label in pairs)
    return tokenizer.convert_ids_to_tokens([i for i, _ in pairs])


def prompt_length(features) -> int:
    return next(t for t, label in enumerate(features["labels"]) if label != IGNORE_INDEX)


# --- with a chat template ----------------------------------------------------------------------


def test_template_labels_only_the_response_and_its_end_of_turn(chatml):
    example = chat("Hi there", "Hello friend", system="Be nice")
    features = tokenize_causal(chatml, example, max_length=64)
    assert labelled(chatml, features) == ["hello", "friend", "<|im_end|>"]
    # The input is the full rendering, tokenized once...
    full = chatml.apply_chat_template(example.messages, tokenize=False)
    assert features["input_ids"] == chatml(full, add_special_tokens=False)["input_ids"]
    # ...whose unlabelled prefix is exactly what generation starts from.
    prompt = generation_prompt(chatml, example.prompt_messages)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert features["input_ids"][: prompt_length(features)] == chatml(prompt, add_special_tokens=False)["input_ids"]


def test_template_labels_every_assistant_turn(chatml):
    features = tokenize_causal(chatml, chat("q one", "first answer", "q two", "second answer"), max_length=64)
    assert labelled(chatml, features) == ["first", "answer", "<|im_end|>", "second", "answer", "<|im_end|>"]


def test_a_template_without_end_of_turn_token_gets_eos(plain):
    plain.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    features = tokenize_causal(plain, chat("what is two", "four"), max_length=64)
    assert labelled(plain, features) == ["four", "[SEP]"]
    assert features["input_ids"][-1] == plain.eos_token_id


def test_a_response_without_tokens_drops_the_example(plain):
    plain.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )
    assert tokenize_causal(plain, chat("accent only", "\u0301"), max_length=64) is None  # BERT strips accents


def test_an_earlier_turn_rendered_differently_in_context_stays_unlabelled(chatml):
    """Templates that hide past reasoning render earlier assistant turns differently; only the
    turns whose rendering matches are labelled, and always the final one."""
    chatml.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
        "{% if m['role'] == 'assistant' and not loop.last %}hidden{% else %}{{ m['content'] }}{% endif %}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    features = tokenize_causal(chatml, chat("q one", "first answer", "q two", "second answer"), max_length=64)
    assert labelled(chatml, features) == ["second", "answer", "<|im_end|>"]


def test_a_template_that_garbles_the_final_turn_is_refused(chatml):
    chatml.chat_template = CHATML.replace("<|im_start|>assistant\n{% endif %}", "<|im_start|>bot\n{% endif %}")
    assert_one_line_error(
        lambda: tokenize_causal(chatml, chat("q", "a"), max_length=64), "chat template", "add_generation_prompt"
    )


def test_a_template_that_raises_is_a_lorakit_error(chatml):
    chatml.chat_template = "{{ raise_exception('Conversation roles must alternate') }}"
    assert_one_line_error(
        lambda: tokenize_causal(chatml, chat("q", "a"), max_length=64), "chat template refuses", "must alternate"
    )


def test_templates_need_character_offsets():
    slow = types.SimpleNamespace(chat_template=CHATML, is_fast=False)
    assert_one_line_error(lambda: tokenize_causal(slow, chat("q", "a"), max_length=64), "fast tokenizer", "use_fast")


# --- without a chat template -------------------------------------------------------------------


def test_plain_text_is_prompt_newline_response_eos(plain):
    example = chat("Hi there", "Hello friend")
    assert generation_prompt(plain, example.prompt_messages) == "Hi there\n"  # MiniLM has no bos
    features = tokenize_causal(plain, example, max_length=64)
    assert plain.convert_ids_to_tokens(features["input_ids"]) == ["hi", "there", "hello", "friend", "[SEP]"]
    assert labelled(plain, features) == ["hello", "friend", "[SEP]"]


def test_plain_multi_turn_prompt_names_the_roles(plain):
    example = chat("q one", "first", "q two", "second", system="sys")
    assert plain_prompt(example.prompt_messages) == "System: sys\n\nUser: q one\n\nAssistant: first\n\nUser: q two"
    assert labelled(plain, tokenize_causal(plain, example, max_length=64)) == ["second", "[SEP]"]


def test_plain_text_needs_an_eos(minilm_folder):
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder)  # BERT: no eos
    assert_one_line_error(lambda: tokenize_causal(tokenizer, chat("q", "a"), max_length=64), "no eos", "eos_token")


# --- truncation --------------------------------------------------------------------------------


def test_truncation_drops_prompt_tokens_from_the_left(chatml):
    example = chat("one two three four five six", "alpha beta")
    whole = tokenize_causal(chatml, example, max_length=64)
    cut = tokenize_causal(chatml, example, max_length=8)
    assert len(cut["input_ids"]) == 8
    assert cut["input_ids"] == whole["input_ids"][-8:] and cut["labels"] == whole["labels"][-8:]
    assert labelled(chatml, cut) == ["alpha", "beta", "<|im_end|>"]
    # The response is 3 tokens (WordPiece drops the trailing newline): it fits with one prompt token...
    assert tokenize_causal(chatml, example, max_length=4)["labels"][0] == IGNORE_INDEX
    # ...and is dropped, not cut, when it fills max_length by itself.
    assert tokenize_causal(chatml, example, max_length=3) is None


def test_a_plain_response_that_cannot_fit_drops_the_example(plain):
    example = chat("question", "a b c d")  # 1 prompt token, then 5 response tokens (eos included)
    assert len(tokenize_causal(plain, example, max_length=6)["input_ids"]) == 6
    assert tokenize_causal(plain, example, max_length=5) is None


@pytest.mark.parametrize("max_length", [0, -3, 2.5, True])
def test_max_length_must_be_a_positive_integer(plain, max_length):
    assert_one_line_error(lambda: tokenize_causal(plain, chat("q", "a"), max_length), "max_length", "positive integer")


# --- seq2seq -----------------------------------------------------------------------------------


def test_seq2seq_source_and_labels(chatml):
    example = chat("Translate cat", "chat")
    features = tokenize_seq2seq(chatml, example, max_length=32, max_target_length=8)
    assert chatml.convert_ids_to_tokens(features["input_ids"]) == ["[CLS]", "translate", "cat", "[SEP]"]
    # BERT ends with [SEP], not this tokenizer's eos: the eos is appended so the decoder learns to stop.
    assert chatml.convert_ids_to_tokens(features["labels"]) == ["[CLS]", "chat", "[SEP]", "<|im_end|>"]


def test_seq2seq_truncates_both_sides_and_keeps_eos(plain):
    example = chat("one two three four five", "a b c d e f")
    features = tokenize_seq2seq(plain, example, max_length=4, max_target_length=5)
    assert plain.convert_ids_to_tokens(features["input_ids"]) == ["[CLS]", "one", "two", "[SEP]"]
    assert plain.convert_ids_to_tokens(features["labels"]) == ["[CLS]", "a", "b", "c", "[SEP]"]


def test_seq2seq_multi_turn_source_is_the_plain_rendering(plain):
    example = chat("hi", "hello", "bye", "ciao")
    assert plain_prompt(example.prompt_messages) == "User: hi\n\nAssistant: hello\n\nUser: bye"
    ids = tokenize_seq2seq(plain, example, max_length=64, max_target_length=8)["input_ids"]
    assert plain.decode(ids, skip_special_tokens=True) == "user : hi assistant : hello user : bye"


def test_seq2seq_lengths_must_leave_room_for_text(plain):
    assert_one_line_error(
        lambda: tokenize_seq2seq(plain, chat("q", "a"), max_length=2, max_target_length=8),
        "max_length=2",
        "2 special tokens",
        "at least 3",
    )
    with pytest.raises(LorakitError, match="max_target_length"):
        tokenize_seq2seq(plain, chat("q", "a"), max_length=8, max_target_length=0)


# --- the real SmolLM2 tokenizer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2():
    try:
        folder = resolve_model("SmolLM2-135M-Instruct")
    except LorakitError as error:
        pytest.skip(f"SmolLM2 is not packaged here: {error}")
    if folder == "SmolLM2-135M-Instruct":  # not a packaged name (yet): would go to the Hub
        pytest.skip("SmolLM2-135M-Instruct is not a packaged model in this checkout")
    return AutoTokenizer.from_pretrained(folder)


def test_smollm2_labels_match_its_chat_template(smollm2):
    example = chat("What is 2+2?", "2+2 is 4.", "And 3+3?", "3+3 is 6.")
    features = tokenize_causal(smollm2, example, max_length=256)
    assert features["input_ids"] == smollm2.apply_chat_template(example.messages, tokenize=True)["input_ids"]
    assert "".join(labelled(smollm2, features)).replace("Ġ", " ") == "2+2 is 4.<|im_end|>3+3 is 6.<|im_end|>"
    prompt = smollm2(generation_prompt(smollm2, example.prompt_messages), add_special_tokens=False)["input_ids"]
    assert features["input_ids"][: len(prompt)] == prompt
    assert features["labels"][len(prompt) - 1] == IGNORE_INDEX and features["labels"][len(prompt)] != IGNORE_INDEX
    # SmolLM2's template adds its default system message.
    assert "You are a helpful AI assistant named SmolLM" in generation_prompt(smollm2, example.prompt_messages)


def test_smollm2_tokenizes_all_of_chatterbot(smollm2):
    data = load_generative_data("chatterbot")
    features = [tokenize_causal(smollm2, example, max_length=512) for example in data.train]
    assert None not in features
    for feature in features:
        last = max(t for t, label in enumerate(feature["labels"]) if label != IGNORE_INDEX)
        assert feature["labels"][last] == smollm2.eos_token_id  # every answer ends with <|im_end|>
