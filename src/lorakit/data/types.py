"""The in-memory forms of loaded data: train/validation/test splits, `source` and `notes` for reports.

Classification: `ClassificationData`, three `ClassificationSplit`s of texts and label indices and
the label vocabulary. Generation: `GenerativeData`, three lists of `GenerativeExample`
conversations.
"""

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


@dataclass
class GenerativeExample:
    """One conversation: `messages[i]` is `{"role": "system"|"user"|"assistant", "content": str}`;
    an optional system message, then alternating user/assistant turns, ending with the assistant's."""

    messages: list[dict[str, str]]

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """Everything before the last assistant turn: what the model is given."""
        return self.messages[:-1]

    @property
    def response(self) -> str:
        """The last assistant turn's content: what the model learns to answer."""
        return self.messages[-1]["content"]


@dataclass
class GenerativeData:
    """Train, validation and test conversations; `source` is what was loaded, `notes` what the
    loader did to it (skipped rows, carved splits), both for reports."""

    train: list[GenerativeExample]
    validation: list[GenerativeExample]
    test: list[GenerativeExample]
    source: str
    notes: list[str] = field(default_factory=list)

    def splits(self) -> dict[str, list[GenerativeExample]]:
        """The splits by name, in the order train, validation, test."""
        return {"train": self.train, "validation": self.validation, "test": self.test}
