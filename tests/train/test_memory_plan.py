"""The memory planner: its parts, its choices under a budget, and its probe against real activations."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lorakit.errors import LorakitError
from lorakit.lora import LoraConfig, add_adapter
from lorakit.models.lm_loss import chunked_causal_lm_loss
from lorakit.quant import quantize_model, quantized_weight_bytes
from lorakit.report.humanize import parse_bytes
from lorakit.train.fast_paths import use_fast_paths
from lorakit.train.memory import (
    MIN_PIECE_TOKENS,
    UNCHECKED_MARGIN,
    Footprint,
    Setting,
    candidate_settings,
    choose_setting,
    estimate,
    model_footprint,
    sharded,
    unchecked_piece_tokens,
)

MiB = 2**20


def llama_config(**overrides) -> LlamaConfig:
    values = dict(
        vocab_size=512,
        hidden_size=128,
        intermediate_size=384,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        use_cache=False,
    )
    return LlamaConfig(**{**values, **overrides})


def lora() -> LoraConfig:
    return LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def footprint(**overrides) -> Footprint:
    values = dict(
        weights=100 * MiB,
        trainable=10 * MiB,
        loading=150 * MiB,
        layers=10,
        block_per_token=10_000,
        other_per_token=1_000,
        checkpoint_per_token=500,
        fixed_working=5 * MiB,
        checkpointable=True,
    )
    return Footprint(**{**values, **overrides})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4GiB", 4 * 2**30),
        ("512MiB", 512 * MiB),
        ("1.5G", int(1.5 * 2**30)),
        ("2048 M", 2048 * MiB),
        ("4 GB", 4 * 2**30),
        ("1000", 1000),
    ],
)
def test_sizes_parse(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["", "GiB", "-1G", "4Q", "four GiB", "0"])
def test_non_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_bytes(text)


def test_candidates_keep_the_effective_batch_largest_micro_batch_first() -> None:
    settings = candidate_settings(8, "auto", supported=True)
    assert [(s.micro_batch, s.checkpointing) for s in settings[:4]] == [(8, False), (8, True), (4, False), (4, True)]
    assert all(s.micro_batch * s.accumulation == 8 for s in settings)
    assert not any(s.checkpointing for s in candidate_settings(8, "auto", supported=False))
    assert all(s.checkpointing for s in candidate_settings(8, "on", supported=True))


def test_checkpointing_shrinks_the_estimate_and_tokens_scale_it() -> None:
    plain = estimate(footprint(), Setting(4, 1, False), row_tokens=256, baseline=0)
    checked = estimate(footprint(), Setting(4, 1, True), row_tokens=256, baseline=0)
    assert plain.tokens == checked.tokens == 1024
    assert plain.activations == 1024 * (10 * 10_000 + 1_000)
    assert checked.activations == 1024 * (10 * 500 + 1_000)
    assert checked.peak < plain.peak
    half = estimate(footprint(), Setting(2, 2, False), row_tokens=256, baseline=0)
    assert half.activations == plain.activations // 2


def test_a_budget_picks_the_first_setting_that_fits() -> None:
    requested = Setting(8, 1, False)
    needs = {s: estimate(footprint(), s, 256, 0).peak for s in candidate_settings(8, "auto", True)}
    budget = needs[Setting(4, 2, True)] + 1  # too small for micro-batch 8 even checkpointed? then 4 plain
    chosen = choose_setting(footprint(), requested, "auto", True, 256, 0, budget, generative=True)
    assert chosen.peak <= budget
    earlier = list(needs)[: list(needs).index(chosen.setting)]
    assert all(needs[s] > budget for s in earlier)


def test_an_impossible_budget_names_the_smallest_setting() -> None:
    with pytest.raises(LorakitError) as error:
        choose_setting(footprint(), Setting(8, 1, False), "auto", True, 256, 0, 1 * MiB, generative=True)
    message = str(error.value)
    assert "micro-batch 1 × 8, checkpointing on" in message and "--max-memory" in message
    assert "\n" not in message


def test_auto_checkpoints_generative_runs_when_activations_dominate() -> None:
    heavy = choose_setting(footprint(), Setting(16, 1, False), "auto", True, 512, 0, None, generative=True)
    assert heavy.setting.checkpointing
    light = choose_setting(footprint(block_per_token=10), Setting(16, 1, False), "auto", True, 16, 0, None, True)
    assert not light.setting.checkpointing
    classifier = choose_setting(footprint(), Setting(16, 1, False), "auto", True, 16, 0, None, generative=False)
    assert not classifier.setting.checkpointing
    off = choose_setting(footprint(), Setting(16, 1, False), "off", True, 512, 0, None, generative=True)
    assert not off.setting.checkpointing and off.setting.micro_batch == 16


def test_the_probe_predicts_what_a_deeper_model_saves() -> None:
    """The per-token figures measured on 1 and 2 blocks extrapolate to a 4-block model and a
    bigger batch of the same rows, set up as training sets it up (fast dropout, training
    attention): what its forward really saves for backward (counted the same way) within 5 %."""
    config = llama_config()
    measured_footprint = model_footprint(config, "CAUSAL_LM", lora(), "fp32", None, row_tokens=96)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    add_adapter(model, lora())
    use_fast_paths(model, fast_dropout=True)
    model.train()
    ids = torch.randint(1, 512, (2, 96))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.untyped_storage().data_ptr() not in parameters:
            seen[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked_causal_lm_loss(model, batch)
    predicted = estimate(measured_footprint, Setting(2, 1, False), row_tokens=96, baseline=0).activations
    assert abs(predicted - sum(seen.values())) <= 0.05 * sum(seen.values())


def test_weights_are_counted_as_quantization_stores_them() -> None:
    config = llama_config(hidden_size=256, intermediate_size=512)
    nf4 = model_footprint(config, "CAUSAL_LM", lora(), "fp32", "nf4")
    fp32 = model_footprint(config, "CAUSAL_LM", lora(), "fp32", None)
    bf16 = model_footprint(config, "CAUSAL_LM", lora(), "bf16", None)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    quantize_model(model, "nf4")
    stored = quantized_weight_bytes(model)
    others = sum(p.numel() * 4 for name, p in model.named_parameters() if "proj" not in name)
    assert nf4.weights == pytest.approx(stored["quantized_linear_bytes"] + others, rel=0.02)
    assert fp32.weights == pytest.approx(2 * bf16.weights, rel=0.001)
    # LoRA r=8 per block: q_proj A 8×256 + B 256×8, v_proj A 8×256 + B 128×8 (2 kv heads of 64);
    # AdamW keeps 16 bytes per trainable parameter.
    lora_params = 4 * (8 * 256 + 256 * 8 + 8 * 256 + 128 * 8)
    assert nf4.trainable == fp32.trainable == 16 * lora_params
    assert nf4.checkpointable and fp32.layers == 4


def test_auto_fits_what_the_machine_has_left() -> None:
    """Without a budget, a run whose estimate exceeds the available memory is fitted to it."""
    requested = Setting(16, 1, False)
    plain = choose_setting(footprint(), requested, "auto", True, 256, 0, None, generative=False)
    assert plain.setting == requested
    tight = choose_setting(footprint(), requested, "auto", True, 256, 0, None, False, available=plain.peak // 2)
    assert tight.peak <= plain.peak // 2 and tight.setting != requested
    assert tight.setting.micro_batch * tight.setting.accumulation == 16


def test_a_budget_gives_its_spare_room_to_unchecked_pieces() -> None:
    """A budget that leads to checkpointing: micro-batches run in unchecked pieces as large as the
    budget's room allows (with the margin, a multiple of 8), and the estimate still fits it."""
    checked = estimate(footprint(), Setting(16, 1, True), 512, 0)
    budget = checked.peak + 20 * MiB
    chosen = choose_setting(footprint(), Setting(16, 1, False), "auto", True, 512, 0, budget, True, pieces=None)
    size = chosen.setting.piece_tokens
    assert chosen.setting.checkpointing and chosen.setting.micro_batch == 16
    assert size == unchecked_piece_tokens(footprint(), budget - 100 * MiB - 10 * MiB)
    assert MIN_PIECE_TOKENS <= size < 16 * 512 and size % 8 == 0
    assert chosen.peak <= budget
    unchecked = estimate(footprint(), Setting(16, 1, False), row_tokens=size // 16, baseline=0)
    assert UNCHECKED_MARGIN * (unchecked.activations + unchecked.working) <= budget - 110 * MiB
    assert "unchecked pieces of ≤" in chosen.setting.describe() and "on for longer rows" in chosen.setting.describe()


def test_without_a_budget_or_room_there_are_no_pieces() -> None:
    auto = choose_setting(footprint(), Setting(16, 1, False), "auto", True, 512, 0, None, True, pieces=None)
    assert auto.setting.checkpointing and auto.setting.piece_tokens == 0
    # 16 rows of 16 tokens fit a budget just above their checkpointed need: pieces would be tiny.
    light = footprint(loading=0)  # so that the budget binds the training step, not loading
    budget = estimate(light, Setting(16, 1, True), 16, 0).peak + MiB
    tight = choose_setting(light, Setting(16, 1, False), "auto", True, 16, 0, budget, True, pieces=None)
    assert tight.setting.checkpointing and tight.setting.piece_tokens == 0


def test_given_pieces_apply_to_every_setting_and_shape_the_estimate() -> None:
    fixed = choose_setting(footprint(), Setting(16, 1, False), "off", True, 512, 0, None, True, pieces=1024)
    assert fixed.setting == Setting(16, 1, False, 1024)
    plain_piece = estimate(footprint(), Setting(2, 1, False), row_tokens=512, baseline=0)
    assert fixed.activations == int(UNCHECKED_MARGIN * plain_piece.activations) and fixed.tokens == 1024
    # Rows longer than the pieces run whole: the estimate is the larger of the two.
    longer = estimate(footprint(), Setting(16, 1, True, 256), row_tokens=512, baseline=0)
    checked = estimate(footprint(), Setting(16, 1, True), row_tokens=512, baseline=0)
    assert longer.activations + longer.working == checked.activations + checked.working


def test_a_sharded_rank_holds_its_share_of_the_weights() -> None:
    """FSDP over 4 ranks: a quarter of the weights and trainable state, plus two gathered blocks;
    loading still reads the whole checkpoint."""
    share = sharded(footprint(), 4)
    assert share.weights == 100 * MiB // 4 + 2 * (100 * MiB // 10)
    assert share.trainable == 10 * MiB // 4 and share.loading == footprint().loading
