"""The LoRA term of a mixed batch: gather + bmm and the fused decode kernel agree, and a kernel
that cannot compile falls back without failing the batch."""

from __future__ import annotations

import pytest
import torch

from lorakit.serve.kernels import bgmv
from lorakit.serve.kernels.slots import PackedLora


def stacks(slots: int, r: int, features_in: int, features_out: int, dtype=torch.float32, bias: bool = False):
    generator = torch.Generator().manual_seed(0)
    A = torch.randn(slots, r, features_in, generator=generator).to(dtype)
    B = torch.randn(slots, r, features_out, generator=generator).to(dtype)
    A[0], B[0] = 0, 0  # the zero slot
    return PackedLora(A, B, torch.randn(slots, features_out, generator=generator).to(dtype) if bias else None)


def reference(x: torch.Tensor, packed: PackedLora, slot: torch.Tensor) -> torch.Tensor:
    """Row by row, in float64: x_i·A_iᵀ·B_i (+ bias_i)."""
    rows = []
    for i, s in enumerate(slot.tolist()):
        row = x[i].double() @ packed.A[s].double().T @ packed.B[s].double()
        rows.append(row + (packed.bias[s].double() if packed.bias is not None else 0))
    return torch.stack(rows)


@pytest.mark.parametrize("tokens", [1, 5])
@pytest.mark.parametrize("bias", [False, True])
def test_both_paths_equal_row_by_row_products(tokens: int, bias: bool) -> None:
    packed = stacks(5, 4, 24, 40, bias=bias)
    slot = torch.tensor([3, 0, 1, 3, 4, 2])
    x = torch.randn(len(slot), tokens, 24)
    result = torch.zeros(len(slot), tokens, 40)
    with torch.no_grad():
        bgmv.add_lora_delta_(result, x, packed, slot)
    expected = reference(x, packed, slot)
    torch.testing.assert_close(result.double(), expected, atol=1e-4, rtol=1e-4)
    assert not result[1].any() or bias  # the zero slot adds nothing


@pytest.mark.parametrize("tokens", [1, 5])
def test_rows_sharing_one_adapter_take_the_plain_lora_path(tokens: int) -> None:
    packed = stacks(4, 4, 24, 40, bias=True)
    slot = torch.tensor([2, 2, 2])
    x = torch.randn(3, tokens, 24)
    result = torch.zeros(3, tokens, 40)
    with torch.no_grad():
        bgmv.add_lora_delta_(result, x, packed, slot, shared_slot=2)
    torch.testing.assert_close(result.double(), reference(x, packed, slot), atol=1e-4, rtol=1e-4)


def test_fused_decode_matches_gather_bmm_in_bf16() -> None:
    packed = stacks(9, 8, 64, 96, dtype=torch.bfloat16)
    slot = torch.tensor([8, 1, 1, 0, 5, 3, 2, 7])
    x = torch.randn(len(slot), 64, dtype=torch.bfloat16)
    with torch.no_grad():
        fused = bgmv._fused_decode(x, packed.A, packed.B, slot)
    assert fused is not None and fused.dtype == torch.float32
    torch.testing.assert_close(fused, bgmv.decode_delta(x, packed.A, packed.B, slot), atol=1e-3, rtol=1e-3)
    gathered = torch.zeros(len(slot), 1, 96, dtype=torch.float32)
    bgmv._gather_bmm_(gathered, x.float().unsqueeze(1), PackedLora(packed.A.float(), packed.B.float(), None), slot)
    torch.testing.assert_close(fused, gathered[:, 0], atol=1e-3, rtol=1e-3)


def test_a_kernel_that_fails_to_compile_falls_back_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("no C++ compiler\nmore detail")

    monkeypatch.setitem(bgmv._fused, "kernel", broken)
    packed = stacks(3, 2, 8, 8)
    slot = torch.tensor([1, 2])
    x = torch.randn(2, 1, 8)
    with torch.no_grad(), caplog.at_level("WARNING", logger="lorakit.serve"):
        first = bgmv.add_lora_delta_(torch.zeros(2, 1, 8), x, packed, slot)
        second = bgmv.add_lora_delta_(torch.zeros(2, 1, 8), x, packed, slot)
    assert len(calls) == 1 and bgmv._fused["kernel"] is None
    assert "could not compile (RuntimeError: no C++ compiler)" in caplog.text
    torch.testing.assert_close(first.double(), reference(x, packed, slot), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(first, second)


def test_compiling_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAKIT_COMPILE", "0")
    monkeypatch.delitem(bgmv._fused, "kernel", raising=False)
    packed = stacks(3, 2, 8, 8)
    assert bgmv._fused_decode(torch.randn(2, 8), packed.A, packed.B, torch.tensor([1, 2])) is None
    monkeypatch.delitem(bgmv._fused, "kernel")  # the next test compiles again
