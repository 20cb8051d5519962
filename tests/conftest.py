"""Shared test setup: expected third-party warnings, the tiny-architecture fixture."""

from __future__ import annotations

import os

# Tests never reach the Hugging Face Hub. Set before anything imports huggingface_hub, which
# reads the variable once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest

import lorakit  # noqa: F401 (first: it silences torchao's import-time noise before transformers loads it)
from tiny_models import ARCHS, Arch

# Expected PEFT noise: it switches GPT-2's Conv1D to fan_in_fan_out itself, and mistakes a 1-D
# lora_B.bias (lora_bias=True) for an unsharded ZeRO-3 tensor when saving.
EXPECTED_WARNINGS = [
    "ignore:fan_in_fan_out is set to False:UserWarning",
    "ignore:Adapter '.*'.* LoRA tensor.s. have invalid shape",
]


def pytest_configure(config: pytest.Config) -> None:
    for line in EXPECTED_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(params=sorted(ARCHS))
def arch(request: pytest.FixtureRequest) -> Arch:
    """Each tiny architecture in turn (BERT, GPT-2, Llama, T5); `arch.build(seed)` makes a fresh model."""
    return ARCHS[request.param]
