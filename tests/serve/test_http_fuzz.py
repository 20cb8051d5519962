"""Property: any request body to any endpoint gets a success or a 4xx in the one JSON error shape,
never a 5xx.

Hypothesis sends every endpoint bodies built from its own fields (and OpenAI's that lorakit refuses)
with values of random types: NaN and infinities, integers past 64 bits, empty and huge texts, line
breaks, NUL, arrays nested thousands deep, unknown fields; and bodies that are no JSON object at
all (junk bytes, arrays, nothing), with other content types. First over the whole app with the
stand-in engine of test_http_routers.py (every route, cheap), then over real tiny engines (a
classifier and a causal LM, with an adapter each), where sampling settings reach the decoder.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import event, given
from hypothesis import strategies as st
from serve_helpers import BASE_NAME, tokenizer, write_classifier, write_generator
from test_http_routers import BASE, StandInEngine, StandInRegistry

from lorakit.serve import AdapterRegistry, Engine
from lorakit.serve.http.app import create_app
from lorakit.serve.http.limits import Limits
from lorakit.task_kind import TaskKind
from tiny_models import tiny_bert, tiny_llama

LIMITS = Limits(max_inputs=3, max_tokens=4)
JUNK_TEXTS = ["", " ", "\n", "\x00", "w5\u2028w6", "é" * 3, "w5 " * 200, "../x", "~nobody/x", "a\x00b", "/etc"]
JUNK = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(),  # NaN and ±Infinity too: Python's json writes them and Starlette reads them
        st.sampled_from(JUNK_TEXTS),
        st.text(max_size=6),
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
    max_leaves=5,
)
DEEP = "[" * 3_000 + "]" * 3_000
MODELS = st.sampled_from([BASE, "sent", "busy", "alien", "nope", "../sent", "", "SENT"])
WORDS = st.sampled_from(["w5 w6", "w7", "w5 w6 w7 w8 w9", "", " ", "bad"])
MESSAGES = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "tool", ""]), "content": WORDS | JUNK}
    )
    | JUNK,
    max_size=3,
)
SAMPLING = {
    "model": MODELS,
    "max_tokens": st.integers(-1, 6),
    "max_completion_tokens": st.integers(-1, 6),
    "temperature": st.sampled_from([0, 0.5, 1, 2, 1e-9, 1e300]),
    "top_p": st.sampled_from([1, 0.5, 1e-9, 0]),
    "seed": st.integers(-(2**64), 2**64),
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "n": st.integers(0, 4),
    "stop": st.sampled_from(["w6", ["w6", "w7"], [""], ["a"] * 5, "\n"]),
    "frequency_penalty": st.sampled_from([0, 0.5]),
    "logit_bias": st.sampled_from([{}, {"5": 1}]),
    "user": st.text(max_size=4),
}
# Each endpoint: method, path, and its fields with the values that are often valid.
ENDPOINTS = {
    "classify": (
        "POST",
        "/v1/classify",
        {
            "adapter": MODELS,
            "inputs": st.lists(WORDS, max_size=4),
            "text_pairs": st.lists(WORDS, max_size=4),
        },
    ),
    "completions": (
        "POST",
        "/v1/completions",
        {
            **SAMPLING,
            "prompt": WORDS | st.lists(WORDS, max_size=4),
            "logprobs": st.integers(-1, 6),
            "best_of": st.integers(0, 2),
            "echo": st.booleans(),
            "suffix": st.sampled_from(["", "x"]),
        },
    ),
    "chat": (
        "POST",
        "/v1/chat/completions",
        {
            **SAMPLING,
            "messages": MESSAGES,
            "logprobs": st.booleans(),
            "top_logprobs": st.integers(-1, 21),
            "tools": st.sampled_from([[], [{"type": "function"}]]),
            "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
            "store": st.booleans(),
        },
    ),
    "load": ("POST", "/v1/adapters", {"name": MODELS}),
    "vllm_load": (
        "POST",
        "/v1/load_lora_adapter",
        {"lora_name": MODELS, "lora_path": st.sampled_from(["sent", "x", *JUNK_TEXTS]), "load_inplace": st.booleans()},
    ),
    "vllm_unload": ("POST", "/v1/unload_lora_adapter", {"lora_name": MODELS, "lora_int_id": st.integers(-1, 2**70)}),
}


# Bodies the schemas accept, with the edges of every range: what reaches the engine.
VALID_SAMPLING = {
    "model": st.sampled_from([BASE, "sent"]),
    "max_tokens": st.integers(1, 4),
    "temperature": st.sampled_from([0, 0.7, 1, 1e-300, 1e-9, 1e300, float("inf")]),
    "top_p": st.sampled_from([1, 0.9, 1e-9, 1e-300]),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "stream": st.booleans(),
    "n": st.integers(1, 3),
    "stop": st.sampled_from(["w6", ["w6", "w7"], "\n", "w5 w6 w7", "\u2028"]),
}
VALID = {
    "classify": {"adapter": st.sampled_from([None, "sent"]), "inputs": st.lists(WORDS.filter(str.strip), min_size=1)},
    "completions": {**VALID_SAMPLING, "prompt": st.sampled_from(["w5 w6", "w7", "w5 \n w6", "[UNK]", "é"])},
    "chat": {
        **VALID_SAMPLING,
        "messages": st.sampled_from([[{"role": "user", "content": "w5 w6"}], [{"role": "user", "content": ""}]]),
        "logprobs": st.booleans(),
    },
}


@st.composite
def valid_bodies(draw: st.DrawFn, endpoints: list[str]) -> tuple[str, str, bytes, str]:
    """A body the endpoint's schema accepts: its required fields and a random subset of the others."""
    name = draw(st.sampled_from(endpoints))
    method, path, _ = ENDPOINTS[name]
    fields = VALID[name]
    required = {"model", "inputs", "prompt", "messages"} & set(fields)
    chosen = required | set(draw(st.lists(st.sampled_from(sorted(fields)), unique=True)))
    body = {field: draw(fields[field]) for field in sorted(chosen)}
    if body.get("logprobs") is True and draw(st.booleans()):
        body["top_logprobs"] = draw(st.integers(0, 20))
    if name == "completions" and draw(st.booleans()):
        body["logprobs"] = draw(st.integers(0, 5))
    if body.get("inputs") and draw(st.booleans()):
        body["inputs"] = body["inputs"][:3]
    return method, path, json.dumps(body).encode(), "application/json"


