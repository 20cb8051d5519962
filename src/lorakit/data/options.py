"""How to read a dataset: columns, empty-row policy, seed, split fractions. Validated once, here."""

from __future__ import annotations

from dataclasses import dataclass

from lorakit.errors import LorakitError

ON_EMPTY_CHOICES = ("skip", "fail")


@dataclass(frozen=True)
class LoadOptions:
    """The user's choices for `load_classification_data`; see its docstring for each field."""

    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    on_empty: str = "skip"
    seed: int = 42
    max_train_examples: int | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    allow_single_class: bool = False
    carve_missing_splits: bool = True

    def __post_init__(self) -> None:
        for name in ("text_column", "label_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise LorakitError(f"{name} must be a non-empty column name, got {value!r}")
        if self.text_pair_column is not None and (
            not isinstance(self.text_pair_column, str) or not self.text_pair_column
        ):
            raise LorakitError(f"text_pair_column must be a column name or None, got {self.text_pair_column!r}")
        columns = [self.text_column, self.label_column, self.text_pair_column]
        named = [column for column in columns if column is not None]
        if len(set(named)) != len(named):
            raise LorakitError(f"text_column, label_column and text_pair_column must be different columns, got {named}")
        if self.on_empty not in ON_EMPTY_CHOICES:
            raise LorakitError(f"on_empty must be 'skip' or 'fail', got {self.on_empty!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise LorakitError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.max_train_examples is not None and (
            not _is_int(self.max_train_examples) or self.max_train_examples < 1
        ):
            raise LorakitError(
                f"max_train_examples must be a positive integer or None, got {self.max_train_examples!r}"
            )
        for name in ("validation_fraction", "test_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
                raise LorakitError(f"{name} must be a number between 0 and 1 (exclusive), got {value!r}")
        for name in ("allow_single_class", "carve_missing_splits"):
            if not isinstance(getattr(self, name), bool):
                raise LorakitError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.validation_fraction + self.test_fraction >= 1:
            raise LorakitError(
                f"validation_fraction + test_fraction must be below 1 so some rows stay in train, "
                f"got {self.validation_fraction} + {self.test_fraction}"
            )

    @property
    def has_default_columns(self) -> bool:
        """Whether the column options are untouched (builtin datasets have fixed columns)."""
        return self.text_column == "text" and self.label_column == "label" and self.text_pair_column is None


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `seed=True` is a mistake, not a seed.
    return isinstance(value, int) and not isinstance(value, bool)
