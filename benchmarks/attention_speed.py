"""Training attention on CPU: SDPA's kernel against lorakit's grouped matmuls (train/attention.py).

One causal attention forward + backward in bf16 (fp32 with --fp32), head_dim 64, for shapes of
the models lorakit trains: SmolLM2-135M (9 query heads, 3 key/value heads), SmolLM2-360M (15/5)
and SmolLM2-1.7B (32/32). Best of `--repeats` after one warm-up; prints a markdown table with
the ratio SDPA time / matmul time (above 1: the matmuls win). Shapes at or below
`MATH_MAX_LENGTH` are the ones training sends to the matmuls.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/attention_speed.py [--repeats 5] [--fp32]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lorakit.train.attention import MATH_MAX_LENGTH, math_attention

# (batch, heads, kv heads, length): about 2,048-4,096 tokens a micro-batch, as training runs them.
SHAPES = [
    (16, 9, 3, 64),
    (16, 9, 3, 128),
    (16, 9, 3, 192),
    (16, 9, 3, 256),
    (4, 9, 3, 512),
    (2, 9, 3, 1024),
    (16, 15, 5, 128),
    (8, 15, 5, 256),
    (16, 32, 32, 64),
    (16, 32, 32, 128),
    (8, 32, 32, 256),
    (4, 32, 32, 512),
]


def seconds(attend, batch: int, heads: int, kv_heads: int, length: int, dtype: torch.dtype, repeats: int) -> float:
    """Best time of forward + backward of `attend(q, k, v)` on random tensors."""
    generator = torch.Generator().manual_seed(0)

    def tensor(count: int) -> torch.Tensor:
        return torch.randn(batch, count, length, 64, generator=generator).to(dtype).requires_grad_(True)

    query, key, value = tensor(heads), tensor(kv_heads), tensor(kv_heads)
    upstream = torch.randn(batch, heads, length, 64, generator=generator).to(dtype)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        attend(query, key, value).backward(upstream)
        times.append(time.perf_counter() - started)
    return min(times[1:])


def sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(query, key, value, is_causal=True, enable_gqa=query.shape[1] != key.shape[1])


def matmuls(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    return math_attention(query, key, value, None, True, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--fp32", action="store_true", help="fp32 instead of bf16")
    args = parser.parse_args()
    dtype = torch.float32 if args.fp32 else torch.bfloat16
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}; MATH_MAX_LENGTH {MATH_MAX_LENGTH}\n")
    print("| batch × heads (kv) × length | SDPA | matmuls | SDPA / matmuls | training uses |")
    print("|---|---|---|---|---|")
    for batch, heads, kv_heads, length in SHAPES:
        slow = seconds(sdpa, batch, heads, kv_heads, length, dtype, args.repeats)
        fast = seconds(matmuls, batch, heads, kv_heads, length, dtype, args.repeats)
        used = "matmuls" if length <= MATH_MAX_LENGTH else "SDPA"
        print(
            f"| {batch} × {heads} ({kv_heads}) × {length} | {slow * 1e3:.1f} ms | {fast * 1e3:.1f} ms "
            f"| {slow / fast:.2f}× | {used} |"
        )


if __name__ == "__main__":
    main()
