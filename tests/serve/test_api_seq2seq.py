"""`lorakit serve` on a tiny T5 with seq2seq adapters, through the official `openai` client: the
prompt is the encoder's input; completions over mixed adapters equal `lorakit generate` (greedy),
streams equal whole responses, a chat is read as training reads it, and bad requests get a 4xx."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import requests
from api_servers import running_server, seq2seq_adapter, seq2seq_base
from transformers import AutoModelForSeq2SeqLM

from lorakit.data.chat import plain_prompt
from lorakit.inference.generation import generate_batch, load_trained_generator

ADAPTERS = ["s1", "s2"]
PROMPTS = ["w5 w6 w7", "w9", "w10 w11 w12 w13", "w40 w41"]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-seq2seq")
    base = seq2seq_base(root / "base")
    for seed, name in enumerate(ADAPTERS, start=1):
        seq2seq_adapter(base, root / "adapters" / name, seed=seed, r=4 * seed)
    return {"root": root, "base": base, "adapters": root / "adapters"}


@pytest.fixture(scope="module")
def client(folders: dict[str, Path]) -> openai.OpenAI:
    flags = ("--max-tokens-limit", "32", "--max-inputs", "4")
    with running_server(folders["base"], folders["adapters"], folders["root"] / "server.log", *flags) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def offline(folders: dict[str, Path]) -> dict[tuple[str, str], str]:
    """`lorakit generate`'s greedy completions: (model, prompt) → text."""
    generators = {name: load_trained_generator(folders["adapters"] / name) for name in ADAPTERS}
    base = str(folders["base"])
    tokenizer = generators["s1"].tokenizer
    models = [(base, AutoModelForSeq2SeqLM.from_pretrained(base).eval())]
    models += [(name, generator.model) for name, generator in generators.items()]
    expected = {}
    for name, model in models:
        for prompt in PROMPTS:
            (expected[(name, prompt)],) = generate_batch(model, tokenizer, [prompt], MAX_TOKENS, seq2seq=True)
    return expected


def complete(client: openai.OpenAI, model: str, prompt: str | list[str], **settings):
    return client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, **settings)


def test_completions_over_mixed_adapters_equal_lorakit_generate(client, folders, offline) -> None:
    models = [str(folders["base"]), *ADAPTERS]
    with ThreadPoolExecutor(len(models)) as pool:
        responses = list(pool.map(lambda model: complete(client, model, PROMPTS), models))
    assert len({offline[(model, PROMPTS[0])] for model in models}) == len(models)  # the adapters matter
    for model, response in zip(models, responses, strict=True):
        assert response.object == "text_completion" and response.model == model
        for prompt, choice in zip(PROMPTS, response.choices, strict=True):
            assert choice.text.strip() == offline[(model, prompt)]
            assert choice.finish_reason in ("stop", "length")
        # Each prompt is read with its closing [SEP], as the seq2seq model was trained.
        assert response.usage.prompt_tokens == sum(len(prompt.split()) + 1 for prompt in PROMPTS)


def test_streams_carry_the_same_text_as_whole_responses(client) -> None:
    for model, prompt in [("s2", PROMPTS[0]), ("s1", PROMPTS[2])]:
        whole = complete(client, model, prompt).choices[0]
        chunks = [chunk.choices[0] for chunk in complete(client, model, prompt, stream=True)]
        assert "".join(chunk.text for chunk in chunks) == whole.text
        assert len(chunks) > 2  # text arrived in pieces, then the finish
        assert chunks[-1].finish_reason == whole.finish_reason


def test_chat_completions_read_the_conversation_as_training_does(client) -> None:
    """A seq2seq model's prompt is the conversation as plain text (`plain_prompt`), as in training."""
    conversations = [
        [{"role": "user", "content": PROMPTS[1]}],
        [{"role": "system", "content": "w20 w21"}, {"role": "user", "content": PROMPTS[3]}],
    ]
    for messages in conversations:
        chat = client.chat.completions.create(model="s1", messages=messages, max_tokens=MAX_TOKENS, temperature=0)
        assert chat.choices[0].message.content == complete(client, "s1", plain_prompt(messages)).choices[0].text


def test_bad_requests_get_a_json_4xx(client, folders) -> None:
    with pytest.raises(openai.BadRequestError) as too_long:
        complete(client, "s1", " ".join(["w5"] * 70))
    assert too_long.value.code == "invalid_input"
    assert "the prompt is 71 tokens; it must fit the model's 64 positions" in too_long.value.message
    with pytest.raises(openai.NotFoundError):
        complete(client, "nope", PROMPTS[0])
    url = str(client.base_url).removesuffix("/v1/")
    classify = requests.post(f"{url}/v1/classify", json={"inputs": ["w5"]}, timeout=60)
    assert classify.status_code == 400 and classify.json()["error"]["code"] == "wrong_task"
    models = client.models.list().data
    assert models[0].id == str(folders["base"]) and models[0].task_type == "SEQ_2_SEQ_LM"
