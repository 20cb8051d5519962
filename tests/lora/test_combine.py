"""`combine_adapters` against PEFT's `add_weighted_adapter`, and where lorakit does better on purpose.

Both libraries get the same two adapters (PEFT makes them, saves them, lorakit loads the files),
combine them with the same weights, and the new adapter's A and B, its saved files and the
model's outputs must agree. Methods that are exact (cat, full-rank svd) are also checked against
the weighted sum of the input deltas, Σ w_i·s_i·B_i·A_i.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import peft
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lorakit
from lorakit.errors import LorakitError
from lorakit.lora import LoraLinear, combine_adapters
from tiny_models import ARCHS, Arch, logits

PEFT_PREFIX = "base_model.model."
ATOL = 1e-6
WEIGHTS = [0.7, -0.4]  # a negative weight exercises the sign handling of "linear"
# Task types with no head to save, so PEFT accepts two adapters (it refuses two trained heads).
HEADLESS_TASKS = {"bert": None, "gpt2": "CAUSAL_LM", "llama": "CAUSAL_LM", "t5": "SEQ_2_SEQ_LM"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def peft_config(arch: Arch, seed_r: int, alpha: float, **overrides: Any) -> peft.LoraConfig:
    kwargs = {
        "r": seed_r,
        "lora_alpha": alpha,
        "target_modules": list(arch.targets),
        "task_type": HEADLESS_TASKS[arch.name],
        "init_lora_weights": False,
    }
    kwargs.update(overrides)
    return peft.LoraConfig(**kwargs)


def two_adapters(
    arch: Arch, tmp_path: Path, ranks: tuple[int, int] = (4, 4), **overrides: Any
) -> tuple[nn.Module, peft.PeftModel, nn.Module]:
    """(base, PEFT model with adapters first and second, lorakit model with the same two from PEFT's files)."""
    base = arch.build()
    torch.manual_seed(11)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft_config(arch, ranks[0], 8, **overrides), adapter_name="first")
    theirs.add_adapter("second", peft_config(arch, ranks[1], 16, **overrides))
    theirs.save_pretrained(tmp_path / "inputs")
    ours = copy.deepcopy(base)
    lorakit.load_adapter(ours, tmp_path / "inputs" / "first", adapter_name="first")
    lorakit.load_adapter(ours, tmp_path / "inputs" / "second", adapter_name="second")
    return base, theirs, ours


def new_adapter_tensors(model: nn.Module, name: str, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        key[len(prefix) :].replace(f".{name}.", "."): p.detach()
        for key, p in model.named_parameters()
        if f".lora_A.{name}." in key or f".lora_B.{name}." in key
    }


