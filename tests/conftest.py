"""Shared test setup: expected third-party warnings, the tiny-architecture fixture, Hypothesis profiles.

The property-based tests (`test_*_fuzz.py`) run under the Hypothesis profile named by
`LORAKIT_HYPOTHESIS_PROFILE`: "ci" (the default) draws a modest, fixed set of examples (derandomized,
no example database), so every run tries the same inputs and a failure reproduces; "thorough" draws
many more, from fresh random seeds, for a local hunt before a release.
"""

from __future__ import annotations

import os

# Tests never reach the Hugging Face Hub. Set before anything imports huggingface_hub, which
# reads the variable once, at import.
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest
from hypothesis import HealthCheck, settings

import lorakit  # noqa: F401 (first: it silences torchao's import-time noise before transformers loads it)
from tiny_models import ARCHS, Arch

# Expected PEFT noise: it switches GPT-2's Conv1D to fan_in_fan_out itself, and mistakes a 1-D
# lora_B.bias (lora_bias=True) for an unsharded ZeRO-3 tensor when saving.
EXPECTED_WARNINGS = [
    "ignore:fan_in_fan_out is set to False:UserWarning",
    "ignore:Adapter '.*'.* LoRA tensor.s. have invalid shape",
]

# Generous to slow machines: examples write files and build frames, so no per-example deadline and
# no health check that fails a test for being slow or for drawing large inputs.
_RELAXED = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]
settings.register_profile(
    "ci", max_examples=200, deadline=None, derandomize=True, database=None, suppress_health_check=_RELAXED
)
settings.register_profile("thorough", max_examples=2_000, deadline=None, suppress_health_check=_RELAXED)
settings.load_profile(os.environ.get("LORAKIT_HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    for line in EXPECTED_WARNINGS:
        config.addinivalue_line("filterwarnings", line)


@pytest.fixture(params=sorted(ARCHS))
def arch(request: pytest.FixtureRequest) -> Arch:
    """Each tiny architecture in turn (BERT, GPT-2, Llama, T5); `arch.build(seed)` makes a fresh model."""
    return ARCHS[request.param]
