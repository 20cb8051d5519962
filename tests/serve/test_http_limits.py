"""`lorakit serve`'s request-body limits over real sockets, against a real server: a body over
--max-body-bytes is a 413 that every common client reads (urllib, http.client, httpx, the openai
client; sized and chunked bodies, up to larger than the socket buffers, so a server that answered
without reading on would reset them), and a body that stalls is a 408 while other clients are
answered. Every refusal closes the connection."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from urllib.parse import urlsplit

import httpx2 as httpx
import openai
import pytest
import requests
from api_servers import classification_base, classifier_adapter, running_server

LIMIT = 1 << 20  # the default --max-body-bytes; a body of 4 × it outgrows the loopback socket buffers
CHUNK = 1 << 16
JSON = {"Content-Type": "application/json"}
SIZES = {"limit+1": LIMIT + 1, "4x limit": 4 * LIMIT}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("http-limits")
    base = classification_base(root / "base")
    classifier_adapter(base, root / "adapters" / "sent", ["neg", "pos"], seed=1)
    with running_server(base, root / "adapters", root / "server.log", "--body-timeout", "1") as url:
        yield url


def classify_body(size: int) -> bytes:
    """A well-formed /v1/classify body of exactly `size` bytes (JSON padded with trailing spaces)."""
    body = b'{"adapter": "sent", "inputs": ["w5 w6"]}'
    return body + b" " * (size - len(body))


def chunks(size: int) -> Iterator[bytes]:
    """`classify_body(size)` in pieces: the clients send an iterator chunked, without Content-Length."""
    body = classify_body(size)
    return (body[start : start + CHUNK] for start in range(0, size, CHUNK))


Answer = tuple[int, str | None, dict]  # status, its Connection header, its JSON body


def with_urllib(url: str, payload: bytes | Iterable[bytes]) -> Answer:
    """urllib sends `Connection: close` and reads nothing before it has sent the whole body."""
    request = urllib.request.Request(f"{url}/v1/classify", data=payload, headers=JSON)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers["Connection"], json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Connection"], json.load(error)


def with_http_client(url: str, payload: bytes | Iterable[bytes]) -> Answer:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        connection.request("POST", "/v1/classify", body=payload, headers=JSON)
        response = connection.getresponse()
        return response.status, response.getheader("Connection"), json.loads(response.read())
    finally:
        connection.close()


def with_httpx(url: str, payload: bytes | Iterable[bytes]) -> Answer:
    response = httpx.post(f"{url}/v1/classify", content=payload, headers=JSON, timeout=60)
    return response.status_code, response.headers.get("Connection"), response.json()


CLIENTS: dict[str, Callable[[str, bytes | Iterable[bytes]], Answer]] = {
    "urllib": with_urllib,
    "http.client": with_http_client,
    "httpx": with_httpx,
}


def assert_too_large(answer: Answer) -> None:
    status, connection, body = answer
    assert status == 413, body
    assert body["error"]["code"] == "body_too_large" and f"{LIMIT:,} bytes" in body["error"]["message"]
    assert connection == "close"


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_the_413_of_a_body_over_the_limit(url: str, client: str, size: int) -> None:
    assert_too_large(CLIENTS[client](url, classify_body(size)))
    assert requests.get(f"{url}/health", timeout=10).status_code == 200


@pytest.mark.parametrize("client", CLIENTS)
def test_every_client_reads_the_413_of_a_chunked_body_over_the_limit(url: str, client: str) -> None:
    assert_too_large(CLIENTS[client](url, chunks(4 * LIMIT)))


def test_a_body_at_the_limit_is_served(url: str) -> None:
    for client in CLIENTS.values():
        status, _, body = client(url, classify_body(LIMIT))
        assert status == 200, body
        assert [result["label"] in ("neg", "pos") for result in body["results"]] == [True]


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
def test_the_openai_client_raises_its_status_error_with_413(url: str, size: int) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as raised:
        client.completions.create(model="sent", prompt="w5 " * (size // 3))
    assert raised.value.status_code == 413
    assert raised.value.body["code"] == "body_too_large"


def connect(url: str) -> socket.socket:
    parts = urlsplit(url)
    return socket.create_connection((parts.hostname, parts.port), timeout=30)


def until_closed(connection: socket.socket) -> tuple[bytes, dict]:
    """What the server sends until it closes the connection: the response's head, and its JSON body."""
    received = b""
    while chunk := connection.recv(CHUNK):  # the socket's timeout is generous: no timing asserted
        received += chunk
    connection.close()
    head, _, body = received.partition(b"\r\n\r\n")
    return head, json.loads(body)


@pytest.mark.parametrize(
    "headers",
    [b"Content-Length: 1073741824", b"Content-Length: 2000000\r\nExpect: 100-continue"],
    ids=["declared beyond what is worth reading", "expecting 100-continue"],
)
def test_a_declared_length_over_the_limit_is_refused_unread(url: str, headers: bytes) -> None:
    """A client that has sent no body yet gets the 413 at once, and then the connection closes."""
    connection = connect(url)
    connection.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n\r\n")
    head, body = until_closed(connection)
    assert head.startswith(b"HTTP/1.1 413 ") and b"connection: close" in head.lower()
    assert body["error"]["code"] == "body_too_large"


def test_a_stalled_body_gets_408_while_other_clients_are_answered(url: str) -> None:
    stalled = connect(url)
    head = b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    stalled.sendall(head + b'{"adapter": "sent", "inputs": ["w5')  # and then nothing
    answered = requests.post(f"{url}/v1/classify", json={"adapter": "sent", "inputs": ["w5 w6"]}, timeout=30)
    assert answered.status_code == 200, answered.text
    head, body = until_closed(stalled)
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert body["error"]["code"] == "body_timeout"
    assert requests.get(f"{url}/health", timeout=10).status_code == 200
