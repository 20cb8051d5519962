"""`lorakit serve --base MODEL --adapters DIR`: serve many adapters of one base model over HTTP.

One base model (packaged name, folder or Hub id) stays in memory; the adapters in DIR (one
subfolder each, PEFT adapter or `lorakit train` run folder, loaded on first use, least recently
used evicted beyond --max-adapter-bytes) share it, and requests for different adapters share
batches. A classification base serves POST /v1/classify; a causal LM serves the OpenAI-compatible
POST /v1/completions and /v1/chat/completions. Also: GET /v1/models, POST /v1/adapters {"name"},
DELETE /v1/adapters/NAME, GET /health, GET /metrics (Prometheus). Clients load adapters by name
only, never by path. With --api-key (or LORAKIT_API_KEY) every path but /health needs
`Authorization: Bearer KEY`. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse
import os

from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind


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
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' (default: $LORAKIT_API_KEY, else off)")
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
    group.add_argument("--bf16", action="store_true", help="bfloat16 autocast (faster on CPUs with AVX-512 bf16)")
    group.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    group = parser.add_argument_group("request limits")
    group.add_argument("--max-body-bytes", type=int, default=1 << 20, help="request body size (default 1 MiB)")
    group.add_argument(
        "--max-inputs", type=int, default=64, help="texts, or prompts × n choices, per request (default 64)"
    )
    group.add_argument("--max-tokens-limit", type=int, default=512, help="largest max_tokens (default 512)")
    group.add_argument("--max-input-tokens", type=int, help="longest text to classify (default: the model's)")


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    _check(args)
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
    )
    api_key = args.api_key or os.environ.get("LORAKIT_API_KEY") or None
    limits = Limits(max_body_bytes=args.max_body_bytes, max_inputs=args.max_inputs, max_tokens=args.max_tokens_limit)
    app = create_app(engine, api_key=api_key, limits=limits)
    server = uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning"))
    adapters = len(engine.registry.list())
    auth = "API key required" if api_key else "no API key"
    print(
        f"lorakit serve: {args.base} ({engine.task_type}, {adapters} adapters in {args.adapters}, {auth}) "
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
    }
    for flag, value in positive.items():
        if value is not None and value < 1:
            raise LorakitError(f"{flag} must be at least 1; got {value}")
    if args.max_wait_ms < 0:
        raise LorakitError(f"--max-wait-ms must be 0 or more; got {args.max_wait_ms}")
    if not os.path.isdir(args.adapters):
        raise LorakitError(f"--adapters {args.adapters} is not a folder; create it, even empty")
