r"""Combine adapters already on a model into a new adapter (PEFT's `add_weighted_adapter`).

Adapters i = 1..n with weights w_i, scalings s_i and, on one layer, A_i (r_i × in), B_i (out × r_i):

    linear   A = Σ sign(w_i·s_i)·sqrt(|w_i·s_i|)·A_i        B = Σ sqrt(|w_i·s_i|)·B_i       (all r_i equal)
             PEFT's method, bit for bit. B·A = Σ_i w_i·s_i·B_i·A_i plus the cross terms
             Σ_{i≠j} (…)·B_i·A_j: exact for one adapter, an approximation for several.
    cat      A = [w_1·s_1·A_1; …; w_n·s_n·A_n]  (Σ r_i × in)      B = [B_1 … B_n]  (out × Σ r_i)
             B·A = Σ_i w_i·s_i·B_i·A_i exactly, at rank Σ r_i.
    svd      Δ = Σ_i w_i·s_i·B_i·A_i  (out × in) = U·S·Vᵀ;  B = U_k·S_k,  A = V_kᵀ  (k = svd_rank)
             the best rank-k approximation of the exact sum (Eckart–Young); k defaults to the
             largest input rank. PEFT's method (its default), same numbers.

The new adapter has scaling 1 on every layer (lora_alpha = r, no rsLoRA): the weights and scalings
already live in A and B. Every layer gets the same rank r (the largest one any layer needs); a
layer that needs less is padded with zero rows of A / columns of B, which change nothing.
A layer that only some adapters target combines just those.

Where lorakit differs from PEFT, on purpose:
- Heads and other modules to save: PEFT refuses two adapters that both train one (a classifier
  head, say), and gives the new adapter the *untrained* original module when only one does.
  lorakit averages the trained copies with weights w_i / Σ w_j (for weights that sum to 1, the
  plain weighted sum), and refuses when only some of the adapters train that module.
- rsLoRA inputs: PEFT keeps `use_rslora` on the new adapter, so its outputs come out sqrt(r)
  times too large; lorakit always writes scaling 1.
- lora_B biases (`lora_bias=True`) are combined exactly, Σ w_i·s_i·b_i; PEFT drops them.
- Adapters that train base biases (`bias="all"` / `"lora_only"`) are refused: all adapters on one
  model share the base biases, so there is nothing to combine.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from lorakit.errors import LorakitError, option_name
from lorakit.lora.config import LoraConfig
from lorakit.lora.inject import adapter_state, check_new_adapter_name, inject_adapter
from lorakit.lora.layer import LoraLinear, ModulesToSave

METHODS = ("linear", "svd", "cat")
# The fields that decide which layers an adapter targets.
_TARGETING = ("target_modules", "exclude_modules", "layers_to_transform", "layers_pattern")


@dataclasses.dataclass
class _Factors:
    """One layer of the new adapter before padding: A (k × in), B (out × k), B's bias or None."""

    lora_A: torch.Tensor
    lora_B: torch.Tensor
    bias: torch.Tensor | None


