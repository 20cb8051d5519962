"""Training text generators: causal-LM instruction tuning and seq2seq, scored by loss and perplexity.

Loss is the mean cross-entropy over response tokens only (prompt tokens carry label -100), and
perplexity = exp(loss). Validation loss picks the best weights. The report shows greedy
generations for a few held-out prompts from before training and after it, next to the data's
reference answer, with a word-overlap F1 against the reference to make "moved toward the data's
answers" a number rather than an impression.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.data.chat import CausalCollator, Seq2SeqCollator, pack_examples, tokenize_causal, tokenize_seq2seq
from lorakit.data.generative import GenerativeExample, load_generative_data
from lorakit.errors import LorakitError
from lorakit.models import load_model
from lorakit.report import html, plots
from lorakit.tasks.generation import generate_batch, labelled_logits, perplexity, prompt_text, response_loss
from lorakit.train.tasks.base import Task, TaskData


class CausalLMTask(Task):
    name = "causal-lm"
    peft_task_type = "CAUSAL_LM"
    # Label positions are predicted from the position before them.
    shift_labels = True
    evaluate_before_training = True

    def load_data(self, tokenizer: Any) -> TaskData:
        config = self.config
        data = load_generative_data(
            config.data,
            prompt_column=config.prompt_column,
            response_column=config.response_column,
            messages_column=config.messages_column,
            system_prompt=config.system_prompt,
            on_empty=config.on_empty,
            seed=config.seed,
            max_train_examples=config.max_train_examples,
        )
        raw = {"train": data.train, "validation": data.validation, "test": data.test}
        notes = list(data.notes)
        splits = {}
        for name, examples in raw.items():
            tokenized = [self.tokenize(tokenizer, example) for example in examples]
            kept = [(example, row) for example, row in zip(examples, tokenized, strict=True) if row is not None]
            if len(kept) < len(examples):
                notes.append(
                    f"{name}: dropped {len(examples) - len(kept)} examples whose response does not fit max_length"
                )
            if examples and not kept:
                raise LorakitError(
                    f"no {name} example fits max_length={config.max_length} with its whole response; raise --max-length"
                )
            raw[name] = [example for example, _ in kept]
            splits[name] = [row for _, row in kept]
        if self.config.packing:
            # Only training rows are packed: evaluation scores each example on its own.
            splits["train"] = pack_examples(splits["train"], config.max_length)
        self.test_examples = raw["test"]
        return TaskData(splits, raw, data.source, notes)

    def tokenize(self, tokenizer: Any, example: GenerativeExample) -> dict[str, list[int]] | None:
        return tokenize_causal(tokenizer, example, self.config.max_length)

    def collator(self, tokenizer: Any) -> Any:
        return CausalCollator(tokenizer, pad_to_multiple_of=8)

    def build_model(self) -> nn.Module:
        model = load_model(self.config.model, task_type=self.peft_task_type)
        # Training needs no KV cache, and packed rows are only kept apart without one (data/chat.py).
        model.config.use_cache = False
        return model

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's response tokens (what the model's own loss is), with
        logits computed at those positions only (see `labelled_logits`)."""
        logits, labels = labelled_logits(model, batch, self.shift_labels)
        return nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)

    def evaluate_shard(
        self, model: nn.Module, rows: list[dict[str, Any]], collate: Any, autocast: contextlib.AbstractContextManager
    ) -> tuple[float, int]:
        """Summed response-token cross-entropy and the number of response tokens in `rows`."""
        return response_loss(model, rows, collate, self.config.batch_size, self.shift_labels, autocast)

    def combine(self, parts: list[tuple[list[int], Any]], split: list[dict[str, Any]]) -> dict[str, Any]:
        loss_sum = sum(part[0] for _, part in parts)
        tokens = sum(part[1] for _, part in parts)
        loss = loss_sum / max(tokens, 1)
        return {"loss": loss, "perplexity": perplexity(loss), "tokens": tokens}

    def eval_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"loss": result["loss"], "perplexity": result["perplexity"]}

    def test_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        return {"loss": result["loss"], "perplexity": result["perplexity"], "test_tokens": result["tokens"]}

    def sample_metrics(self, before: list | None, after: list | None) -> dict[str, Any]:
        """Mean word F1 of the held-out generations against their references, before and after."""
        if not after:
            return {}
        return {"sample_f1_before": sample_f1(before), "sample_f1_after": sample_f1(after)}

    def model_info(self) -> dict[str, Any]:
        return {"system_prompt": self.config.system_prompt, "max_new_tokens": self.config.max_new_tokens}

    def samples(self, model: nn.Module, tokenizer: Any, autocast: contextlib.AbstractContextManager) -> list[dict]:
        """Greedy generations for the first `generation_samples` distinct test prompts, with their
        reference (a question asked several times in the data keeps its first answer)."""
        distinct = {}
        for example in self.test_examples:
            distinct.setdefault(repr(example.prompt_messages), example)
        examples = list(distinct.values())[: self.config.generation_samples]
        if not examples:
            return []
        prompts = [prompt_text(tokenizer, example.prompt_messages, self.name) for example in examples]
        with autocast:
            outputs = generate_batch(
                model, tokenizer, prompts, max_new_tokens=self.config.max_new_tokens, seq2seq=self.name == "seq2seq"
            )
        return [
            {
                "prompt": _last_user_turn(example),
                "reference": example.response,
                "generated": output,
                "f1": word_f1(output, example.response),
            }
            for example, output in zip(examples, outputs, strict=True)
        ]

    def write_report(
        self,
        run_dir: Path,
        metrics: dict[str, Any],
        history: dict[str, list],
        test: dict[str, Any],
        samples_before: list | None,
        samples_after: list | None,
    ) -> Path:
        generations = _pair_samples(samples_before, samples_after)
        if generations:
            (run_dir / "generations.json").write_text(json.dumps(generations, indent=2, ensure_ascii=False) + "\n")
        plot_dir = run_dir / "plots"
        images = {
            "Loss": plots.plot_loss_curves(history, plot_dir / "loss.png"),
            "Validation perplexity": plots.plot_metric_curve(history, "perplexity", plot_dir / "perplexity.png"),
        }
        return html.write_report(
            run_dir / "report.html",
            title=f"lorakit run {run_dir.name}",
            metrics=metrics,
            history=history,
            config=self.config.to_dict(),
            generations=generations,
            images=images,
        )


