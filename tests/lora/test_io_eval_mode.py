"""load_adapter leaves the model in eval mode, without walking the whole model when it already is."""

from __future__ import annotations

from pathlib import Path

import torch

from lorakit.lora import LoraConfig, add_adapter, load_adapter, save_adapter
from tiny_models import tiny_bert


def test_loading_onto_an_eval_model_puts_only_the_new_modules_in_eval_mode(tmp_path: Path) -> None:
    config = LoraConfig(r=2, target_modules=["query", "value"], lora_dropout=0.5, task_type="SEQ_CLS")
    source = add_adapter(tiny_bert(), config, "a")
    save_adapter(source, tmp_path / "a", adapter_name="a")
    model = load_adapter(tiny_bert().eval(), tmp_path / "a", adapter_name="first")
    model = load_adapter(model, tmp_path / "a", adapter_name="second")
    assert not any(module.training for module in model.modules())  # dropout of "second" included
    batch = {"input_ids": torch.randint(4, 99, (2, 6))}
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, model(**batch).logits, atol=0, rtol=0)
    training = load_adapter(tiny_bert().train(), tmp_path / "a")
    assert not any(module.training for module in training.modules())