def combine_adapters(
    model: nn.Module,
    adapters: Sequence[str],
    weights: Sequence[float],
    new_name: str,
    method: str = "linear",
    svd_rank: int | None = None,
) -> None:
    """Add adapter `new_name` to `model`: the weighted combination of `adapters` (see the module
    docstring for each method's math). Like PEFT, the new adapter is not made active: call
    `set_adapter(model, new_name)` to use it. Its parameters are frozen.

    Raises:
        LorakitError: an unknown adapter or method, weights that do not match the adapters,
            unequal ranks for "linear", adapters with different task types or trained base
            biases, a head that only some adapters train, a taken `new_name`.
    """
    state = adapter_state(model)
    adapters, weights = list(adapters), _check_weights(weights, len(adapters))
    _check_request(state.configs, adapters, method, svd_rank)
    check_new_adapter_name(model, new_name)
    configs = [state.configs[name] for name in adapters]
    _check_configs(adapters, configs)

    layers = {
        path: module
        for path, module in model.named_modules()
        if isinstance(module, LoraLinear) and any(name in module.lora_A for name in adapters)
    }
    if svd_rank is None:
        svd_rank = max(module.rank(name) for module in layers.values() for name in adapters if name in module.lora_A)
    factors = {
        path: _combine_layer(path, module, adapters, weights, method, svd_rank) for path, module in layers.items()
    }
    heads = _combine_heads(model, adapters, weights)

    rank = max(f.lora_A.shape[0] for f in factors.values())
    config = _combined_config(configs, rank, list(layers), any(f.bias is not None for f in factors.values()))
    inject_adapter(model, config, new_name, list(layers), list(heads))
    with torch.no_grad():
        for path, found in factors.items():
            module = layers[path]
            _copy_padded(module.lora_A[new_name].weight, found.lora_A)
            _copy_padded(module.lora_B[new_name].weight, found.lora_B)
            bias = module.lora_B[new_name].bias
            if bias is not None and found.bias is not None:
                bias.copy_(found.bias)
            elif bias is not None:  # no adapter on this layer has one: zero, not nn.Linear's random init
                bias.zero_()
            module.lora_A[new_name].requires_grad_(False)
            module.lora_B[new_name].requires_grad_(False)
        for path, head_state in heads.items():
            copy = model.get_submodule(path).modules_to_save[new_name]
            copy.load_state_dict(head_state)
            copy.requires_grad_(False)


def _check_weights(weights: Sequence[float], count: int) -> list[float]:
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise LorakitError(f"weights must be numbers, got {list(weights)!r}") from None
    if len(values) != count:
        raise LorakitError(f"got {len(values)} weights for {count} adapters; give one weight per adapter")
    if not all(math.isfinite(w) for w in values):
        raise LorakitError(f"weights must be finite numbers, got {values}")
    return values


def _check_request(configs: dict[str, LoraConfig], adapters: list[str], method: str, svd_rank: int | None) -> None:
    if not adapters:
        raise LorakitError("name at least one adapter to combine")
    missing = [name for name in adapters if name not in configs]
    if missing:
        raise LorakitError(f"no adapter named {missing[0]!r}; this model has {', '.join(map(repr, configs))}")
    if method not in METHODS:
        raise LorakitError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if svd_rank is not None:
        if method != "svd":
            raise LorakitError(f"svd_rank only applies to method 'svd', not {method!r}")
        if isinstance(svd_rank, bool) or not isinstance(svd_rank, int) or svd_rank <= 0:
            raise LorakitError(f"{option_name('svd_rank')} must be a positive integer, got {svd_rank!r}")


def _check_configs(adapters: list[str], configs: list[LoraConfig]) -> None:
    for name, config in zip(adapters, configs, strict=True):
        if config.bias != "none":
            raise LorakitError(
                f"adapter {name!r} trains base biases (bias={config.bias!r}), which every adapter on a model "
                "shares; only adapters with bias='none' can be combined"
            )
    task_types = {config.task_type for config in configs}
    if len(task_types) > 1:
        raise LorakitError(f"the adapters have different task types ({', '.join(sorted(map(str, task_types)))})")


