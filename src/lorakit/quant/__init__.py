"""4-bit quantized base weights for QLoRA: NF4 via torchao (CPU and CUDA) or bitsandbytes (CUDA)."""

from lorakit.quant.loading import load_nf4
from lorakit.quant.model import (
    OUTPUT_HEADS,
    QUANT_METHODS,
    dequantize_model,
    is_quantized,
    quantize_model,
    quantized_weight_bytes,
)
from lorakit.quant.nf4 import Nf4Linear

__all__ = [
    "OUTPUT_HEADS",
    "QUANT_METHODS",
    "Nf4Linear",
    "dequantize_model",
    "is_quantized",
    "load_nf4",
    "quantize_model",
    "quantized_weight_bytes",
]
