"""Seeded splitters: carve validation/test out of train, cap train at n rows. Index math only.

Every function returns row indices (ascending int64 arrays) and uses only numpy's seeded
generator, never Python's `hash`, so a seed gives the same split in every process and on every
platform. The tasks choose the splitter: classification carves and caps by class
(`stratified_split`, `stratified_subset`), generation carves by question (`grouped_split`) and caps
at random (`random_subset`).

Stratified splits use systematic sampling inside each class. Each class's members are shuffled,
and the i-th of m members scores (i + u_i) / m with u_i uniform in [0, 1): every class spreads
evenly over [0, 1). Sorting all rows by score and cutting the sorted list into consecutive parts
then gives each part every class in proportion (to within one row per class), and exact part
sizes. One member of each class scores +inf, so the remainder (what stays train) keeps every class.
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

    Raises:
        ValueError: the parts would leave a class without a row in the remainder.
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


def stratified_subset(labels: Sequence[int], size: int, seed: int) -> np.ndarray:
    """`size` of the rows, every class in proportion and kept: the remainder of a stratified
    split that holds out the other n - size rows. `size` must be at least the number of classes."""
    kept, _ = stratified_split(labels, [len(labels) - size], seed)
    return kept


def grouped_split(keys: Sequence[str], sizes: Sequence[int], seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Split indices 0..n-1 into held-out parts of at most `sizes[k]` rows, whole groups (equal
    keys) at a time, and the rest.

    Groups are visited in a seeded random order; each goes to the first part it still fits in,
    else to the rest. Single-row groups top the parts up, so with enough of them every part gets
    exactly its size. Returns `(rest, parts)` as ascending int64 index arrays.
    """
    groups: dict[str, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    members = list(groups.values())  # first-occurrence order: the same in every process
    parts: list[list[int]] = [[] for _ in sizes]
    rest: list[int] = []
    for group in np.random.default_rng(seed).permutation(len(members)):
        rows = members[group]
        for part, size in zip(parts, sizes, strict=True):
            if len(part) + len(rows) <= size:
                part.extend(rows)
                break
        else:
            rest.extend(rows)
    return np.sort(np.asarray(rest, dtype=np.int64)), [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def random_subset(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of the indices 0..n-1 drawn uniformly without replacement, ascending."""
    return np.sort(np.random.default_rng(seed).permutation(n)[:size])
