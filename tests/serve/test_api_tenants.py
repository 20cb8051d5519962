"""`lorakit serve --keys keys.yaml --api-key KEY` on a tiny BERT, over real HTTP: each tenant sees
and uses only its adapters, another tenant's adapter answers exactly as a missing one (through the
real registry), a permission a tenant lacks answers 403, /metrics counts per tenant, and the admin
key may do everything."""

from __future__ import annotations

import hashlib

import pytest
import requests
from api_servers import classification_base, classifier_adapter, running_server

ADMIN = {"Authorization": "Bearer admin-key"}
ACME = {"Authorization": "Bearer acme-key"}
OPS = {"Authorization": "Bearer ops-key"}
KEYS = f"""
tenants:
  - name: acme
    key_sha256: {hashlib.sha256(b"acme-key").hexdigest()}
    adapters: ["acme-*"]
    manage: true
  - name: ops
    key: ops-key
    base: true
    metrics: true
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("api-tenants")
    base = classification_base(root / "base")
    adapters = root / "adapters"
    for seed, name in enumerate(("acme-sent", "zeta"), start=1):
        classifier_adapter(base, adapters / name, ["neg", "pos"], seed=seed)
    keys = root / "keys.yaml"
    keys.write_text(KEYS)
    flags = ("--keys", str(keys), "--api-key", "admin-key")
    with running_server(base, adapters, root / "server.log", *flags) as url:
        yield {"url": url, "base": str(base)}


def call(server: dict, method: str, path: str, headers: dict, body: dict | None = None) -> requests.Response:
    return requests.request(method, f"{server['url']}{path}", json=body, headers=headers, timeout=60)


def test_each_key_sees_and_uses_only_what_it_may(server: dict) -> None:
    def listed(headers: dict) -> list[str]:
        return [model["id"] for model in call(server, "GET", "/v1/models", headers).json()["data"]]

    assert listed(ACME) == ["acme-sent"]
    assert listed(OPS) == [server["base"]]
    assert listed(ADMIN) == [server["base"], "acme-sent", "zeta"]
    assert call(server, "POST", "/v1/classify", ACME, {"adapter": "acme-sent", "inputs": ["w5"]}).status_code == 200
    base = call(server, "POST", "/v1/classify", ACME, {"adapter": None, "inputs": ["w5"]})
    assert base.status_code == 403 and base.json()["error"]["code"] == "base_model_forbidden"
    headless = call(server, "POST", "/v1/classify", OPS, {"inputs": ["w5"]})  # allowed, but the base has no head
    assert headless.status_code == 400 and headless.json()["error"]["code"] == "adapter_required"
    assert call(server, "POST", "/v1/classify", ADMIN, {"adapter": "zeta", "inputs": ["w5"]}).status_code == 200
    assert call(server, "GET", "/v1/models", {"Authorization": "Bearer acme"}).status_code == 401
    assert requests.get(f"{server['url']}/health", timeout=10).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/classify", {"adapter": "NAME", "inputs": ["w5"]}),
        ("POST", "/v1/adapters", {"name": "NAME"}),
        ("DELETE", "/v1/adapters/NAME", None),
        ("POST", "/v1/unload_lora_adapter", {"lora_name": "NAME"}),
        ("POST", "/v1/load_lora_adapter", {"lora_name": "acme-copy", "lora_path": "NAME"}),
    ],
)
def test_another_tenants_adapter_answers_as_a_missing_one(server: dict, method: str, path: str, body: dict) -> None:
    """acme naming "zeta" (another's, loaded) gets the answer it gets for "acme-ghost" (its pattern,
    but no such adapter): the same status and body, but for the name."""
    assert call(server, "POST", "/v1/adapters", ADMIN, {"name": "zeta"}).status_code == 200

    def answer(name: str) -> tuple[int, str]:
        filled_body = {field: name if value == "NAME" else value for field, value in body.items()} if body else None
        response = call(server, method, path.replace("NAME", name), ACME, filled_body)
        return response.status_code, response.text.replace(name, "NAME")

    forbidden, missing = answer("zeta"), answer("acme-ghost")
    assert forbidden == missing
    assert forbidden[0] == 404


def test_loading_needs_the_manage_permission(server: dict) -> None:
    assert call(server, "POST", "/v1/adapters", ACME, {"name": "acme-sent"}).json()["loaded"] is True
    assert call(server, "DELETE", "/v1/adapters/acme-sent", ACME).json() == {"name": "acme-sent", "loaded": False}
    for name in ("acme-sent", "zeta", "ghost"):
        refused = call(server, "POST", "/v1/adapters", OPS, {"name": name})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "manage_forbidden"


def test_metrics_count_per_tenant_and_need_the_metrics_permission(server: dict) -> None:
    call(server, "POST", "/v1/classify", ACME, {"adapter": "acme-sent", "inputs": ["w6"]})
    call(server, "POST", "/v1/classify", OPS, {"inputs": ["w6"]})
    call(server, "GET", "/v1/models", {"Authorization": "Bearer wrong"})
    refused = call(server, "GET", "/metrics", ACME)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "metrics_forbidden"
    metrics = call(server, "GET", "/metrics", OPS).text
    for labels in (
        'endpoint="/v1/classify",status="200",tenant="acme"',
        'endpoint="/v1/classify",status="400",tenant="ops"',  # allowed; the base has no trained head
        'endpoint="/metrics",status="403",tenant="acme"',
        'endpoint="/v1/models",status="401",tenant="-"',
    ):
        assert f"lorakit_http_requests_total{{{labels}}} " in metrics
    assert call(server, "GET", "/metrics", ADMIN).status_code == 200