def _combine_layer(
    path: str, module: LoraLinear, adapters: list[str], weights: list[float], method: str, svd_rank: int
) -> _Factors:
    """The new A, B (and B's bias) of one layer, in fp32, from the adapters present on it."""
    present = [(name, w) for name, w in zip(adapters, weights, strict=True) if name in module.lora_A]
    lora_A = [module.lora_A[name].weight.detach().float() for name, _ in present]
    lora_B = [module.lora_B[name].weight.detach().float() for name, _ in present]
    # w_i·s_i: how much of B_i·A_i goes into the sum.
    factors = [w * module.scaling[name] for name, w in present]
    if method == "linear":
        ranks = {a.shape[0] for a in lora_A}
        if len(ranks) > 1:
            described = ", ".join(f"{name!r} r={a.shape[0]}" for (name, _), a in zip(present, lora_A, strict=True))
            raise LorakitError(
                f"method 'linear' needs equal ranks, but module {path!r} has {described}; use method 'svd' or 'cat'"
            )
        # sign on A only: sqrt(|f|)·sign(f) · sqrt(|f|) = f.
        a_weights = [math.sqrt(abs(f)) * (1 if f >= 0 else -1) for f in factors]
        b_weights = [math.sqrt(abs(f)) for f in factors]
        new_A, new_B = _weighted_sum(lora_A, a_weights), _weighted_sum(lora_B, b_weights)
    elif method == "cat":
        new_A = torch.cat([a * f for a, f in zip(lora_A, factors, strict=True)], dim=0)
        new_B = torch.cat(lora_B, dim=1)
    else:
        delta = _weighted_sum(
            [(b @ a) * module.scaling[name] for (name, _), a, b in zip(present, lora_A, lora_B, strict=True)],
            [w for _, w in present],
        )
        U, S, Vh = torch.linalg.svd(delta, full_matrices=False)
        k = min(svd_rank, S.shape[0])
        new_B, new_A = U[:, :k] @ torch.diag(S[:k]), Vh[:k, :]
    biases = [
        (module.lora_B[name].bias.detach().float(), f)
        for (name, _), f in zip(present, factors, strict=True)
        if module.lora_B[name].bias is not None
    ]
    bias = _weighted_sum([b for b, _ in biases], [f for _, f in biases]) if biases else None
    return _Factors(new_A, new_B, bias)


def _weighted_sum(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ w_i·t_i, computed as PEFT's task_arithmetic does (stacked, fp32 weights) so results match it."""
    stacked = torch.stack(tensors, dim=0)
    scale = torch.tensor(weights, dtype=stacked.dtype).view(-1, *([1] * (stacked.ndim - 1)))
    return (stacked * scale).sum(dim=0)


def _combine_heads(model: nn.Module, adapters: list[str], weights: list[float]) -> dict[str, dict[str, torch.Tensor]]:
    """Module path → state dict of the new trained copy: Σ (w_i / Σ w_j)·copy_i, for every module
    to save that the adapters train (all of them, or none)."""
    heads = {}
    for path, wrapper in model.named_modules():
        if not isinstance(wrapper, ModulesToSave):
            continue
        having = [name for name in adapters if name in wrapper.modules_to_save]
        if not having:
            continue
        if len(having) < len(adapters):
            lacking = next(name for name in adapters if name not in having)
            raise LorakitError(
                f"adapter {having[0]!r} trains module {path!r} (a head or module to save) but {lacking!r} does not; "
                "combine adapters that train the same modules"
            )
        total = sum(weights)
        if total == 0:
            raise LorakitError(
                f"the weights sum to 0, so the trained copies of {path!r} cannot be averaged; "
                "use weights with a non-zero sum"
            )
        states = [wrapper.modules_to_save[name].state_dict() for name in adapters]
        combined = {}
        for key, first in states[0].items():
            if first.is_floating_point():
                combined[key] = _weighted_sum([s[key].float() for s in states], [w / total for w in weights]).to(
                    first.dtype
                )
            else:
                if any(not torch.equal(s[key], first) for s in states[1:]):
                    raise LorakitError(f"the adapters' copies of {path!r} differ in {key!r}, which cannot be averaged")
                combined[key] = first.clone()
        heads[path] = combined
    return heads


def _combined_config(configs: list[LoraConfig], rank: int, layers: list[str], lora_bias: bool) -> LoraConfig:
    """The first adapter's config at rank `rank` with scaling 1, targeting exactly `layers`."""
    first = configs[0]
    same_targets = all(
        all(getattr(config, field) == getattr(first, field) for field in _TARGETING) for config in configs
    )
    targeting = {} if same_targets else {"target_modules": layers, **dict.fromkeys(_TARGETING[1:])}
    return dataclasses.replace(
        first,
        r=rank,
        lora_alpha=rank,
        use_rslora=False,
        rank_pattern={},
        alpha_pattern={},
        lora_bias=lora_bias,
        init_lora_weights=False,
        **targeting,
    )


def _copy_padded(destination: torch.Tensor, values: torch.Tensor) -> None:
    """Copy `values` into the top-left corner of `destination`; the rest is zero."""
    destination.zero_()
    destination[: values.shape[0], : values.shape[1]].copy_(values)
