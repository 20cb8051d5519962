"""Each HTTP router alone, mounted on a bare `FastAPI()` with a stand-in engine: its endpoints answer,
and its failures take the one JSON error shape. No model is loaded: the stand-in answers at once.

The whole app over a real engine is tested in test_api_classify.py and test_api_generate.py."""

from __future__ import annotations

import json
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi import APIRouter, FastAPI
from fastapi.testclient import TestClient

from lorakit.errors import LorakitError
from lorakit.serve import AdapterInfo, Generation, GenerationHandle, Piece, TokenStream
from lorakit.serve.engine.adapters import check_name
from lorakit.serve.engine.generate import choice_seed
from lorakit.serve.http.app import create_app
from lorakit.serve.http.deps import get_engine, get_limits
from lorakit.serve.http.errors import install_handlers
from lorakit.serve.http.limits import Limits
from lorakit.serve.http.prometheus import HttpMetrics
from lorakit.serve.http.routers import classify, completions, models, status
from lorakit.task_kind import TaskKind

BASE = "tiny-base"
LIMITS = Limits(max_inputs=3, max_tokens=8)


@dataclass
class StandInRegistry:
    """What the routers use of `AdapterRegistry`: adapters "sent" and "busy" exist, "alien" does not
    fit; with an `adapters_dir`, any of its subfolders loads by path (vLLM's endpoint)."""

    base_model: str = BASE
    loaded: set[str] = field(default_factory=lambda: {"busy"})
    adapters_dir: Path | None = None

    def load(self, folder: Path, name: str) -> AdapterInfo:
        check_name(name)
        if not folder.is_dir():
            raise LorakitError(f"{folder} holds no adapter")
        self.loaded.add(name)
        return AdapterInfo(name, "serve0", folder, "SEQ_CLS", BASE, ("neg", "pos"), None, 1024)

    def get(self, name: str) -> AdapterInfo:
        check_name(name)
        if name not in ("sent", "busy", "alien"):
            raise LorakitError(f"no adapter named {name!r}")
        if name == "alien":
            raise LorakitError(f"adapter {name!r} was trained on another base model")
        self.loaded.add(name)
        return AdapterInfo(name, "serve0", Path(name), "SEQ_CLS", BASE, ("neg", "pos"), None, 1024)

    def list(self) -> list[dict]:
        return [
            {"name": name, "loaded": name in self.loaded, "task_type": None, "label_names": None}
            for name in ("alien", "busy", "sent")
        ]

    def unload(self, name: str) -> None:
        check_name(name)
        if name == "busy":
            raise LorakitError(f"adapter {name!r} is in use by the running batch")
        if name not in self.loaded:
            raise LorakitError(f"adapter {name!r} is not loaded")
        self.loaded.discard(name)


class StandInTokenizer:
    """No chat template: a chat renders as its plain text (`lorakit.data.chat.generation_prompt`)."""

    chat_template = None
    bos_token = None


@dataclass
class StandInEngine:
    """What the routers use of `Engine`, answering at once: "pos" for every text (a text "bad" fails
    as bad input, "crash" as a bug); a generation repeats its prompt word by word (a prompt "bad" fails)."""

    kind: TaskKind
    needs_adapter: bool = False
    registry: StandInRegistry = field(default_factory=StandInRegistry)
    tokenizer: StandInTokenizer = field(default_factory=StandInTokenizer)
    submitted: list[tuple] = field(default_factory=list)
    asked: list[dict] = field(default_factory=list)  # each generation's seed, stop and top_logprobs

    @property
    def task_type(self) -> str:
        return self.kind.peft_type

    def submit_classify(self, adapter: str | None, text: str, text_pair: str | None = None) -> Future:
        self.submitted.append((adapter, text, text_pair))
        future: Future = Future()
        if text == "bad":
            future.set_exception(LorakitError("the input is 80 tokens; this server takes at most 64"))
        elif text == "crash":
            future.set_exception(RuntimeError("a bug"))
        else:
            future.set_result({"label": "pos", "probability": 0.75, "probabilities": {"neg": 0.25, "pos": 0.75}})
        return future

    def submit_generate(
        self,
        adapter: str | None,
        prompt: str,
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None = None,
        stop: tuple[str, ...] = (),
        top_logprobs: int | None = None,
    ) -> GenerationHandle:
        self.submitted.append((adapter, prompt, max_new_tokens, temperature, top_p))
        self.asked.append({"seed": seed, "stop": stop, "top_logprobs": top_logprobs})
        future: Future = Future()
        stream = TokenStream()
        if prompt == "bad":
            future.set_exception(LorakitError("the prompt is empty; send at least one token of text"))
            return GenerationHandle(future, stream)
        words = prompt.split()[:max_new_tokens]
        for i, word in enumerate(words):
            stream.push(Piece(word if i == 0 else f" {word}"))
        future.set_result(Generation(" ".join(words), list(range(len(words))), "length", prompt_tokens=len(words)))
        return GenerationHandle(future, stream)

    def metrics(self) -> dict:
        outcomes = {"completed": 6, "failed": 1, "cancelled": 0, "timed_out": 0, "refused": 0}
        batcher = {"batch_sizes": {2: 3}, **outcomes, "queued": 0}
        adapters = {"loaded": 1, "bytes": 1024, "max_bytes": 4096, "loads": 2, "evictions": 1}
        return {"batcher": batcher, "adapters": adapters}


