"""Seeded stratified splits: carve validation/test out of train, or cap train at n rows.

The method is systematic sampling inside each class. Each class's members are shuffled, and the
i-th of m members scores (i + u_i) / m with u_i uniform in [0, 1): every class spreads evenly over
[0, 1). Sorting all rows by score and cutting the sorted list into consecutive parts then gives
each part every class in proportion (to within one row per class), and exact part sizes. One
member of each class scores +inf, so the remainder (what stays train) keeps every class.

Only numpy's seeded generator is used, never Python's `hash`, so a seed gives the same split in
every process and on every platform.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holdout_size(n: int, fraction: float) -> int:
    """Rows to hold out of n for a fraction: rounded, at least one."""
    return max(1, round(fraction * n))


def stratified_split(labels: Sequence[int], sizes: Sequence[int], seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split row indices 0..n-1 into held-out parts of the given sizes and the remainder.

    Args:
        labels: class index of each row, length n.
        sizes: how many rows each held-out part gets; their sum must leave at least one row per
            class in the remainder (callers check and explain).
        seed: the same seed gives the same parts, across processes.

    Returns:
        `(remainder, parts)`: int64 index arrays, each in ascending row order; `parts[k]` has
        `sizes[k]` rows. Together they cover every row exactly once.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)  # sorted, so the generator is consumed in a fixed order
    if sum(sizes) > len(labels) - len(classes):
        raise ValueError(f"cannot hold out {sum(sizes)} of {len(labels)} rows and keep all {len(classes)} classes")
    rng = np.random.default_rng(seed)
    scores = np.empty(len(labels))
    for label in classes:
        members = rng.permutation(np.flatnonzero(labels == label))
        scores[members] = (np.arange(len(members)) + rng.random(len(members))) / len(members)
        scores[members[-1]] = np.inf
    order = np.argsort(scores, kind="stable")
    parts = []
    start = 0
    for size in sizes:
        parts.append(np.sort(order[start : start + size]))
        start += size
    return np.sort(order[start:]), parts
