"""The NF4 layer on its own: block sizes, dequantization, forward/backward, dtype and device moves."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import NF4Tensor

from lorakit.quant.nf4 import Nf4Linear, dequantize_nf4, nf4_block_sizes, nf4_stored_bytes, quantize_nf4

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gaussian_linear(out_features: int, in_features: int, bias: bool = True, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    nn.init.normal_(linear.weight, std=0.02)  # pretrained weights are close to Gaussian: NF4's design case
    return linear


@pytest.mark.parametrize(
    ("shape", "sizes"),
    [
        ((576, 576), (64, 216)),  # SmolLM2 q/o_proj: 5184 blocks, which torchao's default 256 does not divide
        ((192, 576), (64, 216)),  # SmolLM2 k/v_proj
        ((1536, 576), (64, 256)),
        ((32, 32), (64, 16)),
        ((3, 7), None),
    ],
)
def test_block_sizes_divide_every_realistic_shape(shape: tuple[int, int], sizes: tuple[int, int] | None) -> None:
    assert nf4_block_sizes(shape[0] * shape[1]) == sizes
    weight = quantize_nf4(torch.randn(shape))
    assert (weight is None) == (sizes is None)


def test_dequantize_matches_torchao_and_stores_about_half_a_byte_per_value() -> None:
    original = gaussian_linear(576, 576).weight
    weight = quantize_nf4(original)
    assert isinstance(weight, NF4Tensor)
    fp32 = dequantize_nf4(weight, torch.float32)
    assert torch.equal(fp32, weight.get_original_weight())
    # Other dtypes round the fp32 values once: bf16 training computes with exactly what a bf16 export holds.
    assert torch.equal(dequantize_nf4(weight, torch.bfloat16), fp32.bfloat16())
    assert torch.equal(dequantize_nf4(weight, torch.float64), fp32.double())
    relative_error = ((fp32 - original).norm() / original.norm()).item()
    assert 0.05 < relative_error < 0.11  # measured 0.092: 16 levels per block of 64
    assert nf4_stored_bytes(weight) / (4 * original.numel()) < 0.13  # 0.5 + 1/64 bytes per value, + group factors


def test_forward_and_input_gradient_are_a_linear_with_the_dequantized_weight() -> None:
    linear = gaussian_linear(128, 256)
    layer = Nf4Linear.from_linear(linear)
    dense = nn.Linear(256, 128)
    dense.weight.data = dequantize_nf4(layer.weight, torch.float32)
    dense.bias.data = linear.bias.data.clone()
    x = torch.randn(3, 5, 256, requires_grad=True)
    y = layer(x)
    x_dense = x.detach().clone().requires_grad_(True)
    y_dense = dense(x_dense)
    assert torch.allclose(y, y_dense, atol=1e-6)
    grad = torch.randn_like(y)
    y.backward(grad)
    y_dense.backward(grad)
    assert torch.allclose(x.grad, x_dense.grad, atol=1e-6)
    assert layer.weight.grad is None and not layer.weight.requires_grad
    with torch.no_grad():
        exact = linear(x)
        assert ((y - exact).norm() / (exact - linear.bias).norm()).item() < 0.11  # measured ≈ 0.09


def test_bf16_autocast_runs_the_matmul_in_bf16() -> None:
    layer = Nf4Linear.from_linear(gaussian_linear(64, 128))
    x = torch.randn(4, 128, requires_grad=True)
    fp32 = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), fp32, atol=0.02, rtol=0.02)
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_model_to_dtype_keeps_nf4_storage_and_moves_follow_the_device() -> None:
    model = nn.Sequential(Nf4Linear.from_linear(gaussian_linear(64, 64)))
    stored = nf4_stored_bytes(model[0].weight)
    model.to(torch.bfloat16)  # would dequantize the weight into a full bf16 copy without Nf4Linear._apply
    assert isinstance(model[0].weight, NF4Tensor)
    assert nf4_stored_bytes(model[0].weight) == stored
    assert model[0].bias.dtype == torch.bfloat16
    assert model(torch.randn(2, 64, dtype=torch.bfloat16)).dtype == torch.bfloat16
    model.to("meta")  # a second device that every machine has
    assert model[0].weight.device.type == "meta" and model[0].weight.quantized_data.device.type == "meta"
    assert isinstance(model[0].weight, NF4Tensor)


@pytest.mark.parametrize("device", DEVICES)
def test_dequantize_returns_a_plain_linear_on_the_same_device(device: str) -> None:
    layer = Nf4Linear.from_linear(gaussian_linear(64, 128)).to(device)
    x = torch.randn(2, 128, device=device)
    dense = layer.dequantize(torch.float32)
    assert type(dense) is nn.Linear and dense.weight.device.type == device
    assert torch.allclose(dense(x), layer(x), atol=1e-6)
