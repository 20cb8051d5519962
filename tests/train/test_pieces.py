"""Unchecked pieces of a micro-batch: how rows are cut, and that a run in pieces computes the
micro-batch's own loss and gradients (tiny Llama with checkpointing, T5, BERT)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lorakit.models.activation_checkpointing import activation_checkpointing_enabled, checkpointing_paused
from lorakit.train.config import TrainConfig
from lorakit.train.fit import row_sizes
from lorakit.train.pieces import Piece, cut, padded, piece_tokens
from lorakit.train.state import TrainState


def test_no_limit_keeps_the_micro_batch_as_it_is() -> None:
    assert cut([(24,), (8,), (16,)], 0) == [Piece([0, 1, 2])]


def test_rows_fill_pieces_by_length_and_longer_rows_are_checkpointed() -> None:
    sizes = [(40,), (8,), (16,), (8,), (64,), (16,), (24,)]
    pieces = cut(sizes, limit=48)
    assert sorted(itertools.chain.from_iterable(p.rows for p in pieces)) == list(range(len(sizes)))
    unchecked = [p for p in pieces if p.unchecked]
    assert all(piece_tokens([sizes[i] for i in p.rows]) <= 48 for p in unchecked)
    assert [p.rows for p in unchecked] == [[1, 3, 2], [5, 6], [0]]  # shortest first, each padded to its own longest
    assert pieces[-1] == Piece([4], unchecked=False)  # 64 > 48 tokens: the one checkpointed piece


def test_seq2seq_pieces_count_source_and_target_separately() -> None:
    """Two rows of (8, 24) and (24, 8) pad to (24 + 24) each: 96 tokens, not 2 × 32."""
    assert piece_tokens([(8, 24), (24, 8)]) == 96
    pieces = cut([(8, 24), (24, 8)], limit=64)
    assert [p.rows for p in pieces] == [[0], [1]] and all(p.unchecked for p in pieces)


def test_rows_are_sized_as_the_collators_pad_them() -> None:
    assert padded(1) == 8 and padded(8) == 8 and padded(9) == 16
    row = {"input_ids": [1] * 9, "labels": [2] * 3}
    assert row_sizes(row, TrainConfig(task="causal-lm").task) == (16,)
    assert row_sizes(row, TrainConfig(task="seq2seq", model="t5").task) == (16, 8)


def test_pausing_checkpointing_restores_it_even_after_an_error() -> None:
    from lorakit.models.activation_checkpointing import enable_activation_checkpointing
    from tiny_models import tiny_llama

    model = tiny_llama()
    enable_activation_checkpointing(model)
    with pytest.raises(RuntimeError), checkpointing_paused(model):
        assert not activation_checkpointing_enabled(model)
        raise RuntimeError("inside")
    assert activation_checkpointing_enabled(model)


def _run(model: Path, data: Path, out: Path, task: str, **overrides):
    from lorakit.train.loop import setup
    from lorakit.train.run_lock import RunLock

    config = TrainConfig(
        task=task,
        model=str(model),
        data=str(data),
        output_dir=str(out),
        precision="fp32",
        lora_dropout=0.0,
        target_modules="all-linear",
        batch_size=16,
        max_length=48,
        quiet=True,
        generation_samples=0,
        **overrides,
    )
    return setup(config, resume=False, lock=RunLock())  # released when the test process ends


def _loss_and_gradients(run, rows: list[int], pieces: int) -> tuple[float, dict[str, torch.Tensor]]:
    from lorakit.train.loop import forward_backward

    run.memory = replace(run.memory, setting=replace(run.memory.setting, piece_tokens=pieces))
    run.optimizer.zero_grad(set_to_none=True)
    loss = forward_backward(run, TrainState(), rows, sync=True)
    gradients = {n: p.grad.clone() for n, p in run.core.named_parameters() if p.grad is not None}
    return float(loss), gradients


@pytest.mark.parametrize(
    ("model", "data", "task", "train_mode"),
    [
        ("tiny_causal_dir", "capitals_jsonl", "causal-lm", True),  # checkpointed longer rows, dropout-free
        ("tiny_t5_dir", "capitals_jsonl", "seq2seq", False),  # eval(): T5 and BERT have dropout
        ("tiny_classifier_dir", "sentiment_csv", "classification", False),
    ],
)
def test_pieces_compute_the_micro_batch_loss_and_gradients(model, data, task, train_mode, tmp_path, request) -> None:
    folder, rows_file = request.getfixturevalue(model), request.getfixturevalue(data)
    extra = {
        "causal-lm": {"gradient_checkpointing": "on"},
        "seq2seq": {},
        "classification": {"text_column": "review", "label_column": "sentiment"},
    }[task]
    run = _run(folder, rows_file, tmp_path / "run", task, **extra)
    run.model.train(train_mode)
    train = run.data.splits["train"]
    # The data's rows pad alike: add a longer one, two rows joined (every list field end to end).
    train.append({k: v + train[1][k] if isinstance(v, list) else v for k, v in train[0].items()})
    by_size = sorted(range(len(train)), key=lambda i: (sum(row_sizes(train[i], run.config.task)), i))
    batch = by_size[:6] + by_size[-2:]  # the shortest rows and the two longest
    sizes = [row_sizes(train[i], run.config.task) for i in batch]
    limit = min(sum(size) for size in sizes)  # a short row per piece; the longest run as set (checkpointed)
    pieces = cut(sizes, limit)
    assert sum(p.unchecked for p in pieces) >= 2 and not pieces[-1].unchecked
    whole_loss, whole = _loss_and_gradients(run, batch, 0)
    pieces_loss, cut_gradients = _loss_and_gradients(run, batch, limit)
    assert pieces_loss == pytest.approx(whole_loss, abs=1e-6)
    assert whole.keys() == cut_gradients.keys() and whole
    for name, gradient in whole.items():
        torch.testing.assert_close(cut_gradients[name], gradient, rtol=1e-5, atol=1e-6, msg=name)
    if task == "causal-lm":
        assert activation_checkpointing_enabled(run.core)  # paused for unchecked pieces only
