"""Training text generators: causal-LM instruction tuning and seq2seq, scored by loss and perplexity.

Loss is the mean cross-entropy over response tokens only (prompt tokens carry label -100), and
perplexity = exp(loss). Validation loss picks the best weights. The report shows greedy
generations for a few held-out prompts from before training and after it, next to the data's
reference answer, with a word-overlap F1 against the reference to make "moved toward the data's
answers" a number rather than an impression.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from lorakit.data.chat import CausalCollator, Seq2SeqCollator, pack_examples, tokenize_causal, tokenize_seq2seq
from lorakit.data.generative import GenerativeExample, load_generative_data
from lorakit.errors import LorakitError
from lorakit.folders import write_text
from lorakit.inference.generation import generate_batch, labelled_logits, perplexity, prompt_text, response_loss
from lorakit.models import load_model
from lorakit.models.lm_loss import chunked_causal_lm_loss, supports_chunked_loss
from lorakit.report import html, plots
from lorakit.task_kind import TaskKind
from lorakit.train.tasks.base import Autocast, Collate, Outcome, Rows, Task, TaskData

# Packing fills rows but also changes what a step is (more examples per row); below a quarter of
# padding, length-grouped batches already spend nearly all their compute on real tokens.
PACK_ABOVE = 0.25


class GenerativeTask(Task):
    """What causal-LM and seq2seq training share: conversations in, response-token loss and
    perplexity out (the lower validation loss keeps the weights), generations in the report."""

    # Encoder-decoder models read the prompt in the encoder and align logits with labels
    # themselves; causal LMs predict the label at position t+1 from position t.
    encoder_decoder: ClassVar[bool]
    evaluate_before_training = True

    @abstractmethod
    def tokenize(self, tokenizer: Any, example: GenerativeExample) -> dict[str, list[int]] | None:
        """One example as model rows, or None when its response does not fit."""

    def load_data(self, tokenizer: Any) -> TaskData:
        """Conversations split into train/validation/test and tokenized; examples whose response
        does not fit max_length are dropped (with a note)."""
        data = load_generative_data(self.config.data, options=self.config.data_options())
        raw = data.splits()
        notes = list(data.notes)
        splits = {}
        for name, examples in raw.items():
            raw[name], splits[name] = self._fitting(tokenizer, name, examples, notes)
        splits["train"] = self.training_rows(splits["train"])
        return TaskData(splits, raw, data.source, notes)

    def _fitting(
        self, tokenizer: Any, split: str, examples: list[GenerativeExample], notes: list[str]
    ) -> tuple[list[GenerativeExample], list[dict[str, list[int]]]]:
        """The examples of `split` that fit, and their rows."""
        tokenized = [self.tokenize(tokenizer, example) for example in examples]
        kept = [(example, row) for example, row in zip(examples, tokenized, strict=True) if row is not None]
        if len(kept) < len(examples):
            notes.append(
                f"{split}: dropped {len(examples) - len(kept)} examples whose response does not fit max_length"
            )
        if examples and not kept:
            raise LorakitError(
                f"no {split} example fits max_length={self.config.max_length} with its whole response; "
                "raise --max-length"
            )
        return [example for example, _ in kept], [row for _, row in kept]

    def training_rows(self, rows: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
        """The rows training iterates over (as tokenized, by default)."""
        return rows

    def build_model(self, data: TaskData, dtype: torch.dtype, empty: bool = False) -> nn.Module:
        """The pretrained model with its LM head, loaded in `dtype`, its KV cache off."""
        model = load_model(self.config.model, task_type=self.kind.peft_type, dtype=dtype, empty=empty)
        # Training needs no KV cache, and packed rows are only kept apart without one (data/chat.py).
        model.config.use_cache = False
        return model

    def training_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean cross-entropy over the batch's response tokens (what the model's own loss is), with
        logits computed at those positions only (see `labelled_logits`); a causal LM whose logits
        are just its head's output computes them in chunks (models/lm_loss.py)."""
        if not self.encoder_decoder and supports_chunked_loss(model):
            return chunked_causal_lm_loss(model, batch)
        logits, labels = labelled_logits(model, batch, not self.encoder_decoder)
        return nn.functional.cross_entropy(logits.float(), labels, ignore_index=-100)

    def loss_terms(self, batch: dict[str, torch.Tensor]) -> int:
        """Response tokens the loss averages over: labels other than -100 (a causal LM's from the
        second position on: position t predicts label t + 1)."""
        labels = batch["labels"] if self.encoder_decoder else batch["labels"][:, 1:]
        return int((labels != -100).sum())

    def evaluate_shard(self, model: nn.Module, rows: Rows, collate: Collate, autocast: Autocast) -> tuple[float, int]:
        """Summed response-token cross-entropy and the number of response tokens in `rows`."""
        return response_loss(model, rows, collate, self.eval_rows(), not self.encoder_decoder, autocast)

    def combine(self, parts: list[tuple[list[int], Any]], split: list[dict[str, Any]], data: TaskData) -> dict:
        """Mean response-token loss, perplexity and the token count over every rank's rows."""
        loss_sum = sum(part[0] for _, part in parts)
        tokens = sum(part[1] for _, part in parts)
        loss = loss_sum / max(tokens, 1)
        return {"loss": loss, "perplexity": perplexity(loss), "tokens": tokens}

    def eval_entry(self, result: dict[str, Any]) -> dict[str, Any]:
        """Loss and perplexity."""
        return {"loss": result["loss"], "perplexity": result["perplexity"]}

    def test_metrics(self, result: dict[str, Any]) -> dict[str, Any]:
        """Test loss, perplexity and the number of response tokens they are over."""
        return {"loss": result["loss"], "perplexity": result["perplexity"], "test_tokens": result["tokens"]}

    def sample_metrics(self, before: list | None, after: list | None) -> dict[str, Any]:
        """Mean word F1 of the held-out generations against their references, before and after."""
        if not after:
            return {}
        return {"sample_f1_before": sample_f1(before), "sample_f1_after": sample_f1(after)}

    def artifact_facts(self, data: TaskData) -> dict[str, Any]:
        """The system prompt and sample length that `lorakit generate` reuses."""
        return {"system_prompt": self.config.system_prompt, "max_new_tokens": self.config.max_new_tokens}

    def samples(self, model: nn.Module, tokenizer: Any, autocast: Autocast, data: TaskData) -> list[dict]:
        """Greedy generations for the first `generation_samples` distinct test prompts, with their
        reference (a question asked several times in the data keeps its first answer)."""
        distinct = {}
        for example in data.raw["test"]:
            distinct.setdefault(repr(example.prompt_messages), example)
        examples = list(distinct.values())[: self.config.generation_samples]
        if not examples:
            return []
        prompts = [prompt_text(tokenizer, example.prompt_messages, self.kind) for example in examples]
        with autocast:
            outputs = generate_batch(
                model, tokenizer, prompts, max_new_tokens=self.config.max_new_tokens, seq2seq=self.encoder_decoder
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

    def write_report(self, run_dir: Path, data: TaskData, outcome: Outcome) -> Path:
        """generations.json, loss and perplexity curves, and the before/after generations."""
        generations = _pair_samples(outcome.samples_before, outcome.samples_after)
        if generations:
            write_text(run_dir / "generations.json", json.dumps(generations, indent=2, ensure_ascii=False) + "\n")
        plot_dir = run_dir / "plots"
        images = {
            "Loss": plots.plot_loss_curves(outcome.history, plot_dir / "loss.png"),
            "Validation perplexity": plots.plot_metric_curve(
                outcome.history, "perplexity", plot_dir / "perplexity.png"
            ),
        }
        return html.write_report(
            run_dir / "report.html",
            title=f"lorakit run {run_dir.name}",
            metrics=outcome.metrics,
            history=outcome.history,
            config=self.config.to_dict(),
            generations=generations,
            images=images,
        )


class CausalLMTask(GenerativeTask):
    """Instruction tuning of a decoder-only LM: the chat template renders each conversation, the
    loss sees the assistant turns only; `packing` fills training rows with several examples."""

    kind = TaskKind.CAUSAL_LM
    encoder_decoder = False

    def tokenize(self, tokenizer: Any, example: GenerativeExample) -> dict[str, list[int]] | None:
        """The rendered conversation, labels on the assistant turns (see `tokenize_causal`)."""
        return tokenize_causal(tokenizer, example, self.config.max_length)

    def training_rows(self, rows: list[dict[str, list[int]]]) -> list[dict[str, list[int]]]:
        """Packed into max_length rows with `packing` "on", or "auto" when batches of similar
        lengths would still be more than PACK_ABOVE padding; evaluation scores each example alone.
        The choice is written back into the config ("on"/"off"), so config.yaml says what ran."""
        if self.config.packing == "auto":
            lengths = [len(row["input_ids"]) for row in rows]
            share = padding_share(lengths, self.config.batch_size)
            self.config.packing = "on" if share > PACK_ABOVE else "off"
        return pack_examples(rows, self.config.max_length) if self.config.packing == "on" else rows

    def collator(self, tokenizer: Any) -> Collate:
        """Right padding to a multiple of 8, labels padded with -100."""
        return CausalCollator(tokenizer, pad_to_multiple_of=8)


def padding_share(lengths: list[int], batch_size: int, multiple: int = 8) -> float:
    """The share of padding in batches of `batch_size` rows of similar length (sorted, as the
    length-grouped sampler nearly makes them), each padded to its longest row rounded up to
    `multiple`: Σ(padded − real) / Σ padded."""
    ordered = sorted(lengths)
    padded = real = 0
    for start in range(0, len(ordered), batch_size):
        group = ordered[start : start + batch_size]
        width = -(-group[-1] // multiple) * multiple
        padded, real = padded + width * len(group), real + sum(group)
    return 1 - real / padded if padded else 0.0


class Seq2SeqTask(GenerativeTask):
    """Encoder-decoder fine-tuning (T5, BART): the prompt is the encoder input, the response the labels."""

    kind = TaskKind.SEQ2SEQ
    encoder_decoder = True

    def tokenize(self, tokenizer: Any, example: GenerativeExample) -> dict[str, list[int]] | None:
        """Prompt and response tokens, each truncated to its own length (see `tokenize_seq2seq`)."""
        return tokenize_seq2seq(tokenizer, example, self.config.max_length, self.config.max_target_length)

    def collator(self, tokenizer: Any) -> Collate:
        """Encoder inputs and labels padded separately, to multiples of 8."""
        return Seq2SeqCollator(tokenizer, pad_to_multiple_of=8)

    def artifact_facts(self, data: TaskData) -> dict[str, Any]:
        """The generation facts and the response length the model was trained to."""
        return {**super().artifact_facts(data), "max_target_length": self.config.max_target_length}


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