def peft_outputs(model: peft.PeftModel, adapter: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.set_adapter(adapter)
    return logits(model, batch)


def lorakit_outputs(model: nn.Module, adapter: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    lorakit.set_adapter(model, adapter)
    return logits(model, batch)


def exact_delta(layer: LoraLinear, adapters: list[str], weights: list[float]) -> torch.Tensor:
    """Σ w_i·s_i·B_i·A_i laid out like the base weight."""
    return sum(w * layer.delta_weight(name) for name, w in zip(adapters, weights, strict=True))


@pytest.mark.parametrize(
    ("method", "ranks"), [("linear", (4, 4)), ("svd", (4, 6)), ("cat", (4, 6))], ids=["linear", "svd", "cat"]
)
def test_same_new_adapter_and_outputs_as_peft(arch: Arch, method: str, ranks: tuple[int, int], tmp_path: Path) -> None:
    base, theirs, ours = two_adapters(arch, tmp_path, ranks)
    theirs.add_weighted_adapter(["first", "second"], WEIGHTS, "mix", combination_type=method)
    combine_adapters(ours, ["first", "second"], WEIGHTS, "mix", method=method)

    expected = new_adapter_tensors(theirs, "mix", PEFT_PREFIX)
    actual = new_adapter_tensors(ours, "mix")
    assert sorted(actual) == sorted(expected)
    for key, tensor in expected.items():
        # SVD factors are unique only up to the sign of each singular pair; LAPACK picks the same
        # ones for the same matrix, so they are compared as they are.
        torch.testing.assert_close(actual[key], tensor, atol=1e-5 if method == "svd" else ATOL, rtol=0, msg=key)

    batch = arch.inputs()
    out = lorakit_outputs(ours, "mix", batch)
    torch.testing.assert_close(out, peft_outputs(theirs, "mix", batch), atol=1e-5, rtol=0)
    assert (out - logits(base, batch)).abs().max() > 1e-4, "the combined adapter should change the output"

    theirs.save_pretrained(tmp_path / "peft", selected_adapters=["mix"])
    lorakit.save_adapter(ours, tmp_path / "lorakit", "mix")
    peft_files = load_file(tmp_path / "peft" / "mix" / "adapter_model.safetensors")
    ours_files = load_file(tmp_path / "lorakit" / "adapter_model.safetensors")
    assert sorted(ours_files) == sorted(peft_files)
    peft_json = json.loads((tmp_path / "peft" / "mix" / "adapter_config.json").read_text())
    ours_json = json.loads((tmp_path / "lorakit" / "adapter_config.json").read_text())
    assert (ours_json["r"], ours_json["lora_alpha"]) == (peft_json["r"], peft_json["lora_alpha"])
    # And PEFT runs lorakit's file as lorakit runs it.
    reloaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "lorakit")
    torch.testing.assert_close(logits(reloaded, batch), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["cat", "svd"])
def test_exact_methods_equal_the_weighted_sum_of_deltas(method: str, tmp_path: Path) -> None:
    """cat, and svd at full rank (4 + 6), reproduce Σ w_i·s_i·B_i·A_i — with rsLoRA scalings too."""
    _, _, ours = two_adapters(ARCHS["llama"], tmp_path, (4, 6), use_rslora=True)
    combine_adapters(ours, ["first", "second"], WEIGHTS, "mix", method=method, svd_rank=10 if method == "svd" else None)
    layers = [m for m in ours.modules() if isinstance(m, LoraLinear)]
    assert layers
    for layer in layers:
        assert layer.scaling["mix"] == 1.0 and layer.rank("mix") == 10
        torch.testing.assert_close(
            layer.delta_weight("mix"), exact_delta(layer, ["first", "second"], WEIGHTS), atol=1e-5, rtol=0
        )


def test_peft_rslora_combination_is_off_by_sqrt_r_and_lorakit_is_not(tmp_path: Path) -> None:
    """PEFT keeps use_rslora on the new adapter (scaling r/sqrt(r)); one adapter with weight 1 must
    reproduce itself, and in lorakit it does."""
    arch = ARCHS["llama"]
    _, theirs, ours = two_adapters(arch, tmp_path, (4, 4), use_rslora=True)
    theirs.add_weighted_adapter(["first"], [1.0], "same", combination_type="linear")
    combine_adapters(ours, ["first"], [1.0], "same")
    batch = arch.inputs()
    original = lorakit_outputs(ours, "first", batch)
    torch.testing.assert_close(lorakit_outputs(ours, "same", batch), original, atol=1e-5, rtol=0)
    assert (peft_outputs(theirs, "same", batch) - original).abs().max() > 1e-3


def test_trained_heads_are_averaged_where_peft_refuses(tmp_path: Path) -> None:
    arch = ARCHS["bert"]
    _, theirs, ours = two_adapters(arch, tmp_path, (4, 4), task_type="SEQ_CLS")
    with pytest.raises(ValueError, match="modules_to_save"):
        theirs.add_weighted_adapter(["first", "second"], [1.0, 3.0], "mix", combination_type="linear")
    heads = ours.classifier.modules_to_save
    with torch.no_grad():  # PEFT's heads start as copies of one module: make them differ
        heads["first"].weight.add_(1.0)
        heads["second"].weight.sub_(1.0)
    combine_adapters(ours, ["first", "second"], [1.0, 3.0], "mix")
    expected = {
        k: 0.25 * heads["first"].state_dict()[k] + 0.75 * heads["second"].state_dict()[k] for k in ("weight", "bias")
    }
    for key, value in expected.items():
        torch.testing.assert_close(heads["mix"].state_dict()[key], value, atol=ATOL, rtol=0)
    assert not any(p.requires_grad for n, p in ours.named_parameters() if ".mix." in n)
    assert lorakit.list_adapters(ours) == ["first", "second", "mix"] and lorakit.adapter_state_dict(ours, "mix")


def test_lora_b_biases_combine_exactly(tmp_path: Path) -> None:
    _, _, ours = two_adapters(ARCHS["gpt2"], tmp_path, (4, 6), lora_bias=True)
    combine_adapters(ours, ["first", "second"], WEIGHTS, "mix", method="cat")
    for layer in (m for m in ours.modules() if isinstance(m, LoraLinear)):
        pairs = zip(["first", "second"], WEIGHTS, strict=True)
        expected = sum(w * layer.scaling[n] * layer.lora_B[n].bias for n, w in pairs)
        torch.testing.assert_close(layer.lora_B["mix"].bias, expected, atol=ATOL, rtol=0)


def test_a_layer_without_lora_b_bias_gets_a_zero_one() -> None:
    model = ARCHS["llama"].build()
    config = dict(r=4, lora_alpha=8, task_type="CAUSAL_LM", init_lora_weights=False)
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["q_proj"], lora_bias=True, **config), "first")
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["v_proj"], **config), "second")
    combine_adapters(model, ["first", "second"], [1.0, 1.0], "mix", method="cat")
    layers = {n.rsplit(".", 1)[-1]: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert torch.count_nonzero(layers["v_proj"].lora_B["mix"].bias) == 0
    torch.testing.assert_close(
        layers["q_proj"].lora_B["mix"].bias, layers["q_proj"].scaling["first"] * layers["q_proj"].lora_B["first"].bias
    )


def test_layers_targeted_by_only_some_adapters_combine_those(tmp_path: Path) -> None:
    arch = ARCHS["llama"]
    base = arch.build()
    model = copy.deepcopy(base)
    torch.manual_seed(3)
    config = dict(r=4, lora_alpha=8, task_type="CAUSAL_LM", init_lora_weights=False)
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["q_proj"], **config), "first")
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["q_proj", "v_proj"], **config), "second")
    combine_adapters(model, ["first", "second"], WEIGHTS, "mix", method="cat")
    saved = lorakit.adapter_state_dict(model, "mix")
    v_proj = next(m for n, m in model.named_modules() if n.endswith("0.self_attn.v_proj"))
    q_proj = next(m for n, m in model.named_modules() if n.endswith("0.self_attn.q_proj"))
    # v_proj only has b: its half of the rank-8 adapter is zero padding.
    torch.testing.assert_close(
        v_proj.delta_weight("mix"), WEIGHTS[1] * v_proj.delta_weight("second"), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        q_proj.delta_weight("mix"), exact_delta(q_proj, ["first", "second"], WEIGHTS), atol=1e-6, rtol=0
    )
    lorakit.save_adapter(model, tmp_path / "mix", "mix")
    assert json.loads((tmp_path / "mix" / "adapter_config.json").read_text())["r"] == 8
    reloaded = lorakit.load_adapter(copy.deepcopy(base), tmp_path / "mix")
    batch = arch.inputs()
    torch.testing.assert_close(logits(reloaded, batch), lorakit_outputs(model, "mix", batch), atol=1e-5, rtol=0)
    assert len(saved) == 8  # q and v in two layers, A and B each


