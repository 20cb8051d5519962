"""What a loader reads and how: columns, empty-row policy, seed, train and validation caps. Validated once, here.

`DataOptions` holds what every loader shares; `ClassificationOptions` and `GenerativeOptions` add
their task's columns and choices. All are frozen dataclasses built with keywords, and building
one checks every field: an invalid value raises a LorakitError that names the field and what it
accepts. A loader called with an options object uses it as it is::

    options = ClassificationOptions(text_column="sentence", seed=7)
    load_classification_data("reviews.csv", options=options)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, TypeVar

from lorakit.errors import LorakitError, option_name

ON_EMPTY_CHOICES = ("skip", "fail")

_Options = TypeVar("_Options", bound="DataOptions")


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """The choices every loader shares.

    Attributes:
        on_empty: rows with an empty or missing required cell: "skip" drops them with a note,
            "fail" refuses the data (`ON_EMPTY_CHOICES`).
        seed: seeds every carved split and the train cap; the same seed, the same splits, in any
            process.
        max_train_examples: keep a sample of this many train examples (after carving), or None.
        max_validation_examples: keep a fixed sample of this many validation examples, or None:
            validation runs at every evaluation, the test split once, so only validation is
            capped (for big models, where scoring a whole split costs minutes).
    """

    on_empty: str = "skip"
    seed: int = 42
    max_train_examples: int | None = None
    max_validation_examples: int | None = None

    # The fields that name columns; a builtin dataset's columns are fixed (`check_builtin_columns`).
    COLUMN_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.on_empty not in ON_EMPTY_CHOICES:
            choices = " or ".join(repr(choice) for choice in ON_EMPTY_CHOICES)
            raise LorakitError(f"{option_name('on_empty')} must be {choices}, got {self.on_empty!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise LorakitError(f"{option_name('seed')} must be a non-negative integer, got {self.seed!r}")
        for name in ("max_train_examples", "max_validation_examples"):
            cap = getattr(self, name)
            if cap is not None and (not _is_int(cap) or cap < 1):
                raise LorakitError(f"{option_name(name)} must be a positive integer or None, got {cap!r}")

    def check_builtin_columns(self, name: str) -> None:
        """Refuse column options changed from their defaults: builtin dataset `name` has fixed columns.

        Raises:
            LorakitError: a column option is not at its default.
        """
        defaults = {field.name: field.default for field in dataclasses.fields(self)}
        if any(getattr(self, column) != defaults[column] for column in self.COLUMN_FIELDS):
            names = ", ".join(self.COLUMN_FIELDS[:-1]) + " and " + self.COLUMN_FIELDS[-1]
            raise LorakitError(
                f"builtin dataset {name!r} has fixed columns; {names} apply to files and Hub datasets only: "
                "leave them at their defaults"
            )


@dataclass(frozen=True, kw_only=True)
class ClassificationOptions(DataOptions):
    """The choices of `load_classification_data`; see its docstring for each field."""

    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    validation_fraction: float = 0.1
    test_fraction: float = 0.1
    allow_single_class: bool = False
    carve_missing_splits: bool = True

    COLUMN_FIELDS: ClassVar[tuple[str, ...]] = ("text_column", "label_column", "text_pair_column")

    def __post_init__(self) -> None:
        # Columns first, then the shared fields, then the split choices: the first problem found
        # is the one reported, in the order the loader documents its arguments.
        for name in ("text_column", "label_column"):
            _check_column(name, getattr(self, name))
        if self.text_pair_column is not None and (
            not isinstance(self.text_pair_column, str) or not self.text_pair_column
        ):
            raise LorakitError(
                f"{option_name('text_pair_column')} must be a column name or None, got {self.text_pair_column!r}"
            )
        named = self.columns
        if len(set(named)) != len(named):
            names = ", ".join(option_name(name) for name in self.COLUMN_FIELDS[:2])
            raise LorakitError(f"{names} and {option_name('text_pair_column')} must be different columns, got {named}")
        super().__post_init__()
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
    def columns(self) -> list[str]:
        """The columns read: text, label and, when given, the text pair."""
        return [column for column in (self.text_column, self.label_column, self.text_pair_column) if column]


@dataclass(frozen=True, kw_only=True)
class GenerativeOptions(DataOptions):
    """The choices of `load_generative_data`; see its docstring for each field."""

    prompt_column: str = "prompt"
    response_column: str = "response"
    messages_column: str = "messages"
    system_prompt: str | None = None

    COLUMN_FIELDS: ClassVar[tuple[str, ...]] = ("prompt_column", "response_column", "messages_column")

    def __post_init__(self) -> None:
        for name in self.COLUMN_FIELDS:
            _check_column(name, getattr(self, name))
        if self.prompt_column == self.response_column:
            raise LorakitError(
                f"{option_name('prompt_column')} and {option_name('response_column')} must differ, "
                f"both are {self.prompt_column!r}"
            )
        system = self.system_prompt
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise LorakitError(f"{option_name('system_prompt')} must be a non-empty text or None, got {system!r}")
        super().__post_init__()


def resolve_options(cls: type[_Options], options: _Options | None, fields: dict[str, object]) -> _Options:
    """The options a loader runs with: `options` when given, else built from its field keywords.

    Args:
        cls: the loader's options class.
        options: an options object built (and so validated) by the caller, or None.
        fields: the loader's field keywords as called, field name → value.

    Raises:
        TypeError: `options` is not a `cls`, or comes with a field keyword changed from its default
            (the loader cannot tell which of the two the caller meant).
        LorakitError: `options` is None and a field keyword is invalid.
    """
    if options is None:
        return cls(**fields)
    if not isinstance(options, cls):
        raise TypeError(f"options must be a {cls.__name__}, got {type(options).__name__}")
    defaults = {field.name: field.default for field in dataclasses.fields(cls)}
    changed = [name for name, value in fields.items() if value != defaults[name]]
    if changed:
        raise TypeError(f"pass either options= or field keywords, not both: got options= and {', '.join(changed)}")
    return options


def _check_column(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise LorakitError(f"{option_name(name)} must be a non-empty column name, got {value!r}")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but `seed=True` is a mistake, not a seed.
    return isinstance(value, int) and not isinstance(value, bool)
