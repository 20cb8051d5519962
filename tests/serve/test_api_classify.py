"""`lorakit serve` on a tiny BERT with classification adapters of different label sets, over real
HTTP: parity with `lorakit predict`, concurrent clients, adapter management, metrics, the API key,
and a 4xx JSON error for every kind of bad request (the server answering /health after each)."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from api_servers import classification_base, classifier_adapter, running_server

from lorakit.inference.classification import load_trained_classifier, predict_texts

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
LABELS = {"sent": ["neg", "pos"], "topic": ["sport", "news", "tech", "arts"], "triage": ["low", "mid", "high"]}
TEXTS = ["w5 w6 w7", "w9", "w10 w11 w12 w13 w14 w15", "w20 w3", "w40 w41 w42 w43", "w77 w78"]
PAIRS = ["w30", "w31 w32", "w33", "w34 w35 w36", "w37", "w38"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api-classify")
    base = classification_base(root / "base")
    adapters = root / "adapters"
    for seed, (name, labels) in enumerate(LABELS.items(), start=1):
        untruncated = {"max_length": None} if name == "topic" else {}  # a text too long for the model fails
        classifier_adapter(base, adapters / name, labels, seed=seed, r=2 * seed, **untruncated)
    classifier_adapter(base, adapters / "alien", ["x", "y"], seed=9, base_model="some-org/another-model")
    return {"root": root, "base": base, "adapters": adapters}


@pytest.fixture(scope="module")
def url(folders: dict[str, Path]) -> str:
    flags = ("--max-inputs", "8", "--max-body-bytes", "4096", "--max-wait-ms", "20")
    env = {"LORAKIT_API_KEY": KEY}
    with running_server(folders["base"], folders["adapters"], folders["root"] / "server.log", *flags, env=env) as url:
        yield url


@pytest.fixture(scope="module")
def offline(folders: dict[str, Path]) -> dict[tuple[str, str, str | None], dict]:
    """What `lorakit predict` gives for every (adapter, text, pair) the tests send."""
    expected = {}
    for name in LABELS:
        classifier = load_trained_classifier(folders["adapters"] / name)
        for text, result in zip(TEXTS, predict_texts(classifier, TEXTS), strict=True):
            expected[(name, text, None)] = result
        for text, pair, result in zip(TEXTS, PAIRS, predict_texts(classifier, TEXTS, PAIRS), strict=True):
            expected[(name, text, pair)] = result
    return expected


def classify(url: str, adapter: str | None, texts: list[str], pairs: list[str] | None = None) -> requests.Response:
    body = {"adapter": adapter, "inputs": texts} | ({"text_pairs": pairs} if pairs else {})
    return requests.post(f"{url}/v1/classify", json=body, headers=AUTH, timeout=60)


def assert_matches(result: dict, expected: dict) -> None:
    assert result["label"] == expected["label"]
    assert list(result["probabilities"]) == list(expected["probabilities"])
    assert list(result["probabilities"].values()) == pytest.approx(list(expected["probabilities"].values()), abs=1e-4)
    assert result["probability"] == pytest.approx(expected["probability"], abs=1e-4)


def test_mixed_adapters_match_lorakit_predict(url: str, offline: dict) -> None:
    calls = [(name, TEXTS, None) for name in LABELS] + [("sent", TEXTS[:3], PAIRS[:3])]
    with ThreadPoolExecutor(len(calls)) as pool:
        responses = list(pool.map(lambda call: classify(url, *call), calls))
    for (name, texts, pairs), response in zip(calls, responses, strict=True):
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["adapter"] == name
        for i, (text, result) in enumerate(zip(texts, body["results"], strict=True)):
            assert_matches(result, offline[(name, text, pairs[i] if pairs else None)])


def test_concurrent_clients_all_get_their_own_answers(url: str, offline: dict) -> None:
    def client(seed: int) -> list[tuple[str, list[str], dict]]:
        rng = random.Random(seed)
        answers = []
        for _ in range(4):
            name, texts = rng.choice(list(LABELS)), rng.sample(TEXTS, rng.randint(1, 3))
            response = classify(url, name, texts)
            assert response.status_code == 200, response.text
            answers.append((name, texts, response.json()))
        return answers

    with ThreadPoolExecutor(6) as pool:
        everything = [answer for answers in pool.map(client, range(6)) for answer in answers]
    for name, texts, body in everything:
        assert body["adapter"] == name
        for text, result in zip(texts, body["results"], strict=True):
            assert_matches(result, offline[(name, text, None)])
    metrics = requests.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    sizes = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines() if "batch_size_" in line}
    assert sizes["lorakit_batch_size_sum"] / sizes["lorakit_batch_size_count"] > 1  # rows shared batches


def test_api_key_is_required_except_for_health(url: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        response = requests.get(f"{url}/v1/models", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
    assert requests.post(f"{url}/v1/classify", json={"inputs": ["w5"]}, timeout=10).status_code == 401
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
    assert requests.get(f"{url}/v1/models", headers=AUTH, timeout=10).status_code == 200


def test_models_lists_base_and_adapters_and_adapters_load_and_unload(url: str, folders: dict[str, Path]) -> None:
    def models() -> dict[str, dict]:
        response = requests.get(f"{url}/v1/models", headers=AUTH, timeout=10)
        assert response.json()["object"] == "list"
        return {model["id"]: model for model in response.json()["data"]}

    listed = models()
    assert set(listed) == {str(folders["base"]), "alien", *LABELS}
    assert listed[str(folders["base"])]["needs_adapter"] is True  # an encoder without a trained head
    assert listed["sent"]["object"] == "model" and listed["sent"]["parent"] == str(folders["base"])
    loaded = requests.post(f"{url}/v1/adapters", json={"name": "triage"}, headers=AUTH, timeout=30)
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["label_names"] == LABELS["triage"]
    assert models()["triage"]["loaded"] is True
    assert requests.delete(f"{url}/v1/adapters/triage", headers=AUTH, timeout=30).status_code == 200
    assert models()["triage"]["loaded"] is False
    again = requests.delete(f"{url}/v1/adapters/triage", headers=AUTH, timeout=30)
    assert again.status_code == 404 and again.json()["error"]["code"] == "adapter_not_loaded"
    assert classify(url, "triage", ["w5"]).status_code == 200  # loads again on demand
    metrics = requests.get(f"{url}/metrics", headers=AUTH, timeout=10)
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("lorakit_adapter_loads_total", "lorakit_adapter_evictions_total", "lorakit_queue_depth"):
        assert f"\n{name} " in metrics.text
    assert 'lorakit_http_requests_total{endpoint="/v1/adapters/{name}",status="404",tenant="admin"}' in metrics.text
    assert 'lorakit_http_request_duration_seconds_count{endpoint="/v1/classify"}' in metrics.text


def test_a_base_without_a_trained_head_and_a_blank_text_are_refused_by_name(url: str, folders: dict) -> None:
    """The base's head was never trained (its checkpoint holds none): no answer from random weights."""
    headless = classify(url, None, ["w5"])
    assert headless.status_code == 400 and headless.json()["error"]["code"] == "adapter_required"
    message = headless.json()["error"]["message"]
    assert f"the base model {str(folders['base'])!r} has no trained classifier head" in message
    assert 'set "adapter"' in message
    cases = [(["w5", "w6", ""], None, "inputs[2] is blank"), (["w5", "w6"], ["w7", " \t"], "text_pairs[1] is blank")]
    for texts, pairs, problem in cases:
        blank = classify(url, "sent", texts, pairs)
        assert blank.status_code == 400 and blank.json()["error"]["message"].startswith(problem), blank.text


