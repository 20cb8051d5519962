"""`lorakit serve` through the official `openai` Python client, against a real server on a tiny
Llama: max_completion_tokens, stream_options.include_usage, logprobs (equal to a plain forward's
log_softmax), stop strings, n choices with seeds, and OpenAI's fields the server cannot honour
refused by name (`openai.BadRequestError`), each on both endpoints, whole and streamed."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import torch
from api_servers import causal_base, generator_adapter, running_server
from transformers import AutoModelForCausalLM, AutoTokenizer

from lorakit.inference.generation import prompt_text, user_messages

PROMPT = "w10 w11 w12 w13"
OTHER = "w40 w41"
MAX_INPUTS = 6


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("openai-client")
    base = causal_base(root / "base")
    generator_adapter(base, root / "adapters" / "g1", seed=1)
    return {"root": root, "base": base, "adapters": root / "adapters"}


@pytest.fixture(scope="module")
def client(folders: dict[str, Path]) -> openai.OpenAI:
    flags = ("--max-tokens-limit", "32", "--max-inputs", str(MAX_INPUTS))
    with running_server(folders["base"], folders["adapters"], folders["root"] / "server.log", *flags) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def base(folders: dict[str, Path]) -> str:
    return str(folders["base"])


@pytest.fixture(scope="module")
def reference(folders: dict[str, Path]) -> tuple:
    """The base model and its tokenizer, for plain forwards."""
    model = AutoModelForCausalLM.from_pretrained(folders["base"]).eval()
    return model, AutoTokenizer.from_pretrained(folders["base"])


def complete(client: openai.OpenAI, model: str, prompt: str | list[str] = PROMPT, **settings):
    return client.completions.create(model=model, prompt=prompt, **{"max_tokens": 8, "temperature": 0} | settings)


def chat(client: openai.OpenAI, model: str, prompt: str = PROMPT, **settings):
    messages = [{"role": "user", "content": prompt}]
    defaults = {"temperature": 0} | ({} if "max_completion_tokens" in settings else {"max_tokens": 8})
    return client.chat.completions.create(model=model, messages=messages, **defaults | settings)


def streamed_text(chunks: list, index: int = 0, chat_chunks: bool = False) -> str:
    """One choice's text, joined from its stream chunks."""
    pieces = [choice for chunk in chunks for choice in chunk.choices if choice.index == index]
    return "".join((piece.delta.content or "") if chat_chunks else piece.text for piece in pieces)


def test_max_completion_tokens_is_max_tokens_by_its_newer_name(client: openai.OpenAI, base: str) -> None:
    by_old = chat(client, base, max_tokens=3)
    by_new = chat(client, base, max_completion_tokens=3)
    assert by_new.choices[0].message.content == by_old.choices[0].message.content
    assert by_new.usage.completion_tokens == by_old.usage.completion_tokens <= 3
    legacy = complete(client, base, max_tokens=None, extra_body={"max_completion_tokens": 3})  # not in its signature
    assert legacy.choices[0].text == complete(client, base, max_tokens=3).choices[0].text
    assert legacy.usage.completion_tokens <= 3
    with pytest.raises(openai.BadRequestError, match="max_tokens \\(3\\) and max_completion_tokens \\(4\\) differ"):
        chat(client, base, max_tokens=3, max_completion_tokens=4)
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens is 33; this server allows at most 32"):
        chat(client, base, max_completion_tokens=33)
    assert chat(client, base, max_tokens=3, max_completion_tokens=3).usage.completion_tokens <= 3


def test_stream_options_include_usage_ends_the_stream_with_the_usage(client: openai.OpenAI, base: str) -> None:
    sampled = {"max_tokens": 5, "n": 2, "seed": 3, "temperature": 1.0}
    for call, is_chat in ((chat, True), (complete, False)):
        whole = call(client, base, **sampled)
        *chunks, last = call(client, base, **sampled, stream=True, stream_options={"include_usage": True})
        assert last.choices == [] and last.usage.model_dump() == whole.usage.model_dump()
        assert all("usage" in chunk.model_fields_set and chunk.usage is None for chunk in chunks)
        texts = [choice.message.content if is_chat else choice.text for choice in whole.choices]
        assert [streamed_text(chunks, index, is_chat) for index in range(2)] == texts
        plain = list(call(client, base, max_tokens=5, stream=True))
        assert all(chunk.usage is None and "usage" not in chunk.model_fields_set for chunk in plain)
        with pytest.raises(openai.BadRequestError, match="stream_options is only allowed with stream: true"):
            call(client, base, stream_options={"include_usage": True})


