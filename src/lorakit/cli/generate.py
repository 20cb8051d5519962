"""`lorakit generate --adapter DIR "prompt" ...`: continue prompts with a trained generator.

The adapter is a causal-lm or seq2seq run folder, an adapter folder or a merged model folder.
Each prompt becomes a user turn (after the run's system prompt) rendered with the tokenizer's chat
template, as in training; --raw sends the text as it is. Prompts come from the arguments, else
from standard input (one per line). Tokens stream to the terminal as they are generated; with
--json each prompt gives one JSON line instead, once it is complete. Greedy by default;
--temperature > 0 samples (with --top-p, --top-k; --seed makes it repeatable).
"""

from __future__ import annotations

import argparse
import json
import sys

from lorakit.cli.args import stdin_lines
from lorakit.errors import LorakitError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register this command and its flags."""
    parser = subparsers.add_parser(
        "generate",
        help="generate text with a trained causal-lm or seq2seq adapter",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--adapter", required=True, help="run folder, adapter folder or merged-model folder")
    parser.add_argument("prompts", nargs="*", help="prompts (default: one per line on standard input)")
    parser.add_argument("--max-new-tokens", type=int, help="tokens to generate (default: the run's, else 64)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default); > 0 samples")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0 = off)")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k likeliest tokens (0 = off)")
    parser.add_argument("--seed", type=int, help="seed for sampling")
    parser.add_argument("--system-prompt", help="system message (default: the run's own, if it had one)")
    parser.add_argument("--raw", action="store_true", help="no chat template: the prompt text as it is")
    parser.add_argument("--no-adapter", action="store_true", help="the base model alone, for comparison")
    parser.add_argument("--json", action="store_true", help='one JSON line per prompt: {"prompt", "completion"}')


def run(args: argparse.Namespace) -> int:
    """Run this command with parsed `args`; returns the exit status."""
    prompts = list(args.prompts) or _stdin_prompts()
    if not prompts:
        raise LorakitError("no prompts: pass them as arguments or on standard input")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise LorakitError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0 or not 0 < args.top_p <= 1 or args.top_k < 0:
        raise LorakitError("--temperature must be >= 0, --top-p in (0, 1], --top-k >= 0")

    import contextlib

    import torch
    from transformers import TextStreamer

    from lorakit.inference.generation import generate_batch, load_trained_generator, prompt_text, user_messages
    from lorakit.lora import disable_adapter
    from lorakit.task_kind import TaskKind

    if args.seed is not None:
        torch.manual_seed(args.seed)
    generator = load_trained_generator(args.adapter)
    tokenizer, seq2seq = generator.tokenizer, generator.kind is TaskKind.SEQ2SEQ
    system = args.system_prompt if args.system_prompt is not None else generator.system_prompt
    max_new_tokens = args.max_new_tokens or generator.max_new_tokens
    if args.no_adapter and not hasattr(generator.model, "lorakit_adapters"):
        raise LorakitError(f"{generator.folder} is a full or merged model, not an adapter; --no-adapter needs one")
    base_only = disable_adapter(generator.model) if args.no_adapter else contextlib.nullcontext()
    with base_only:
        for prompt in prompts:
            text = prompt if args.raw else prompt_text(tokenizer, user_messages(prompt, system), generator.kind)
            streamer = None if args.json else TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
            (completion,) = generate_batch(
                generator.model,
                tokenizer,
                [text],
                max_new_tokens,
                seq2seq=seq2seq,
                temperature=args.temperature,
                top_p=args.top_p,
                top_k=args.top_k,
                streamer=streamer,
            )
            if args.json:
                print(json.dumps({"prompt": prompt, "completion": completion}, ensure_ascii=False))
            sys.stdout.flush()
    return 0


def _stdin_prompts() -> list[str]:
    if sys.stdin.isatty():
        return []
    return stdin_lines()
