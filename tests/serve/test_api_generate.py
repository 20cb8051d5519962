"""`lorakit serve` on a tiny Llama with generation adapters, over real HTTP and without an API key:
OpenAI completions and chat completions equal `lorakit generate` (greedy), streams equal whole
responses, concurrent clients, and 4xx JSON errors for bad requests."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from api_servers import causal_base, generator_adapter, running_server
from transformers import AutoModelForCausalLM

from lorakit.inference.generation import generate_batch, load_trained_generator, prompt_text, user_messages

ADAPTERS = ["g1", "g2"]
PROMPTS = ["w5 w6 w7", "w9", "w10 w11 w12 w13", "w40 w41"]
MAX_TOKENS = 6


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-generate")
    base = causal_base(root / "base")
    for seed, name in enumerate(ADAPTERS, start=1):
        generator_adapter(base, root / "adapters" / name, seed=seed, r=4 * seed)
    return {"root": root, "base": base, "adapters": root / "adapters"}


@pytest.fixture(scope="module")
def url(folders: dict[str, Path]) -> str:
    flags = ("--max-tokens-limit", "32", "--max-inputs", "4", "--max-wait-ms", "20")
    with running_server(folders["base"], folders["adapters"], folders["root"] / "server.log", *flags) as url:
        yield url


@pytest.fixture(scope="module")
def offline(folders: dict[str, Path]) -> dict[tuple[str, str, bool], str]:
    """`lorakit generate`'s greedy completions: (model, prompt, chat) → text."""
    expected = {}
    models = {name: load_trained_generator(folders["adapters"] / name) for name in ADAPTERS}
    base = str(folders["base"])
    tokenizer = models["g1"].tokenizer
    plain = AutoModelForCausalLM.from_pretrained(base).eval()
    for name, model in [(base, plain), *((name, generator.model) for name, generator in models.items())]:
        for chat in (False, True):
            texts = [prompt_text(tokenizer, user_messages(p), "causal-lm") if chat else p for p in PROMPTS]
            for prompt, text in zip(PROMPTS, texts, strict=True):
                (completion,) = generate_batch(model, tokenizer, [text], MAX_TOKENS)
                expected[(name, prompt, chat)] = completion
    return expected


def complete(url: str, model: str, prompt: str | list[str], **settings) -> requests.Response:
    body = {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0} | settings
    return requests.post(f"{url}/v1/completions", json=body, timeout=120, **settings.pop("request", {}))


def chat(url: str, model: str, prompt: str, **settings) -> requests.Response:
    messages = [{"role": "user", "content": prompt}]
    body = {"model": model, "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0} | settings
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=120, stream=bool(settings.get("stream")))


def test_completions_over_mixed_adapters_equal_lorakit_generate(url: str, folders: dict, offline: dict) -> None:
    models = [str(folders["base"]), *ADAPTERS]
    with ThreadPoolExecutor(len(models)) as pool:
        responses = list(pool.map(lambda model: complete(url, model, PROMPTS), models))
    for model, response in zip(models, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "text_completion" and body["model"] == model
        assert [choice["index"] for choice in body["choices"]] == list(range(len(PROMPTS)))
        for prompt, choice in zip(PROMPTS, body["choices"], strict=True):
            assert choice["text"].strip() == offline[(model, prompt, False)]
            assert choice["finish_reason"] in ("stop", "length")
        usage = body["usage"]
        assert usage["prompt_tokens"] == sum(len(p.split()) for p in PROMPTS)
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > usage["prompt_tokens"]


def test_chat_completions_render_the_chat_template_as_lorakit_generate(url: str, offline: dict) -> None:
    def ask(call: tuple[str, str]) -> tuple[str, str, requests.Response]:
        return (*call, chat(url, *call))

    calls = [(name, prompt) for name in ADAPTERS for prompt in PROMPTS]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, calls))
    for name, prompt, response in answers:
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["role"] == "assistant"
        assert body["choices"][0]["message"]["content"].strip() == offline[(name, prompt, True)]