def forward_logprobs(reference: tuple, prompt: str, tokens: list[int]) -> torch.Tensor:
    """log_softmax of a plain forward's logits at each generated position: (len(tokens), vocab)."""
    model, tokenizer = reference
    ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids + tokens])).logits[0, len(ids) - 1 : len(ids) + len(tokens) - 1]
    return torch.log_softmax(logits.float(), dim=-1)


def token_id(reference: tuple, token: str) -> int:
    return reference[1].convert_tokens_to_ids(token.strip())


def test_chat_logprobs_equal_a_plain_forward_whole_and_streamed(
    client: openai.OpenAI, base: str, reference: tuple
) -> None:
    answer = chat(client, base, max_tokens=6, logprobs=True, top_logprobs=3, temperature=1.0, seed=11)
    choice = answer.choices[0]
    content = choice.logprobs.content
    assert "".join(entry.token for entry in content) == choice.message.content
    assert len(content) == answer.usage.completion_tokens
    tokens = [token_id(reference, entry.token) for entry in content]
    expected = forward_logprobs(reference, prompt_text(reference[1], user_messages(PROMPT), "causal-lm"), tokens)
    for position, entry in enumerate(content):
        assert entry.logprob == pytest.approx(expected[position, tokens[position]].item(), abs=1e-4)
        assert entry.bytes == list(entry.token.encode())
        values, ids = expected[position].topk(3)
        assert [token_id(reference, top.token) for top in entry.top_logprobs] == ids.tolist()
        assert [top.logprob for top in entry.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)
    chunks = list(
        chat(client, base, max_tokens=6, logprobs=True, top_logprobs=3, temperature=1.0, seed=11, stream=True)
    )
    streamed = [entry for chunk in chunks if chunk.choices[0].logprobs for entry in chunk.choices[0].logprobs.content]
    assert [entry.model_dump() for entry in streamed] == [entry.model_dump() for entry in content]
    assert chat(client, base, max_tokens=2).choices[0].logprobs is None
    bare = chat(client, base, max_tokens=2, logprobs=True).choices[0].logprobs.content
    assert all(entry.top_logprobs == [] for entry in bare) and bare
    with pytest.raises(openai.BadRequestError, match="top_logprobs needs logprobs: true"):
        chat(client, base, top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="top_logprobs"):
        chat(client, base, logprobs=True, top_logprobs=21)


def test_completion_logprobs_take_the_legacy_shape_whole_and_streamed(
    client: openai.OpenAI, base: str, reference: tuple
) -> None:
    answer = complete(client, base, logprobs=2)
    choice = answer.choices[0]
    logprobs = choice.logprobs
    assert "".join(logprobs.tokens) == choice.text
    assert logprobs.text_offset == [len("".join(logprobs.tokens[:i])) for i in range(len(logprobs.tokens))]
    tokens = [token_id(reference, token) for token in logprobs.tokens]
    expected = forward_logprobs(reference, PROMPT, tokens)
    for position, token in enumerate(logprobs.tokens):
        assert logprobs.token_logprobs[position] == pytest.approx(expected[position, tokens[position]].item(), abs=1e-4)
        top = logprobs.top_logprobs[position]
        values, ids = expected[position].topk(2)
        assert [token_id(reference, alternative) for alternative in top] == ids.tolist()
        assert list(top.values()) == pytest.approx(values.tolist(), abs=1e-4)
        assert token == next(iter(top))  # greedy: the drawn token is the likeliest
    chunks = list(complete(client, base, logprobs=2, stream=True))
    streamed = [
        chunk.choices[0].logprobs for chunk in chunks if chunk.choices[0].logprobs and chunk.choices[0].logprobs.tokens
    ]
    assert [item for part in streamed for item in part.tokens] == logprobs.tokens
    assert [item for part in streamed for item in part.text_offset] == logprobs.text_offset
    assert [item for part in streamed for item in part.top_logprobs] == logprobs.top_logprobs
    only_drawn = complete(client, base, logprobs=0, temperature=1.0, seed=2).choices[0].logprobs
    assert all(list(top) == [token] for top, token in zip(only_drawn.top_logprobs, only_drawn.tokens, strict=True))
    with pytest.raises(openai.BadRequestError, match="logprobs"):
        complete(client, base, logprobs=6)


