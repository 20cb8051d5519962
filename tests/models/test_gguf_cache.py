"""The packaged SmolLM2 GGUF is converted once into lorakit's cache, without disturbing the run
that converts it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lorakit.models import PACKAGED_MODELS
from lorakit.models.gguf_cache import READY_MARKER, converted_folder
from lorakit.packages import package_dir

pytestmark = pytest.mark.packaged


def test_converting_leaves_torch_random_generator_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A run seeds torch, then converts on first use: its dropout masks must not depend on whether
    the cache was empty (they did: building the plain model drew its random init)."""
    monkeypatch.setenv("LORAKIT_CACHE", str(tmp_path))
    packaged = PACKAGED_MODELS["SmolLM2-135M-Instruct"]
    gguf_file = package_dir(packaged.package, packaged.requirement) / packaged.folder / packaged.gguf_file
    torch.manual_seed(7)
    expected = torch.rand(4)
    torch.manual_seed(7)
    folder = converted_folder("SmolLM2-135M-Instruct", gguf_file)
    assert torch.equal(torch.rand(4), expected)
    assert (folder / READY_MARKER).is_file() and folder.parent == tmp_path / "models"
    assert converted_folder("SmolLM2-135M-Instruct", gguf_file) == folder, "the second use reads the cache"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.num_hidden_layers == 30 and model.dtype == torch.float32
