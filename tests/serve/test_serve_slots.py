"""Adapter slots: adapters packed once give the same mixed batches as packing per block, through
growth (more slots, a larger rank, a bias), removal and reuse of slots."""

from __future__ import annotations

import pytest
import torch
from serve_helpers import add_random_adapter
from test_serve_mixed import ROWS, classifier_with_adapters, llama_with_adapters, padded_batch, reference

from lorakit.errors import LorakitError
from lorakit.lora import delete_adapter
from lorakit.serve import AdapterSlots, mixed_adapters


def logits(model, rows, batch, slots=None) -> torch.Tensor:
    with torch.no_grad(), mixed_adapters(model, rows, slots):
        return model(**batch).logits


def test_slots_grown_one_adapter_at_a_time_match_each_adapter_alone() -> None:
    """capacity 1, adapters of rank 2, 4 (with lora_bias, more targets) then 8: every stack grows."""
    model = classifier_with_adapters()
    slots = AdapterSlots(model, capacity=1)
    assert [slots.add(name) for name in ("r2", "r4", "r8")] == [[1], [2], [3]]
    batch = padded_batch(len(ROWS), 9)
    mixed = logits(model, ROWS, batch, slots)
    with torch.no_grad():
        expected = reference(model, ROWS, lambda: model(**batch).logits)
    for i, name in enumerate(ROWS):
        torch.testing.assert_close(mixed[i], expected[i], atol=1e-5, rtol=1e-5, msg=f"row {i} ({name})")
    torch.testing.assert_close(mixed, logits(model, ROWS, batch), atol=1e-6, rtol=1e-6)


def test_causal_lm_generation_with_slots_matches_packing_per_block() -> None:
    model = llama_with_adapters()
    slots = AdapterSlots(model)
    assert slots.add("r8", "r4", "r2") == [1, 2, 3]  # not the rows' order of appearance
    batch = padded_batch(len(ROWS), 6)
    batch["attention_mask"] = batch["attention_mask"].flip(1)

    def generate(slots_or_none):
        with torch.no_grad(), mixed_adapters(model, ROWS, slots_or_none):
            return model.generate(**batch, max_new_tokens=6, do_sample=False, pad_token_id=0)

    assert generate(slots).tolist() == generate(None).tolist()


def test_removed_slots_are_zeroed_freed_and_reused() -> None:
    model = classifier_with_adapters()
    slots = AdapterSlots(model)
    for name in ("r2", "r4", "r8"):
        slots.add(name)
    before = slots.nbytes()
    slots.remove("r4")
    assert "r4" not in slots and len(slots) == 2
    # Layers only r4 targets (key, output.dense) have no stack left; q/v stacks keep r4's slot zeroed.
    query = "bert.encoder.layer.0.attention.self.query"
    packed = slots.packed(query, model.get_submodule(query))
    assert packed is not None and not packed.A[2].any() and not packed.B[2].any()
    assert slots.packed("bert.encoder.layer.0.attention.self.key", model.get_submodule(query)) is None
    with pytest.raises(LorakitError, match="'r4' has no slot"):
        logits(model, ["r4"], padded_batch(1, 4), slots)
    assert slots.add("r4") == [2]  # the freed slot
    assert slots.nbytes() == before
    batch = padded_batch(len(ROWS), 9)
    torch.testing.assert_close(logits(model, ROWS, batch, slots), logits(model, ROWS, batch), atol=1e-6, rtol=1e-6)


def test_adding_again_repacks_current_weights() -> None:
    model = classifier_with_adapters()
    slots = AdapterSlots(model)
    slots.add("r2")
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "lora_B") and "r2" in module.lora_B:
                module.lora_B["r2"].weight.mul_(3)
    batch = padded_batch(2, 5)
    stale = logits(model, ["r2", "r2"], batch, slots)
    fresh = logits(model, ["r2", "r2"], batch)
    assert not torch.allclose(stale, fresh, atol=1e-3)  # a snapshot, as documented
    slots.add("r2")
    torch.testing.assert_close(logits(model, ["r2", "r2"], batch, slots), fresh, atol=1e-6, rtol=1e-6)


def test_bf16_slots_under_autocast_match_each_adapter_alone() -> None:
    model = classifier_with_adapters()
    slots = AdapterSlots(model, dtype=torch.bfloat16)
    for name in ("r2", "r4", "r8"):
        slots.add(name)
    batch = padded_batch(len(ROWS), 9)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = logits(model, ROWS, batch, slots).float()
        expected = reference(model, ROWS, lambda: model(**batch).logits.float())
    for i in range(len(ROWS)):
        torch.testing.assert_close(mixed[i], expected[i], atol=5e-2, rtol=5e-2)


def test_slot_nbytes_counts_padding_to_the_layer_rank() -> None:
    model = classifier_with_adapters()
    slots = AdapterSlots(model)
    slots.add("r8")
    slots.add("r2")
    hidden, layers = model.config.hidden_size, model.config.num_hidden_layers
    # query and value in every layer, padded to rank 8: A (8, in) + B (8, out), fp32.
    assert slots.slot_nbytes("r2") == layers * 2 * (8 * hidden + 8 * hidden) * 4


def test_stale_or_foreign_slots_are_refused() -> None:
    model = classifier_with_adapters()
    slots = AdapterSlots(model)
    slots.add("r4")
    with pytest.raises(LorakitError, match="no adapter named 'nope'"):
        slots.add("nope")
    with pytest.raises(LorakitError, match="another model"):
        logits(classifier_with_adapters(), ["r4"], padded_batch(1, 4), slots)
    # r4 alone targets `key`: deleting it unwraps that layer, and loading it again wraps it afresh,
    # which slots packed before cannot know about.
    delete_adapter(model, "r4")
    add_random_adapter(model, "r4", 4, "SEQ_CLS", ["query", "key"], seed=5)
    with pytest.raises(LorakitError, match="out of date"):
        logits(model, ["r4"], padded_batch(1, 4), slots)
    slots.add("r4")
    batch = padded_batch(1, 4)
    torch.testing.assert_close(logits(model, ["r4"], batch, slots), logits(model, ["r4"], batch), atol=1e-6, rtol=1e-6)