@pytest.mark.parametrize(
    ("call", "message"),
    [
        ({"adapters": ["first", "nope"]}, "no adapter named 'nope'"),
        ({"weights": [1.0]}, "got 1 weights for 2 adapters"),
        ({"weights": [1.0, float("nan")]}, "finite"),
        ({"method": "ties"}, "method must be one of linear, svd, cat"),
        ({"new_name": "first"}, "already exists"),
        ({"svd_rank": 4}, "svd_rank only applies to method 'svd'"),
        ({"method": "svd", "svd_rank": 0}, "svd_rank must be a positive integer"),
        ({"adapters": []}, "at least one adapter"),
    ],
)
def test_bad_requests_are_refused(call: dict[str, Any], message: str, tmp_path: Path) -> None:
    _, _, ours = two_adapters(ARCHS["llama"], tmp_path)
    kwargs = {"adapters": ["first", "second"], "weights": [0.5, 0.5], "new_name": "mix", "method": "linear", **call}
    if call.get("adapters") == []:
        kwargs["weights"] = []
    with pytest.raises(LorakitError, match=message):
        combine_adapters(ours, **kwargs)
    assert lorakit.list_adapters(ours) == ["first", "second"]


def test_unequal_ranks_need_svd_or_cat(tmp_path: Path) -> None:
    _, _, ours = two_adapters(ARCHS["llama"], tmp_path, (4, 6))
    with pytest.raises(LorakitError, match=r"needs equal ranks.*'first' r=4, 'second' r=6.*use method 'svd' or 'cat'"):
        combine_adapters(ours, ["first", "second"], [0.5, 0.5], "mix")
    assert "mix" not in lorakit.list_adapters(ours)


def test_base_bias_adapters_and_partial_heads_are_refused(tmp_path: Path) -> None:
    model = ARCHS["bert"].build()
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["query"], task_type="SEQ_CLS"), "with_head")
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["query"]), "no_head")
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["query"], bias="all"), "biased")
    with pytest.raises(LorakitError, match="different task types"):
        combine_adapters(model, ["with_head", "no_head"], [0.5, 0.5], "mix")
    with pytest.raises(LorakitError, match=r"trains base biases \(bias='all'\)"):
        combine_adapters(model, ["no_head", "biased"], [0.5, 0.5], "mix")
    lorakit.add_adapter(model, lorakit.LoraConfig(target_modules=["query"], modules_to_save=["pooler"]), "pooled")
    with pytest.raises(LorakitError, match=r"trains module 'bert\.pooler'.*'no_head' does not"):
        combine_adapters(model, ["pooled", "no_head"], [0.5, 0.5], "mix")
    with pytest.raises(LorakitError, match="weights sum to 0"):
        combine_adapters(model, ["pooled", "pooled"], [0.5, -0.5], "mix")
    assert "mix" not in lorakit.list_adapters(model)
