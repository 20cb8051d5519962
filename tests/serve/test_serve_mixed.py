"""Mixed-adapter batches: every row equals its adapter run alone on the same batch (set_adapter)."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import add_random_adapter

from lorakit.errors import LorakitError
from lorakit.lora import disable_adapter, merge_adapter, set_adapter, unmerge_adapter
from lorakit.serve.kernels.mixed import mixed_adapters, plan_rows
from tiny_models import VOCAB, tiny_bert, tiny_llama

ROWS = ["r2", None, "r4", "r8", "r2", None]
ONE_ADAPTER = ["r4"] * 4  # every row on one adapter: the plain LoRA path


def reference(model, rows, run) -> list[torch.Tensor]:
    """Row i of `run()` with the whole batch on `rows[i]`'s adapter (None: adapters disabled)."""
    outputs = {}
    for name in dict.fromkeys(rows):
        if name is None:
            with disable_adapter(model):
                outputs[None] = run()
        else:
            set_adapter(model, name)
            outputs[name] = run()
    return [outputs[name][i] for i, name in enumerate(rows)]


def classifier_with_adapters() -> torch.nn.Module:
    """tiny BERT with adapters of rank 2, 4 (more targets, lora_bias) and 8, each with its own head."""
    model = tiny_bert()
    add_random_adapter(model, "r2", 2, "SEQ_CLS", ["query", "value"], seed=1)
    add_random_adapter(model, "r4", 4, "SEQ_CLS", ["query", "key", "value", "output.dense"], seed=2, lora_bias=True)
    add_random_adapter(model, "r8", 8, "SEQ_CLS", ["query", "value"], seed=3)
    return model


