"""`lorakit serve --base MODEL --adapters DIR`: serve many adapters of one base model over HTTP.

One base model (packaged name, folder or Hub id) stays in memory; the adapters in DIR (one
subfolder each, PEFT adapter or `lorakit train` run folder, loaded on first use, least recently
used evicted beyond --max-adapter-bytes) share it, and requests for different adapters share
batches. A classification base serves POST /v1/classify; a causal LM or a seq2seq model (T5,
BART: the prompt is its encoder's input) serves the OpenAI-compatible POST /v1/completions and
/v1/chat/completions. Also: GET /v1/models, POST /v1/adapters {"name"},
DELETE /v1/adapters/NAME, GET /health, GET /metrics (Prometheus). Clients load adapters by name
only, never by path. A request body must fit --max-body-bytes (else 413, with the connection
closed) and arrive within --body-timeout seconds of its headers (else 408). uvicorn bounds the
request head in size (a head still incomplete after 16 KiB is a 400) but not in time, and closes
an idle connection 5 s after its last answer: facing untrusted clients, put a proxy that times out
slow heads in front (nginx's client_header_timeout). Under load: past --max-queue waiting rows a
request gets 503 with Retry-After; past --request-timeout seconds, 504; a client that hangs up
gives its rows up at the next step. Ctrl-C stops the server.

API keys: with --api-key KEY (or LORAKIT_API_KEY) and/or --keys FILE, every path but /health needs
`Authorization: Bearer KEY`. The --api-key is the admin's: everything allowed. FILE (YAML) gives
each tenant a key and what it may use; a tenant sees and uses only its adapters (others answer 404,
as missing ones do), and a permission it lacks answers 403. /metrics counts requests per tenant.

  tenants:
    - name: acme                           # shown in /metrics
      key_sha256: ebb2d2d...               # printf %s 'KEY' | sha256sum  (or key: "KEY")
      adapters: ["acme-*", "shared-*"]     # glob patterns of the adapter names it may use
      base: false                          # may use the base model directly
      manage: true                         # may load and unload its adapters
      metrics: false                       # may read /metrics
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind

if TYPE_CHECKING:
    from lorakit.serve.http.keys import TenantKey


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "serve",
        help="serve adapters of one base model over HTTP (batched across adapters)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", required=True, help="base model: packaged name, local folder or Hub id")
    parser.add_argument("--adapters", required=True, help="folder whose subfolders are the adapters to serve")
    parser.add_argument(
        "--task", choices=("auto", *TaskKind.names()), default="auto", help="default: from the architecture"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--api-key", help="the admin's key: 'Authorization: Bearer KEY', everything allowed (default: $LORAKIT_API_KEY)"
    )
    parser.add_argument("--keys", metavar="FILE", help="YAML file of tenants' API keys and permissions (see above)")
    group = parser.add_argument_group("batching and memory")
    group.add_argument(
        "--max-batch-size", type=int, default=32, help="rows per batch; generation: rows decoding at once (default 32)"
    )
    group.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="classification: how long a row waits for others (default 5); generation rows never wait: "
        "they join the running batch at its next step",
    )
    group.add_argument("--max-adapter-bytes", type=int, default=256 * 2**20, help="adapter memory budget (256 MiB)")
    group.add_argument(
        "--prefill-tokens",
        type=int,
        default=512,
        help="generation: prompt tokens prefilled between two decode steps; a longer prompt is prefilled "
        "in chunks, so running rows wait at most one chunk (default 512)",
    )
    group.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX-512 bf16)")
    group.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    group = parser.add_argument_group("request limits")
    group.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="request body size (default 1 MiB); a larger body is answered 413 after it is read and discarded, "
        "up to 64 MiB (or 4x this limit), beyond which the connection closes unread",
    )
    group.add_argument(
        "--body-timeout",
        type=float,
        default=10.0,
        help="seconds for a request's whole body to arrive after its headers, else 408 (default 10)",
    )
    group.add_argument(
        "--max-inputs", type=int, default=64, help="texts, or prompts × n choices, per request (default 64)"
    )
    group.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens (default 512)")
    group.add_argument("--max-input-tokens", type=int, help="longest text to classify (default: the model's)")
    group.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="rows (texts, prompts) waiting to run; past it requests get 503 with Retry-After (default 1024)",
    )
    group.add_argument(
        "--request-timeout",
        type=float,
        help="seconds a request may take; past it, 504 and its rows leave the batch (default: no limit)",
    )


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    _check(args)
    api_key = args.api_key or os.environ.get("LORAKIT_API_KEY") or None
    tenant_keys = _tenant_keys(args.keys, api_key)
    import torch
    import uvicorn

    from lorakit.serve import load_engine
    from lorakit.serve.http.app import create_app
    from lorakit.serve.http.limits import Limits

    if args.threads:
        torch.set_num_threads(args.threads)
    engine = load_engine(
        args.base,
        task_type=None if args.task == "auto" else TaskKind(args.task).peft_type,
        adapters_dir=args.adapters,
        max_bytes=args.max_adapter_bytes,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        max_input_tokens=args.max_input_tokens,
        bf16=args.bf16,
        max_queued=args.max_queue,
        request_timeout=args.request_timeout,
        prefill_tokens=args.prefill_tokens,
    )
    limits = Limits(
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        max_inputs=args.max_inputs,
        max_tokens=args.max_tokens_limit,
    )
    app = create_app(engine, api_key=api_key, tenant_keys=tenant_keys, limits=limits)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    adapters = len(engine.registry.list())
    keys = _keys_summary(api_key, tenant_keys)
    print(
        f"lorakit serve: {args.base} ({engine.task_type}, {adapters} adapters in {args.adapters}, {keys}) "
        f"at http://{args.host}:{args.port}",
        flush=True,
    )
    try:
        server.run()  # answers the open requests after Ctrl-C, then re-raises the signal
    except KeyboardInterrupt:
        print("lorakit serve: stopped", flush=True)
    except SystemExit:  # uvicorn exits when it cannot bind
        if server.started:
            raise
        raise LorakitError(
            f"cannot listen on {args.host}:{args.port} (in use, or not this machine's address)"
        ) from None
    finally:
        engine.close()
    return 0


def _check(args: argparse.Namespace) -> None:
    """Refuse impossible settings before loading anything."""
    if not 0 <= args.port <= 65535:
        raise LorakitError(f"--port must be between 0 and 65535; got {args.port}")
    positive = {
        "--max-batch-size": args.max_batch_size,
        "--max-adapter-bytes": args.max_adapter_bytes,
        "--max-body-bytes": args.max_body_bytes,
        "--max-inputs": args.max_inputs,
        "--max-tokens-limit": args.max_tokens_limit,
        "--max-input-tokens": args.max_input_tokens,
        "--threads": args.threads,
        "--max-queue": args.max_queue,
        "--prefill-tokens": args.prefill_tokens,
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise LorakitError(f"{flag} must be at least 1; got {value}")
    if args.max_wait_ms < 0:
        raise LorakitError(f"--max-wait-ms must be 0 or more; got {args.max_wait_ms}")
    if args.request_timeout is not None and not args.request_timeout > 0:
        raise LorakitError(f"--request-timeout must be more than 0 seconds; got {args.request_timeout}")
    if not args.body_timeout > 0:
        raise LorakitError(f"--body-timeout must be more than 0 seconds; got {args.body_timeout}")
    if not os.path.isdir(args.adapters):
        raise LorakitError(f"--adapters {args.adapters} is not a folder; create it, even empty")


def _keys_summary(api_key: str | None, tenant_keys: list[TenantKey]) -> str:
    """What the startup line says of the API keys: "admin key, 3 tenant keys", or "no API key"."""
    parts = (["admin key"] if api_key else []) + ([f"{len(tenant_keys)} tenant keys"] if tenant_keys else [])
    return ", ".join(parts) or "no API key"


def _tenant_keys(path: str | None, api_key: str | None) -> list[TenantKey]:
    """The keys file's tenants (none without `path`), refusing one whose key is the admin's."""
    from lorakit.serve.http.keys import key_digest, read_keys_file

    if path is None:
        return []
    tenant_keys = read_keys_file(path)
    if api_key is not None:
        for entry in tenant_keys:
            if entry.digest == key_digest(api_key):
                raise LorakitError(
                    f"--keys {path}: tenant {entry.tenant.name!r} has the --api-key's key; give the admin its own key"
                )
    return tenant_keys