BAD_REQUESTS = [  # method, path, JSON body (or raw bytes), status, error code
    ("POST", "/v1/classify", b'{"adapter": "sent", "inputs": ["w5"', 400, "invalid_json"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": "w5"}, 400, "invalid_request"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": []}, 400, "invalid_request"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": ["w5"], "text_pairs": ["a", "b"]}, 400, "invalid_request"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": ["w5"] * 9}, 400, "too_many_inputs"),
    ("POST", "/v1/classify", {"adapter": "topic", "inputs": [" ".join(["w5"] * 80)]}, 400, "invalid_input"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": ["w5", "   "]}, 400, "invalid_input"),
    ("POST", "/v1/classify", {"inputs": ["w5"]}, 400, "adapter_required"),
    ("POST", "/v1/classify", {"adapter": "sent", "inputs": ["w5 " * 2000]}, 413, "body_too_large"),
    ("POST", "/v1/classify", {"adapter": "nope", "inputs": ["w5"]}, 404, "adapter_not_found"),
    ("POST", "/v1/classify", {"adapter": "../sent", "inputs": ["w5"]}, 400, "invalid_adapter_name"),
    ("POST", "/v1/classify", {"adapter": "alien", "inputs": ["w5"]}, 409, "adapter_unfit"),
    ("POST", "/v1/completions", {"model": "sent", "prompt": "w5"}, 400, "wrong_task"),
    (
        "POST",
        "/v1/chat/completions",
        {"model": "sent", "messages": [{"role": "user", "content": "w"}]},
        400,
        "wrong_task",
    ),
    ("POST", "/v1/adapters", {"name": "sent", "path": "/etc"}, 400, "invalid_request"),
    ("POST", "/v1/adapters", {"name": "nope"}, 404, "adapter_not_found"),
    ("DELETE", "/v1/adapters/..", None, 404, "not_found"),
    ("GET", "/v1/nothing", None, 404, "not_found"),
    ("GET", "/v1/classify", None, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "code"), BAD_REQUESTS)
def test_bad_requests_get_a_json_4xx_and_the_server_stays_up(
    url: str, method: str, path: str, body: object, status: int, code: str
) -> None:
    payload = {"data": body, "headers": AUTH | {"Content-Type": "application/json"}} if isinstance(body, bytes) else {}
    response = requests.request(method, f"{url}{path}", json=body, timeout=30, **({"headers": AUTH} | payload))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]
    assert requests.get(f"{url}/health", timeout=10).json()["status"] == "ok"