def padded_batch(rows: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (rows, length), generator=generator)
    mask = torch.ones_like(ids)
    for i in range(1, rows, 2):
        mask[i, length - i :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_plan_rows_segments_rows_by_adapter() -> None:
    plan = plan_rows(["a", None, "b", "a"])
    assert plan.adapters == ("a", "b")
    assert plan.slot.tolist() == [1, 0, 2, 1]
    assert plan.shared_slot is None
    assert plan_rows(["b", "b"]).shared_slot == 1 and plan_rows([None, None]).shared_slot is None
    assert [(name, rows.tolist()) for name, rows in plan.groups] == [("a", [0, 3]), (None, [1]), ("b", [2])]


@pytest.mark.parametrize("rows", [ROWS, ONE_ADAPTER])
def test_classifier_rows_match_each_adapter_alone_fp32(rows: list[str | None]) -> None:
    model = classifier_with_adapters()
    batch = padded_batch(len(rows), 9)
    with torch.no_grad():
        with mixed_adapters(model, rows):
            mixed = model(**batch).logits
        expected = reference(model, rows, lambda: model(**batch).logits)
    for i, name in enumerate(rows):
        torch.testing.assert_close(mixed[i], expected[i], atol=1e-5, rtol=1e-5, msg=f"row {i} ({name})")
    # Rows on different adapters really differ: the test would catch rows swapped or ignored.
    assert not torch.allclose(expected[0], expected[2], atol=1e-3)
    with torch.no_grad(), disable_adapter(model):
        assert not torch.allclose(model(**batch).logits[0], mixed[0], atol=1e-3)  # the LoRA term counts


def test_classifier_rows_match_under_bf16_autocast() -> None:
    model = classifier_with_adapters()
    batch = padded_batch(len(ROWS), 9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with mixed_adapters(model, ROWS):
            mixed = model(**batch).logits.float()
        expected = reference(model, ROWS, lambda: model(**batch).logits.float())
    for i in range(len(ROWS)):
        torch.testing.assert_close(mixed[i], expected[i], atol=5e-2, rtol=5e-2)


@pytest.mark.parametrize("rows", [["r8", None, "r2"], ["r2", "r2"]])
def test_half_precision_base_keeps_fp32_adapters_as_the_core_does(rows: list[str | None]) -> None:
    """A bf16 base without autocast: the LoRA term runs in the adapters' fp32, the sum is cast back."""
    model = tiny_bert().to(torch.bfloat16)
    add_random_adapter(model, "r2", 2, "SEQ_CLS", ["query", "value"], seed=1)
    add_random_adapter(model, "r8", 8, "SEQ_CLS", ["query", "value"], seed=2)
    batch = padded_batch(len(rows), 6)
    with torch.no_grad():
        with mixed_adapters(model, rows):
            mixed = model(**batch).logits
        expected = reference(model, rows, lambda: model(**batch).logits)
    assert mixed.dtype == torch.bfloat16
    for i in range(len(rows)):
        torch.testing.assert_close(mixed[i], expected[i], atol=1e-2, rtol=1e-2)


def test_every_architecture_rows_match(arch) -> None:
    """BERT, GPT-2 (Conv1D), Llama and T5 (encoder and decoder rows) alike."""
    model = arch.build()
    add_random_adapter(model, "r2", 2, arch.task_type, arch.targets, seed=1)
    add_random_adapter(model, "r8", 8, arch.task_type, arch.targets, seed=2)
    rows = ["r8", None, "r2", "r8"]
    batch = padded_batch(len(rows), 6)
    if arch.name == "t5":
        batch["decoder_input_ids"] = padded_batch(len(rows), 4, seed=1)["input_ids"]
    with torch.no_grad():
        with mixed_adapters(model, rows):
            mixed = model(**batch).logits
        expected = reference(model, rows, lambda: model(**batch).logits)
    for i in range(len(rows)):
        torch.testing.assert_close(mixed[i], expected[i], atol=1e-5, rtol=1e-5)


def llama_with_adapters() -> torch.nn.Module:
    model = tiny_llama()
    add_random_adapter(model, "r2", 2, "CAUSAL_LM", ["q_proj", "v_proj"], seed=1)
    add_random_adapter(model, "r4", 4, "CAUSAL_LM", ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"], seed=2)
    add_random_adapter(model, "r8", 8, "CAUSAL_LM", ["q_proj", "v_proj"], seed=3)
    return model


def test_causal_lm_greedy_generate_with_kv_cache_matches_each_adapter_alone() -> None:
    model = llama_with_adapters()
    batch = padded_batch(len(ROWS), 6)
    # Left padding, as generation batches use.
    batch["attention_mask"] = batch["attention_mask"].flip(1)

    def generate():
        out = model.generate(
            **batch,
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            output_logits=True,
        )
        return list(zip(out.sequences, torch.stack(out.logits, dim=1), strict=True))

    with torch.no_grad():
        with mixed_adapters(model, ROWS):
            mixed = generate()
        expected = reference(model, ROWS, generate)
    for i in range(len(ROWS)):
        assert mixed[i][0].tolist() == expected[i][0].tolist()
        torch.testing.assert_close(mixed[i][1], expected[i][1], atol=1e-5, rtol=1e-5)
    assert len({tuple(sequence.tolist()) for sequence, _ in expected}) > 2


@pytest.mark.parametrize("settings", [{"num_beams": 2}, {"num_return_sequences": 2, "do_sample": True}])
def test_generate_that_expands_rows_is_refused(settings: dict) -> None:
    model = llama_with_adapters()
    batch = padded_batch(2, 5)
    with mixed_adapters(model, ["r2", "r8"]), pytest.raises(LorakitError, match="one sequence per row"):
        model.generate(**batch, max_new_tokens=2, pad_token_id=0, **settings)


def test_block_restores_the_model() -> None:
    model = classifier_with_adapters()
    set_adapter(model, "r4")
    batch = padded_batch(3, 5)
    with torch.no_grad():
        before = model(**batch).logits
        with mixed_adapters(model, ["r2", "r8", None]):
            model(**batch)
        after = model(**batch).logits
    torch.testing.assert_close(after, before, atol=0, rtol=0)
    assert not any("forward" in vars(module) for module in model.modules())


def test_unusable_states_are_refused() -> None:
    model = classifier_with_adapters()
    with pytest.raises(LorakitError, match="no adapter named 'nope'"):
        mixed_adapters(model, ["r2", "nope"]).__enter__()
    with mixed_adapters(model, ["r2"]), pytest.raises(LorakitError, match="cannot nest"):
        mixed_adapters(model, ["r8"]).__enter__()
    model.train()
    with pytest.raises(LorakitError, match=r"model\.eval\(\)"):
        mixed_adapters(model, ["r2"]).__enter__()
    model.eval()
    set_adapter(model, "r8")
    merge_adapter(model)
    with pytest.raises(LorakitError, match="merged"):
        mixed_adapters(model, ["r2"]).__enter__()
    unmerge_adapter(model)
    with pytest.raises(LorakitError, match="rows"), mixed_adapters(model, ["r2", "r8"]):
        model(**padded_batch(3, 5))