class Seq2SeqTask(CausalLMTask):
    name = "seq2seq"
    peft_task_type = "SEQ_2_SEQ_LM"
    # The decoder's logits are already aligned with the labels (teacher forcing shifts inside).
    shift_labels = False

    def tokenize(self, tokenizer: Any, example: GenerativeExample) -> dict[str, list[int]] | None:
        return tokenize_seq2seq(tokenizer, example, self.config.max_length, self.config.max_target_length)

    def collator(self, tokenizer: Any) -> Any:
        return Seq2SeqCollator(tokenizer, pad_to_multiple_of=8)

    def model_info(self) -> dict[str, Any]:
        return {**super().model_info(), "max_target_length": self.config.max_target_length}


def word_f1(prediction: str, reference: str) -> float:
    """SQuAD-style word-overlap F1: lower-cased words without punctuation, as multisets."""
    predicted, expected = _words(prediction), _words(reference)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def sample_f1(samples: list[dict] | None) -> float | None:
    """The mean word F1 of a list of samples, or None when there are none."""
    return round(sum(sample["f1"] for sample in samples) / len(samples), 4) if samples else None


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w\s]", " ", text.lower()).split()


def _last_user_turn(example: GenerativeExample) -> str:
    users = [m["content"] for m in example.prompt_messages if m["role"] == "user"]
    return users[-1] if users else ""


def _pair_samples(before: list | None, after: list | None) -> list[dict] | None:
    """One row per prompt: prompt, reference, the generation before training and after it."""
    if not after:
        return None
    before = before or [None] * len(after)
    return [
        {
            "prompt": new["prompt"],
            "reference": new["reference"],
            "before training": old["generated"] if old else "",
            "after training": new["generated"],
            "F1 before": old["f1"] if old else None,
            "F1 after": new["f1"],
        }
        for old, new in zip(before, after, strict=True)
    ]
