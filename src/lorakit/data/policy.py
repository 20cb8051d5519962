"""The empty-row policy, one for every task: skip unusable rows with a note, or refuse the data.

A task reads each split's rows, records the 1-based row numbers it cannot use by reason (an empty
text, a missing label, an empty prompt, ...; a row counts once, for the first reason it meets),
then calls `apply_empty_policy` with the user's `on_empty`: "fail" raises one error that counts
every reason in every split, "skip" adds one note per reason with the counts per split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lorakit.data.wording import plural
from lorakit.errors import LorakitError, option_setting

# split → reason name → the 1-based numbers of the rows unusable for that reason
UnusableRows = dict[str, dict[str, list[int]]]


@dataclass(frozen=True)
class EmptyReason:
    """Why a row is unusable, and how errors and notes word it.

    Attributes:
        name: counted in the error, pluralised: "2 empty texts in column 'text' (first at row 4)".
        column: the column the problem is in.
        noun: counted in the note, pluralised, then `detail`: "skipped 2 empty texts (train 2)",
            "skipped 1 row with an empty prompt (train 1)".
        detail: words after the counted noun.
    """

    name: str
    column: str
    noun: str
    detail: str = ""


def apply_empty_policy(
    unusable: UnusableRows,
    reasons: Sequence[EmptyReason],
    origins: Mapping[str, str],
    on_empty: str,
    notes: list[str],
) -> None:
    """Refuse the data (on_empty="fail") when a row is unusable, else note the skipped rows.

    Args:
        unusable: split → reason name → row numbers, every reason present for every split.
        reasons: the reasons, in the order errors and notes list them.
        origins: split → what messages call its table (a file name).
        on_empty: "skip" or "fail".
        notes: the notes of the data being loaded; "skip" appends one per reason found.

    Raises:
        LorakitError: on_empty="fail" and some row is unusable; the message counts each reason per
            table and names its column and first row.
    """
    total = sum(len(rows) for by_reason in unusable.values() for rows in by_reason.values())
    if total and on_empty == "fail":
        found = ", ".join(
            f"{origins[split]} has {plural(len(rows), reason.name)} in column {reason.column!r} "
            f"(first at row {rows[0]})"
            for split, by_reason in unusable.items()
            for reason in reasons
            if (rows := by_reason[reason.name])
        )
        raise LorakitError(
            f"{plural(total, 'unusable row')}: {found}; fill them in or pass {option_setting('on_empty', 'skip')} "
            "to drop them"
        )
    for reason in reasons:
        counts = {split: len(by_reason[reason.name]) for split, by_reason in unusable.items() if by_reason[reason.name]}
        if counts:
            where = ", ".join(f"{split} {count:,}" for split, count in counts.items())
            notes.append(f"skipped {plural(sum(counts.values()), reason.noun)}{reason.detail} ({where})")
