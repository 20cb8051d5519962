"""The in-memory form of a text-classification dataset: three splits and the label vocabulary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ClassificationSplit:
    """One split, as parallel lists of length n.

    `labels[i]` is an index into the owning `ClassificationData.label_names`; `text_pairs[i]`,
    when present, is the second text of a pair task (premise/hypothesis, question/passage).
    """

    texts: list[str]
    labels: list[int]
    text_pairs: list[str] | None = None

    def __post_init__(self) -> None:
        # A length mismatch here is a bug in a loader, not user input, hence a plain ValueError.
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.text_pairs)} text pairs")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class ClassificationData:
    """Train, validation and test splits sharing one label vocabulary.

    `source` says what was loaded (a builtin name or a path) and `notes` what the loader did to
    it (dropped duplicates, skipped empty texts, carved splits), both for reports.
    """

    train: ClassificationSplit
    validation: ClassificationSplit
    test: ClassificationSplit
    label_names: list[str]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """How many classes: the width of the classification head."""
        return len(self.label_names)

    def splits(self) -> dict[str, ClassificationSplit]:
        """The splits by name, in the order train, validation, test."""
        return {"train": self.train, "validation": self.validation, "test": self.test}