@st.composite
def requests(draw: st.DrawFn, endpoints: list[str]) -> tuple[str, str, bytes, str]:
    """(method, path, body, content type): a body of the endpoint's fields, each value often valid,
    sometimes junk, plus now and then an unknown field; or a body that is no JSON object."""
    method, path, fields = ENDPOINTS[draw(st.sampled_from(endpoints))]
    content_type = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "application/x-www-form-urlencoded"]))
    kind = draw(st.sampled_from(["fields"] * 8 + ["junk json", "junk bytes"]))
    if kind == "junk bytes":
        return method, path, draw(st.binary(max_size=30) | st.just(DEEP.encode())), content_type
    if kind == "junk json":
        return method, path, json.dumps(draw(JUNK)).encode(), content_type
    body = {}
    for name in draw(st.lists(st.sampled_from(sorted(fields)), max_size=len(fields), unique=True)):
        body[name] = draw(JUNK) if draw(st.integers(0, 3)) == 0 else draw(fields[name])
    for required in ("model", "inputs", "prompt", "messages", "name", "lora_name", "lora_path"):
        if required in fields and required not in body and draw(st.integers(0, 4)):
            body[required] = draw(fields[required])
    if draw(st.integers(0, 9)) == 0:
        body[draw(st.sampled_from(["extra", "model", "inputs"]))] = draw(st.sampled_from([DEEP, "x" * 10_000]))
    return method, path, json.dumps(body).encode(), content_type


def assert_answered(client: TestClient, method: str, path: str, body: bytes, content_type: str) -> None:
    """A success, or a 4xx in the one error shape with a one-line message: never a 5xx. A stream's
    events carry no server error either."""
    response = client.request(method, path, content=body, headers={"content-type": content_type})
    event(f"{path} {response.status_code}")
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "code"} and error["message"].strip(), response.text
        assert "\n" not in error["message"] and "\r" not in error["message"]
        event(f"{path} {error['code']}")
    assert "internal_error" not in response.text


@pytest.fixture(scope="module", params=[TaskKind.CLASSIFICATION, TaskKind.CAUSAL_LM])
def stand_in_client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    adapters = tmp_path_factory.mktemp("adapters")
    (adapters / "sent").mkdir()
    engine = StandInEngine(request.param, registry=StandInRegistry(adapters_dir=adapters))
    return TestClient(create_app(engine, limits=LIMITS))


@given(request=requests(sorted(ENDPOINTS)) | valid_bodies(sorted(VALID)), name=st.text(max_size=8) | MODELS)
def test_any_request_to_the_app_gets_a_success_or_a_4xx(stand_in_client: TestClient, request, name: str) -> None:
    assert_answered(stand_in_client, *request)
    response = stand_in_client.delete(f"/v1/adapters/{quote(name, safe='')}")
    assert response.status_code < 500, response.text


@pytest.fixture(scope="module")
def real_clients(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestClient]:
    """Real engines over tiny models: a classifier and a causal LM, each with adapter "sent"."""
    root = tmp_path_factory.mktemp("real-engines")
    clients = {}
    for kind, model, classifier, write in [
        (TaskKind.CLASSIFICATION, tiny_bert(), True, lambda f: write_classifier(f, 4, 3, seed=1)),
        (TaskKind.CAUSAL_LM, tiny_llama(), False, lambda f: write_generator(f, 4, seed=1)),
    ]:
        adapters = root / kind.value
        write(adapters / "sent")
        registry = AdapterRegistry(model, BASE_NAME, adapters_dir=adapters, kind=kind)
        engine = Engine(registry, tokenizer(classifier=classifier), max_wait_ms=1)
        clients[kind.value] = TestClient(create_app(engine, limits=LIMITS))
    yield clients
    for client in clients.values():
        client.app.state.engine.close()


@given(request=requests(["classify", "completions", "chat"]) | valid_bodies(["classify", "completions", "chat"]))
def test_any_request_to_a_real_engine_gets_a_success_or_a_4xx(real_clients: dict[str, TestClient], request) -> None:
    kind = TaskKind.CLASSIFICATION if request[1] == "/v1/classify" else TaskKind.CAUSAL_LM
    assert_answered(real_clients[kind.value], *request)
