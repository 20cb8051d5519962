"""Tenants over the whole app (`create_app` with a keys table, the stand-in engine of
test_http_routers): each key sees and uses only its adapters, an adapter outside its patterns answers
exactly as a missing one, permissions it lacks answer 403, /metrics counts requests per tenant, and
the admin key may do everything."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_http_routers import BASE, LIMITS, StandInEngine, StandInRegistry, assert_error

from lorakit.errors import LorakitError
from lorakit.serve.http.app import create_app
from lorakit.serve.http.errors import ApiError, error_body
from lorakit.serve.http.keys import parse_keys
from lorakit.serve.http.tenants import ADMIN, Tenant, missing_folder, not_loaded, unknown_adapter
from lorakit.task_kind import TaskKind

KEYS = {
    "tenants": [
        # acme may use and manage "sent" (not "busy", "alien"), not the base, not /metrics.
        {"name": "acme", "key": "acme-key", "adapters": ["sen?", "acme-*"], "manage": True},
        # viewer may use "busy", "alien" and the base, read /metrics, and manage nothing.
        {"name": "viewer", "key": "viewer-key", "adapters": ["busy", "a[l]ien"], "base": True, "metrics": True},
    ]
}
ACME, VIEWER, ADMIN_KEY = ({"Authorization": f"Bearer {key}"} for key in ("acme-key", "viewer-key", "admin-key"))


def client_for(engine: StandInEngine) -> TestClient:
    """The whole app over `engine` with the tenants of KEYS and the admin key."""
    return TestClient(create_app(engine, api_key="admin-key", tenant_keys=parse_keys(KEYS), limits=LIMITS))


@dataclass
class RegistryWithout(StandInRegistry):
    """The stand-in registry where adapter `missing` does not exist (nor is loaded)."""

    missing: str = ""

    def get(self, name: str):
        if name == self.missing:
            raise LorakitError(f"no adapter named {name!r}")
        return super().get(name)

    def list(self) -> list[dict]:
        return [entry for entry in super().list() if entry["name"] != self.missing]


def test_permissions_follow_the_patterns_and_flags() -> None:
    tenant = Tenant("acme", ("acme-*", "shared-summary", "v[12]"), manage=True)
    assert [tenant.may_use(name) for name in ("acme-1", "ACME-1", "shared-summary", "shared-summary2")] == [
        True,
        False,  # case-sensitive, on every OS
        True,
        False,
    ]
    assert tenant.may_use("v2") and not tenant.may_use("v3")
    tenant.check_adapter("acme-x")
    tenant.check_adapter("../x")  # an invalid name passes on, to be refused (400) as a missing one is
    tenant.check_manage()
    for check, code in [
        (lambda: tenant.check_adapter("other"), "adapter_not_found"),
        (lambda: tenant.check_adapter("other", loaded=True), "adapter_not_loaded"),
        (lambda: tenant.check_base(BASE), "base_model_forbidden"),
        (tenant.check_metrics, "metrics_forbidden"),
    ]:
        with pytest.raises(ApiError) as refused:
            check()
        assert refused.value.code == code
    ADMIN.check_adapter("other")
    ADMIN.check_base(BASE)
    ADMIN.check_manage()
    ADMIN.check_metrics()


def refusal(check) -> tuple[int, str, str]:
    """(status, code, message) of the ApiError that `check()` raises."""
    with pytest.raises(ApiError) as refused:
        check()
    return _args(refused.value)


def _args(error: ApiError) -> tuple[int, str, str]:
    return error.status, error.code, error.message


def test_an_adapter_outside_the_patterns_raises_what_a_missing_one_does(tmp_path: Path) -> None:
    tenant = Tenant("acme", ("acme-*",))
    assert refusal(lambda: tenant.check_adapter("other")) == _args(unknown_adapter("other"))
    assert refusal(lambda: tenant.check_adapter("other", loaded=True)) == _args(not_loaded("other"))
    adapters = tmp_path / "adapters"
    for name in ("acme-1", "other"):
        (adapters / name / "adapter").mkdir(parents=True)
    tenant.check_folder(adapters, adapters / "acme-1" / "adapter", "acme-1/adapter")
    # Another's folder, a folder inside it, the adapters folder itself, a missing folder: one answer.
    for folder in (adapters / "other", adapters / "other" / "adapter", adapters, adapters / "acme-2"):
        assert refusal(lambda folder=folder: tenant.check_folder(adapters, folder, "P")) == _args(missing_folder("P"))


def test_each_key_lists_only_its_adapters_and_the_base_if_allowed() -> None:
    client = client_for(StandInEngine(TaskKind.CLASSIFICATION))

    def listed(headers: dict) -> list[str]:
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 200, response.text
        return [model["id"] for model in response.json()["data"]]

    assert listed(ACME) == ["sent"]
    assert listed(VIEWER) == [BASE, "alien", "busy"]
    assert listed(ADMIN_KEY) == [BASE, "alien", "busy", "sent"]
    assert_error(client.get("/v1/models", headers={"Authorization": "Bearer nobody"}), 401, "invalid_api_key")
    assert client.get("/health").status_code == 200


def test_each_key_uses_its_adapters_and_the_base_only_if_allowed() -> None:
    engine = StandInEngine(TaskKind.CLASSIFICATION)
    client = client_for(engine)
    assert client.post("/v1/classify", json={"adapter": "sent", "inputs": ["w5"]}, headers=ACME).status_code == 200
    assert client.post("/v1/classify", json={"adapter": "busy", "inputs": ["w6"]}, headers=VIEWER).status_code == 200
    assert client.post("/v1/classify", json={"inputs": ["w7"]}, headers=VIEWER).status_code == 200
    base = assert_error(client.post("/v1/classify", json={"inputs": ["w8"]}, headers=ACME), 403, "base_model_forbidden")
    assert base["message"].startswith(f"this API key may not use the base model {BASE!r} directly")
    invalid = client.post("/v1/classify", json={"adapter": "../x", "inputs": ["w9"]}, headers=ACME)
    assert_error(invalid, 400, "invalid_adapter_name")
    assert engine.submitted == [("sent", "w5", None), ("busy", "w6", None), (None, "w7", None)]

    generator = StandInEngine(TaskKind.CAUSAL_LM)
    client = client_for(generator)
    chat = {"messages": [{"role": "user", "content": "w5"}]}
    assert client.post("/v1/chat/completions", json={"model": "sent", **chat}, headers=ACME).status_code == 200
    assert client.post("/v1/completions", json={"model": BASE, "prompt": "w6"}, headers=VIEWER).status_code == 200
    refused = client.post("/v1/completions", json={"model": BASE, "prompt": "w7"}, headers=ACME)
    assert_error(refused, 403, "base_model_forbidden")
    assert [row[:2] for row in generator.submitted] == [("sent", "w5\n"), (None, "w6")]


CHAT = [{"role": "user", "content": "w5"}]
ADAPTER_REQUESTS = [  # (engine kind, method, path, JSON body, with NAME standing for the adapter's name)
    (TaskKind.CLASSIFICATION, "POST", "/v1/classify", {"adapter": "NAME", "inputs": ["w5"]}),
    (TaskKind.CAUSAL_LM, "POST", "/v1/completions", {"model": "NAME", "prompt": "w5"}),
    (TaskKind.CAUSAL_LM, "POST", "/v1/chat/completions", {"model": "NAME", "messages": CHAT}),
    (TaskKind.CLASSIFICATION, "POST", "/v1/adapters", {"name": "NAME"}),
    (TaskKind.CLASSIFICATION, "DELETE", "/v1/adapters/NAME", None),
    (TaskKind.CLASSIFICATION, "POST", "/v1/unload_lora_adapter", {"lora_name": "NAME"}),
]


def _request(client: TestClient, method: str, path: str, body: dict | None, name: str, headers: dict):
    """The request with `name` in place of NAME."""
    path = path.replace("NAME", name)
    if body is not None:
        body = {field: (name if value == "NAME" else value) for field, value in body.items()}
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize("name", ["busy", "alien"])  # busy is loaded, alien is not
@pytest.mark.parametrize(("kind", "method", "path", "body"), ADAPTER_REQUESTS)
def test_another_tenants_adapter_answers_exactly_as_a_missing_one(
    kind: TaskKind, method: str, path: str, body: dict | None, name: str
) -> None:
    """acme asking for an adapter that exists (outside its patterns) gets the very status and body
    that a key allowed everything gets where that adapter does not exist."""
    forbidden = _request(client_for(StandInEngine(kind)), method, path, body, name, ACME)
    engine_without = StandInEngine(kind, registry=RegistryWithout(loaded=set(), missing=name))
    missing = _request(client_for(engine_without), method, path, body, name, ADMIN_KEY)
    assert forbidden.status_code == missing.status_code == 404
    assert forbidden.json() == missing.json()
    assert forbidden.json()["error"]["code"] in ("adapter_not_found", "adapter_not_loaded")


def test_loading_and_unloading_need_the_manage_permission_and_reveal_no_name() -> None:
    client = client_for(StandInEngine(TaskKind.CLASSIFICATION))
    for name in ("busy", "sent", "nope"):  # its own, another's, a missing one: one answer
        for response in (
            client.post("/v1/adapters", json={"name": name}, headers=VIEWER),
            client.delete(f"/v1/adapters/{name}", headers=VIEWER),
            client.post("/v1/unload_lora_adapter", json={"lora_name": name}, headers=VIEWER),
            client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": name}, headers=VIEWER),
        ):
            error = assert_error(response, 403, "manage_forbidden")
            assert error["message"] == "this API key may not load or unload adapters (manage: false)"
    loaded = client.post("/v1/adapters", json={"name": "sent"}, headers=ACME)
    assert loaded.status_code == 200 and loaded.json()["name"] == "sent"
    assert client.delete("/v1/adapters/sent", headers=ACME).json() == {"name": "sent", "loaded": False}
    assert client.post("/v1/adapters", json={"name": "busy"}, headers=ADMIN_KEY).status_code == 200


def test_a_vllm_load_of_another_tenants_name_or_folder_answers_as_a_missing_one(tmp_path: Path) -> None:
    (tmp_path / "busy").mkdir()
    registry = StandInRegistry()
    registry.adapters_dir = tmp_path  # the folder `lora_path` must lie in; these loads stop before the registry
    client = client_for(StandInEngine(TaskKind.CLASSIFICATION, registry=registry))

    def load(name: str, path: str) -> dict:
        response = client.post("/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}, headers=ACME)
        assert response.status_code == 404
        return response.json()

    for name in ("busy", "nobody-has-it"):  # loaded (for another tenant), or by none: one answer
        assert load(name, "x") == error_body(*_args(unknown_adapter(name)))
    for path in ("busy", "ghost"):  # another tenant's folder, or none: one answer
        assert load("acme-copy", path) == error_body(*_args(missing_folder(path)))


def test_metrics_count_requests_per_tenant_and_need_the_metrics_permission() -> None:
    client = client_for(StandInEngine(TaskKind.CLASSIFICATION))
    client.post("/v1/classify", json={"adapter": "sent", "inputs": ["w5"]}, headers=ACME)
    client.post("/v1/classify", json={"adapter": "busy", "inputs": ["w5"]}, headers=ACME)
    client.post("/v1/classify", json={"inputs": ["w5"]}, headers=VIEWER)
    client.post("/v1/classify", json={"inputs": ["w5"]}, headers={"Authorization": "Bearer acme"})
    assert_error(client.get("/metrics", headers=ACME), 403, "metrics_forbidden")
    assert client.get("/metrics", headers=ADMIN_KEY).status_code == 200
    metrics = client.get("/metrics", headers=VIEWER).text
    for labels, count in [
        ('endpoint="/v1/classify",status="200",tenant="acme"', 1),
        ('endpoint="/v1/classify",status="404",tenant="acme"', 1),
        ('endpoint="/v1/classify",status="200",tenant="viewer"', 1),
        ('endpoint="/v1/classify",status="401",tenant="-"', 1),
        ('endpoint="/metrics",status="403",tenant="acme"', 1),
        ('endpoint="/metrics",status="200",tenant="admin"', 1),
    ]:
        assert f"lorakit_http_requests_total{{{labels}}} {count}\n" in metrics


def test_without_keys_every_request_may_do_everything_as_no_tenant() -> None:
    client = TestClient(create_app(StandInEngine(TaskKind.CLASSIFICATION), limits=LIMITS))
    assert [model["id"] for model in client.get("/v1/models").json()["data"]] == [BASE, "alien", "busy", "sent"]
    assert client.post("/v1/classify", json={"inputs": ["w5"]}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'lorakit_http_requests_total{endpoint="/v1/classify",status="200",tenant="-"} 1' in metrics


def test_only_tenant_keys_and_no_admin_key() -> None:
    client = TestClient(create_app(StandInEngine(TaskKind.CLASSIFICATION), tenant_keys=parse_keys(KEYS)))
    assert client.get("/v1/models", headers=ACME).status_code == 200
    assert_error(client.get("/v1/models", headers=ADMIN_KEY), 401, "invalid_api_key")