def events(response: requests.Response) -> list[dict | str]:
    assert response.headers["content-type"].startswith("text/event-stream")
    lines = [line for line in response.iter_lines(decode_unicode=True) if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


def test_streams_carry_the_same_text_as_whole_responses(url: str) -> None:
    whole = complete(url, "g2", PROMPTS[:2]).json()
    chunks = events(
        requests.post(f"{url}/v1/completions", json=stream_body("g2", PROMPTS[:2]), stream=True, timeout=120)
    )
    for index, choice in enumerate(whole["choices"]):
        mine = [chunk["choices"][0] for chunk in chunks if chunk["choices"][0]["index"] == index]
        assert "".join(piece["text"] for piece in mine) == choice["text"]
        assert len(mine) > 2  # text arrived in pieces, then the finish
        assert mine[-1]["finish_reason"] == choice["finish_reason"]
    whole_chat = chat(url, "g1", PROMPTS[0]).json()["choices"][0]
    chat_chunks = events(chat(url, "g1", PROMPTS[0], stream=True))
    assert chat_chunks[0]["object"] == "chat.completion.chunk"
    assert chat_chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chat_chunks)
    assert text == whole_chat["message"]["content"]
    assert chat_chunks[-1]["choices"][0]["finish_reason"] == whole_chat["finish_reason"]


def stream_body(model: str, prompt: str | list[str]) -> dict:
    return {"model": model, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}


def test_concurrent_streaming_and_plain_clients(url: str, folders: dict, offline: dict) -> None:
    def client(i: int) -> None:
        model, prompt = [str(folders["base"]), *ADAPTERS][i % 3], PROMPTS[i % len(PROMPTS)]
        if i % 2:
            chunks = events(
                requests.post(f"{url}/v1/completions", json=stream_body(model, prompt), stream=True, timeout=120)
            )
            text = "".join(chunk["choices"][0]["text"] for chunk in chunks)
        else:
            text = complete(url, model, prompt).json()["choices"][0]["text"]
        assert text.strip() == offline[(model, prompt, False)]

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(client, range(12)))


def test_models_and_no_api_key_needed(url: str, folders: dict) -> None:
    response = requests.get(f"{url}/v1/models", timeout=10)
    assert response.status_code == 200
    base, *adapters = response.json()["data"]
    assert base["id"] == str(folders["base"]) and base["task_type"] == "CAUSAL_LM"
    assert sorted(adapter["id"] for adapter in adapters) == ADAPTERS


BAD_REQUESTS = [  # path, body, status, error code
    ("/v1/classify", {"inputs": ["w5"]}, 400, "wrong_task"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "max_tokens": 33}, 400, "max_tokens_too_large"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "max_tokens": 0}, 400, "invalid_request"),
    ("/v1/completions", {"model": "g1", "prompt": " ".join(["w5"] * 60), "max_tokens": 10}, 400, "invalid_input"),
    ("/v1/completions", {"model": "g1", "prompt": " ".join(["w5"] * 60), "stream": True}, 400, "invalid_input"),
    ("/v1/completions", {"model": "g1", "prompt": ["w5"] * 5}, 400, "too_many_inputs"),
    ("/v1/completions", {"model": "g1", "prompt": []}, 400, "invalid_request"),
    ("/v1/completions", {"model": "g1", "prompt": ""}, 400, "invalid_input"),
    ("/v1/completions", {"model": "g1", "prompt": ["w5", ""], "stream": True}, 400, "invalid_input"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "n": 0}, 400, "invalid_request"),
    ("/v1/completions", {"model": "g1", "prompt": ["w5", "w6"], "n": 3}, 400, "too_many_inputs"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "stop": ["w6", ""]}, 400, "invalid_request"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "frequency_penalty": 1}, 400, "invalid_request"),
    ("/v1/completions", {"model": "g1", "prompt": "w5", "top_p": 0}, 400, "invalid_request"),
    ("/v1/completions", {"model": "nope", "prompt": "w5"}, 404, "adapter_not_found"),
    ("/v1/completions", {"prompt": "w5"}, 400, "invalid_request"),
    ("/v1/chat/completions", {"model": "g1", "messages": [{"role": "robot", "content": "w5"}]}, 400, "invalid_request"),
    ("/v1/chat/completions", {"model": "g1", "messages": []}, 400, "invalid_request"),
]