def mounted(router: APIRouter, engine: StandInEngine, limits: Limits = LIMITS) -> TestClient:
    """`router` alone on a bare app, its dependencies replaced by `engine` and `limits`."""
    app = FastAPI()
    install_handlers(app)
    app.include_router(router)
    app.dependency_overrides[get_engine] = lambda: engine
    app.dependency_overrides[get_limits] = lambda: limits
    return TestClient(app)


def assert_error(response, status: int, code: str) -> dict:
    """The response is the API's one error shape with this status and code; returns the error."""
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code"} and error["code"] == code
    assert error["message"] and "\n" not in error["message"]
    return error


def test_classify_router_alone_submits_every_row_and_keeps_their_order() -> None:
    engine = StandInEngine(TaskKind.CLASSIFICATION)
    client = mounted(classify.router, engine)
    response = client.post("/v1/classify", json={"adapter": "sent", "inputs": ["w5", "w6"], "text_pairs": ["a", "b"]})
    assert response.status_code == 200, response.text
    assert response.json()["adapter"] == "sent"
    assert [result["label"] for result in response.json()["results"]] == ["pos", "pos"]
    assert engine.submitted == [("sent", "w5", "a"), ("sent", "w6", "b")]
    assert client.post("/v1/classify", json={"inputs": ["w5"]}).status_code == 200  # no adapter: the base


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"adapter": "sent", "inputs": ["w5"] * 4}, 400, "too_many_inputs"),
        ({"adapter": "sent", "inputs": []}, 400, "invalid_request"),
        ({"adapter": "sent", "inputs": ["w5"], "extra": 1}, 400, "invalid_request"),
        ({"adapter": "nope", "inputs": ["w5"]}, 404, "adapter_not_found"),
        ({"adapter": "../sent", "inputs": ["w5"]}, 400, "invalid_adapter_name"),
        ({"adapter": "alien", "inputs": ["w5"]}, 409, "adapter_unfit"),
        ({"adapter": "sent", "inputs": ["w5", "bad"]}, 400, "invalid_input"),
        ({"adapter": "sent", "inputs": ["w5", ""]}, 400, "invalid_input"),
    ],
)
def test_classify_router_alone_answers_errors_in_the_error_shape(body: dict, status: int, code: str) -> None:
    assert_error(
        mounted(classify.router, StandInEngine(TaskKind.CLASSIFICATION)).post("/v1/classify", json=body), status, code
    )


def test_classify_router_names_the_failed_row_and_hides_a_bug() -> None:
    client = mounted(classify.router, StandInEngine(TaskKind.CLASSIFICATION))
    bad = assert_error(client.post("/v1/classify", json={"inputs": ["w5", "bad"]}), 400, "invalid_input")
    assert bad["message"].startswith("inputs[1]: the input is 80 tokens")
    crash = assert_error(client.post("/v1/classify", json={"inputs": ["crash"]}), 500, "internal_error")
    assert crash["type"] == "server_error" and "a bug" not in crash["message"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"inputs": [""]}, "inputs[0] is blank"),
        ({"inputs": ["w5", "w6", " \n\t"]}, "inputs[2] is blank"),
        ({"inputs": ["w5", "w6"], "text_pairs": ["w7", "  "]}, "text_pairs[1] is blank"),
    ],
)
def test_classify_router_refuses_a_blank_text_by_its_index(body: dict, problem: str) -> None:
    engine = StandInEngine(TaskKind.CLASSIFICATION)
    error = assert_error(mounted(classify.router, engine).post("/v1/classify", json=body), 400, "invalid_input")
    assert error["message"] == f"{problem}; send some text to classify"
    assert engine.submitted == []  # refused before any row reached the engine