def test_stop_strings_end_the_text_before_them_and_streams_never_send_them(client: openai.OpenAI, base: str) -> None:
    full = complete(client, base, max_tokens=8).choices[0]
    words = full.text.split()
    assert full.finish_reason == "length" and len(words) == 8  # the tiny model runs on: the stop must end it
    stop = f"{words[3][-1]} {words[4][:2]}"  # across the boundary of tokens 4 and 5
    expected = full.text[: full.text.index(stop)]
    for stops in (stop, ["w999", stop]):
        answer = complete(client, base, max_tokens=8, stop=stops)
        assert answer.choices[0].text == expected and answer.choices[0].finish_reason == "stop"
        made_it = next(k for k in range(1, 9) if stop in " ".join(words[:k]))  # a word is a token
        assert answer.usage.completion_tokens == made_it  # the row left the batch with the token that made the stop
        chunks = list(complete(client, base, max_tokens=8, stop=stops, stream=True))
        assert streamed_text(chunks) == expected  # pieces only add: none sent the stop's start
        assert chunks[-1].choices[0].finish_reason == "stop"
    chat_full = chat(client, base, max_tokens=8).choices[0].message.content
    chat_stop = chat_full.split()[2]
    answer = chat(client, base, max_tokens=8, stop=[chat_stop])
    assert answer.choices[0].message.content == chat_full[: chat_full.index(chat_stop)]
    assert answer.choices[0].finish_reason == "stop"
    chunks = list(chat(client, base, max_tokens=8, stop=[chat_stop], stream=True))
    assert streamed_text(chunks, chat_chunks=True) == answer.choices[0].message.content
    with pytest.raises(openai.BadRequestError, match="5 stop strings; send at most 4"):
        complete(client, base, stop=["a", "b", "c", "d", "e"])


def test_n_choices_per_prompt_differ_and_a_seed_reproduces_them(client: openai.OpenAI, base: str) -> None:
    prompts = [PROMPT, OTHER]
    sampled = {"temperature": 1.0, "seed": 5, "max_tokens": 6}
    answer = complete(client, "g1", prompts, n=3, **sampled)
    assert [choice.index for choice in answer.choices] == list(range(6))
    texts = [choice.text for choice in answer.choices]
    assert len(set(texts[:3])) == 3 and len(set(texts[3:])) == 3  # each choice samples its own text
    assert [choice.text for choice in complete(client, "g1", prompts, n=3, **sampled).choices] == texts
    assert complete(client, "g1", OTHER, **sampled).choices[0].text == texts[3]  # choice 0 keeps the seed
    assert answer.usage.prompt_tokens == 6  # each prompt counted once
    chunks = list(complete(client, "g1", prompts, n=3, stream=True, **sampled))
    assert [streamed_text(chunks, index) for index in range(6)] == texts

    def replies() -> list[str]:
        return [choice.message.content for choice in chat(client, "g1", n=3, **sampled).choices]

    contents = replies()
    assert len(set(contents)) == 3 and replies() == contents
    chunks = list(chat(client, "g1", n=3, stream=True, **sampled))
    assert [streamed_text(chunks, index, chat_chunks=True) for index in range(3)] == contents
    too_many = f"2 prompt\\(s\\) × n=4 is 8 choices; this server takes at most {MAX_INPUTS}"
    with pytest.raises(openai.BadRequestError, match=too_many):
        complete(client, "g1", prompts, n=4)
    with pytest.raises(openai.BadRequestError, match="n=7 is 7 choices"):
        chat(client, "g1", n=7)


REFUSED = [  # endpoint, field, value
    ("completions", "frequency_penalty", 0.5),
    ("completions", "presence_penalty", -1.0),
    ("completions", "logit_bias", {"5": 10}),
    ("completions", "best_of", 2),
    ("completions", "echo", True),
    ("completions", "suffix", "w9"),
    ("chat", "frequency_penalty", 1.0),
    ("chat", "logit_bias", {"5": -100}),
    ("chat", "tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("chat", "tool_choice", "auto"),
    ("chat", "functions", [{"name": "f", "parameters": {}}]),
    ("chat", "function_call", "auto"),
    ("chat", "parallel_tool_calls", False),
    ("chat", "response_format", {"type": "json_object"}),
    ("chat", "modalities", ["text", "audio"]),
    ("chat", "reasoning_effort", "low"),
    ("chat", "store", True),
]


@pytest.mark.parametrize(("endpoint", "field", "value"), REFUSED)
def test_fields_the_server_cannot_honour_are_refused_by_name(
    client: openai.OpenAI, base: str, endpoint: str, field: str, value: object
) -> None:
    call = complete if endpoint == "completions" else chat
    with pytest.raises(openai.BadRequestError, match=f"{field}: lorakit serve cannot honour {field}") as refused:
        call(client, base, **{field: value})
    assert refused.value.status_code == 400 and refused.value.code == "invalid_request"


def test_fields_left_off_or_harmless_are_accepted(client: openai.OpenAI, base: str) -> None:
    off = {"frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "user": "ann"}
    assert complete(client, base, **off, best_of=1, echo=False, suffix="").choices[0].text
    chat_off = {"tool_choice": "none", "response_format": {"type": "text"}, "store": False, "metadata": {"team": "a"}}
    assert chat(client, base, max_tokens=3, **off, **chat_off, modalities=["text"]).choices[0].message.content