@pytest.mark.parametrize(("path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_generation_requests_get_a_json_4xx(url: str, path: str, body: dict, status: int, code: str) -> None:
    response = requests.post(f"{url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert "\n" not in response.json()["error"]["message"]
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "ok"


def test_vllm_adapter_endpoints_load_by_path_inside_the_adapters_folder_only(url: str, folders: dict) -> None:
    """vLLM's POST /v1/load_lora_adapter and /v1/unload_lora_adapter: an adapter folder served under
    a new name answers as the same adapter does; paths leading out of the adapters folder are 403."""

    def post(path: str, body: dict) -> requests.Response:
        return requests.post(f"{url}/v1/{path}", json=body, timeout=60)

    def error_code(response: requests.Response) -> str:
        return response.json()["error"]["code"]

    copy = {"lora_name": "g1-copy", "lora_path": str(folders["adapters"] / "g1")}
    loaded = post("load_lora_adapter", copy)
    assert loaded.status_code == 200 and loaded.text == "Success: LoRA adapter 'g1-copy' added successfully."
    texts = [complete(url, name, PROMPTS[0]).json()["choices"][0]["text"] for name in ("g1-copy", "g1")]
    assert texts[0] == texts[1]
    again = post("load_lora_adapter", copy)
    assert again.status_code == 400 and error_code(again) == "adapter_loaded"
    assert post("load_lora_adapter", {**copy, "load_inplace": True}).status_code == 200
    unloaded = post("unload_lora_adapter", {"lora_name": "g1-copy"})
    assert unloaded.status_code == 200 and unloaded.text == "Success: LoRA adapter 'g1-copy' removed successfully."
    assert complete(url, "g1-copy", PROMPTS[0]).status_code == 404
    assert error_code(post("unload_lora_adapter", {"lora_name": "g1-copy"})) == "adapter_not_loaded"
    relative = post("load_lora_adapter", {"lora_name": "g2-copy", "lora_path": "g2"})  # read from the folder
    assert relative.status_code == 200 and post("unload_lora_adapter", {"lora_name": "g2-copy"}).status_code == 200
    for outside in (str(folders["base"]), "../base", str(folders["adapters"] / ".." / "base")):
        refused = post("load_lora_adapter", {"lora_name": "x", "lora_path": outside})
        assert refused.status_code == 403 and error_code(refused) == "path_forbidden", outside
    missing = post("load_lora_adapter", {"lora_name": "x", "lora_path": "nope"})
    assert missing.status_code == 404 and error_code(missing) == "adapter_not_found"
    assert post("load_lora_adapter", {"lora_name": "x"}).status_code == 400  # lora_path is required


def test_a_seed_reproduces_a_sampled_completion(url: str) -> None:
    """OpenAI's `seed`: the same seed, the same sampled text, whatever runs beside it."""

    def sampled(seed: int) -> str:
        response = complete(url, "g2", PROMPTS[2], temperature=1.0, seed=seed)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["text"]

    first = sampled(7)
    with ThreadPoolExecutor(4) as pool:  # again, beside other sampled and greedy requests
        again, *_ = pool.map(lambda seed: sampled(seed) if seed else complete(url, "g1", PROMPTS[0]), [7, 8, 9, 0])
    assert again == first and sampled(8) != first
    assert complete(url, "g2", PROMPTS[2], seed="x").status_code == 400