def test_classify_router_asks_for_an_adapter_when_the_base_has_no_trained_head() -> None:
    engine = StandInEngine(TaskKind.CLASSIFICATION, needs_adapter=True)
    client = mounted(classify.router, engine)
    error = assert_error(client.post("/v1/classify", json={"inputs": ["w5"]}), 400, "adapter_required")
    assert error["message"].startswith(f"the base model {BASE!r} has no trained classifier head")
    assert 'set "adapter"' in error["message"]
    assert engine.submitted == []
    assert client.post("/v1/classify", json={"adapter": "sent", "inputs": ["w5"]}).status_code == 200


def test_classify_router_refuses_a_generation_server() -> None:
    client = mounted(classify.router, StandInEngine(TaskKind.CAUSAL_LM))
    error = assert_error(client.post("/v1/classify", json={"inputs": ["w5"]}), 400, "wrong_task")
    assert error["message"] == f"/v1/classify needs a SEQ_CLS model; this server runs {BASE!r} as CAUSAL_LM"


def test_completions_router_alone_answers_openai_bodies() -> None:
    engine = StandInEngine(TaskKind.CAUSAL_LM)
    client = mounted(completions.router, engine)
    response = client.post("/v1/completions", json={"model": "sent", "prompt": ["w5 w6", "w7"], "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "text_completion" and body["model"] == "sent"
    assert [choice["text"] for choice in body["choices"]] == ["w5 w6", "w7"]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert engine.submitted == [("sent", "w5 w6", 8, 0.0, 1.0), ("sent", "w7", 8, 0.0, 1.0)]  # max_tokens: the limit
    chat = client.post("/v1/chat/completions", json={"model": BASE, "messages": [{"role": "user", "content": "w9"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["object"] == "chat.completion"
    assert chat.json()["choices"][0]["message"] == {"role": "assistant", "content": "w9"}
    assert engine.submitted[-1][:2] == (None, "w9\n")  # the base's name: no adapter; the chat rendered


def test_completions_router_submits_n_choices_per_prompt_with_their_seeds() -> None:
    engine = StandInEngine(TaskKind.CAUSAL_LM)
    body = {"model": "sent", "prompt": ["w5 w6", "w7"], "n": 2, "seed": 3, "stop": "w9", "logprobs": 1}
    response = mounted(completions.router, engine, Limits(max_inputs=4, max_tokens=8)).post(
        "/v1/completions", json=body
    )
    assert response.status_code == 200, response.text
    choices = response.json()["choices"]
    assert [(choice["index"], choice["text"]) for choice in choices] == [
        (0, "w5 w6"),
        (1, "w5 w6"),
        (2, "w7"),
        (3, "w7"),
    ]
    assert [asked["seed"] for asked in engine.asked] == [3, choice_seed(3, 1)] * 2
    assert {(asked["stop"], asked["top_logprobs"]) for asked in engine.asked} == {(("w9",), 1)}
    assert response.json()["usage"]["prompt_tokens"] == 3  # each prompt counted once, not once per choice


def test_completions_router_streams_server_sent_events() -> None:
    client = mounted(completions.router, StandInEngine(TaskKind.CAUSAL_LM))
    response = client.post(
        "/v1/chat/completions",
        json={"model": "sent", "messages": [{"role": "user", "content": "w5 w6"}], "stream": True},
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("data: ") for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks) == "w5 w6"
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/completions", {"model": "sent", "prompt": "w5", "max_tokens": 9}, 400, "max_tokens_too_large"),
        ("/v1/completions", {"model": "sent", "prompt": ["w5"] * 4}, 400, "too_many_inputs"),
        ("/v1/completions", {"model": "sent", "prompt": ["w5", "w6"], "n": 2}, 400, "too_many_inputs"),
        (
            "/v1/chat/completions",
            {"model": "sent", "messages": [{"role": "user", "content": "w"}], "n": 4},
            400,
            "too_many_inputs",
        ),
        ("/v1/completions", {"model": "sent", "prompt": "w5", "n": 0}, 400, "invalid_request"),
        ("/v1/completions", {"model": "nope", "prompt": "w5"}, 404, "adapter_not_found"),
        ("/v1/completions", {"model": "sent", "prompt": ["w5", "bad"]}, 400, "invalid_input"),
        ("/v1/completions", {"model": "sent", "prompt": "bad", "stream": True}, 400, "invalid_input"),
        ("/v1/chat/completions", {"model": "sent", "messages": []}, 400, "invalid_request"),
        ("/v1/completions", {"model": "sent", "prompt": ""}, 400, "invalid_input"),
    ],
)
def test_completions_router_alone_answers_errors_in_the_error_shape(
    path: str, body: dict, status: int, code: str
) -> None:
    assert_error(mounted(completions.router, StandInEngine(TaskKind.CAUSAL_LM)).post(path, json=body), status, code)


@pytest.mark.parametrize("stream", [False, True])
def test_completions_router_refuses_an_empty_prompt_by_its_index(stream: bool) -> None:
    engine = StandInEngine(TaskKind.CAUSAL_LM)
    body = {"model": "sent", "prompt": ["w5", "w6", ""], "stream": stream}
    error = assert_error(mounted(completions.router, engine).post("/v1/completions", json=body), 400, "invalid_input")
    assert error["message"] == "prompt[2] is empty; send at least one token of text"
    assert engine.submitted == []


def test_completions_router_refuses_a_classification_server() -> None:
    client = mounted(completions.router, StandInEngine(TaskKind.CLASSIFICATION))
    for path, body in [
        ("/v1/completions", {"model": "sent", "prompt": "w5"}),
        ("/v1/chat/completions", {"model": "sent", "messages": [{"role": "user", "content": "w"}]}),
    ]:
        error = assert_error(client.post(path, json=body), 400, "wrong_task")
        needed = "CAUSAL_LM or SEQ_2_SEQ_LM"
        assert error["message"] == f"{path} needs a {needed} model; this server runs {BASE!r} as SEQ_CLS"


def test_models_router_alone_lists_loads_and_unloads_from_app_state() -> None:
    app = FastAPI()
    install_handlers(app)
    app.include_router(models.router)
    app.state.engine, app.state.started = StandInEngine(TaskKind.CLASSIFICATION), 1_700_000_000
    client = TestClient(app)
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    base, *adapters = listed["data"]
    assert base == {
        "id": BASE,
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "lorakit",
        "task_type": "SEQ_CLS",
        "loaded": True,
        "needs_adapter": False,
    }
    assert [(a["id"], a["parent"], a["loaded"]) for a in adapters] == [
        ("alien", BASE, False),
        ("busy", BASE, True),
        ("sent", BASE, False),
    ]
    loaded = client.post("/v1/adapters", json={"name": "sent"})
    assert loaded.status_code == 200, loaded.text
    assert loaded.json() == {
        "name": "sent",
        "loaded": True,
        "task_type": "SEQ_CLS",
        "nbytes": 1024,
        "label_names": ["neg", "pos"],
        "quantize": None,
    }
    assert client.delete("/v1/adapters/sent").json() == {"name": "sent", "loaded": False}
    assert_error(client.delete("/v1/adapters/sent"), 404, "adapter_not_loaded")
    assert_error(client.delete("/v1/adapters/busy"), 409, "adapter_busy")
    assert_error(client.delete("/v1/adapters/.hidden"), 400, "invalid_adapter_name")
    assert_error(client.post("/v1/adapters", json={"name": "nope"}), 404, "adapter_not_found")
    assert_error(client.post("/v1/adapters", json={"name": "sent", "path": "/etc"}), 400, "invalid_request")


@pytest.mark.parametrize(
    ("lora_path", "status", "code"),
    [
        ("sent", 200, None),
        ("../elsewhere", 403, "path_forbidden"),
        ("nope", 404, "adapter_not_found"),
        ("se\x00nt", 400, "invalid_path"),  # once a 500: ValueError, embedded null byte
        ("~no-such-user-here/sent", 400, "invalid_path"),  # once a 500: RuntimeError from expanduser
        ("x" * 300, 400, "invalid_path"),  # once a 500: OSError, file name too long
    ],
)
def test_vllm_load_by_path_refuses_paths_no_file_system_takes(
    tmp_path: Path, lora_path: str, status: int, code: str | None
) -> None:
    (tmp_path / "sent").mkdir()
    engine = StandInEngine(TaskKind.CLASSIFICATION, registry=StandInRegistry(adapters_dir=tmp_path))
    response = TestClient(create_app(engine, limits=LIMITS)).post(
        "/v1/load_lora_adapter", json={"lora_name": "copy", "lora_path": lora_path}
    )
    if code is None:
        assert response.status_code == status, response.text
    else:
        assert_error(response, status, code)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"[" * 3_000 + b"]" * 3_000, "arrays or objects nested too deeply"),  # once "error parsing the body"
        (b'{"inputs": [' + b"1" * 5_000 + b"]}", "an integer of more than 4,300 digits"),
        (b'{"inputs": ["\xe9"]}', "a byte that is not UTF-8 at position 13"),
        (b'{"inputs": [', "Expecting value"),
    ],
)
def test_a_body_json_cannot_read_is_invalid_json_named_by_its_problem(body: bytes, problem: str) -> None:
    client = TestClient(create_app(StandInEngine(TaskKind.CLASSIFICATION), limits=LIMITS))
    response = client.post("/v1/classify", content=body, headers={"content-type": "application/json"})
    assert assert_error(response, 400, "invalid_json")["message"] == f"the request body is not valid JSON ({problem})"


@pytest.mark.parametrize("temperature", [b"Infinity", b"NaN", b"-1"])
def test_a_temperature_that_is_no_finite_number_is_refused(temperature: bytes) -> None:
    """Python's JSON reader takes Infinity and NaN; an infinite temperature once reached the sampler."""
    client = TestClient(create_app(StandInEngine(TaskKind.CAUSAL_LM), limits=LIMITS))
    body = b'{"model": "sent", "prompt": "w5", "temperature": ' + temperature + b"}"
    response = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert assert_error(response, 400, "invalid_request")["message"].startswith("temperature: ")


def test_status_router_alone_reports_health_and_metrics() -> None:
    app = FastAPI()
    app.include_router(status.router)
    app.state.engine, app.state.http_metrics = StandInEngine(TaskKind.CAUSAL_LM), HttpMetrics()
    app.state.http_metrics.observe("/v1/completions", 200, "acme", 0.02)
    client = TestClient(app)
    assert client.get("/health").json() == {"status": "ok", "model": BASE, "task_type": "CAUSAL_LM"}
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert 'lorakit_http_requests_total{endpoint="/v1/completions",status="200",tenant="acme"} 1' in metrics.text
    assert "\nlorakit_batch_size_count 3\n" in metrics.text and "\nlorakit_adapter_evictions_total 1\n" in metrics.text


def test_create_app_mounts_every_router_behind_its_middleware() -> None:
    client = TestClient(create_app(StandInEngine(TaskKind.CLASSIFICATION), api_key="k", limits=LIMITS))
    assert client.get("/health").status_code == 200  # open without the key
    assert_error(client.get("/v1/models"), 401, "invalid_api_key")
    auth = {"Authorization": "Bearer k"}
    assert client.post("/v1/classify", json={"inputs": ["w5"]}, headers=auth).status_code == 200
    assert_error(client.post("/v1/classify", json={"inputs": ["w5"] * 4}, headers=auth), 400, "too_many_inputs")
    assert_error(client.post("/v1/completions", json={"model": "sent", "prompt": "w"}, headers=auth), 400, "wrong_task")
    assert_error(client.post("/v1/classify", content=b"x" * (2 << 20), headers=auth), 413, "body_too_large")
    assert_error(client.get("/v1/nothing", headers=auth), 404, "not_found")
    metrics = client.get("/metrics", headers=auth).text
    assert 'lorakit_http_requests_total{endpoint="/v1/classify",status="200",tenant="admin"} 1' in metrics
    assert 'lorakit_http_requests_total{endpoint="other",status="404",tenant="admin"} 1' in metrics
    assert 'lorakit_http_requests_total{endpoint="/v1/models",status="401",tenant="-"} 1' in metrics
