"""Cutting a micro-batch into pieces that run without activation checkpointing.

A checkpointed run is planned for its largest micro-batch (batch × longest row), but most
micro-batches are shorter. What the plan leaves for activations holds `P` tokens of an unchecked
forward (`memory.Setting.piece_tokens`), so a micro-batch runs as pieces of at most P padded
tokens each, without checkpointing; only rows longer than P are checkpointed (one piece, the
micro-batch's checkpointed cost at most). Rows are sorted by length first and each piece is padded
to its own longest row, so pieces also carry less padding than the whole micro-batch did.

The gradient is the micro-batch's. A piece's loss is the mean over its `n_k` loss terms (labelled
tokens, or rows); weighting it by n_k / n gives Σ_k (n_k / n)·mean_k = the mean over all n terms.
"""

from __future__ import annotations

from dataclasses import dataclass

PAD_MULTIPLE = 8  # the collators pad every batch to a multiple of 8 tokens


@dataclass(frozen=True)
class Piece:
    """Rows of a micro-batch (positions in it) that run together; `unchecked` runs them with the
    model's activation checkpointing paused."""

    rows: list[int]
    unchecked: bool = False


def padded(length: int) -> int:
    """`length` rounded up to the collators' multiple of 8."""
    return -(-length // PAD_MULTIPLE) * PAD_MULTIPLE


def piece_tokens(sizes: list[tuple[int, ...]]) -> int:
    """Padded tokens of a piece whose rows have `sizes` (per row: padded length of each padded
    field, e.g. (source,) or (source, target)): rows × Σ_field longest."""
    return len(sizes) * sum(max(column) for column in zip(*sizes, strict=True))


def cut(sizes: list[tuple[int, ...]], limit: int) -> list[Piece]:
    """The pieces of a micro-batch whose rows have `sizes`, for pieces of at most `limit` tokens.

    `limit` 0: one piece, the micro-batch as it is (rows in their order, checkpointing as set).
    Otherwise rows shorter than `limit` fill unchecked pieces in order of length, and rows longer
    than it form one last, checkpointed piece.
    """
    if not limit:
        return [Piece(list(range(len(sizes))))]
    order = sorted(range(len(sizes)), key=lambda i: (sum(sizes[i]), i))
    fitting = [i for i in order if sum(sizes[i]) <= limit]
    pieces: list[Piece] = []
    current: list[int] = []
    for i in fitting:
        if current and piece_tokens([sizes[j] for j in (*current, i)]) > limit:
            pieces.append(Piece(current, unchecked=True))
            current = []
        current.append(i)
    if current:
        pieces.append(Piece(current, unchecked=True))
    longer = [i for i in order if sum(sizes[i]) > limit]
    if longer:
        pieces.append(Piece(longer))
    return pieces
