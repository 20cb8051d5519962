"""The kinds of task lorakit fine-tunes, and the facts each one carries.

Every place that needs to know what a task is asks its `TaskKind` instead of comparing strings:

    kind          CLI / lorakit.json   PEFT task_type   generates   default model            default data
    CLASSIFICATION  classification     SEQ_CLS          no          all-MiniLM-L6-v2         rotten-tomatoes
    CAUSAL_LM       causal-lm          CAUSAL_LM        yes         SmolLM2-135M-Instruct    chatterbot
    SEQ2SEQ         seq2seq            SEQ_2_SEQ_LM     yes         (none packaged)          chatterbot

A `TaskKind` is a `str`: it compares equal to its name and serialises as it (JSON, YAML via
`.value`), so config files and lorakit.json keep plain strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from lorakit.errors import LorakitError


@dataclass(frozen=True)
class _Facts:
    peft_type: str
    generates: bool
    default_model: str | None
    default_data: str


class TaskKind(str, Enum):
    """What a model is fine-tuned to do; the value is the name users write (`--task causal-lm`)."""

    CLASSIFICATION = "classification"
    CAUSAL_LM = "causal-lm"
    SEQ2SEQ = "seq2seq"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def peft_type(self) -> str:
        """PEFT's `task_type` for adapters of this kind (`SEQ_CLS`, `CAUSAL_LM`, `SEQ_2_SEQ_LM`)."""
        return _FACTS[self].peft_type

    @property
    def generates(self) -> bool:
        """Whether models of this kind generate text (and are scored by loss and perplexity)."""
        return _FACTS[self].generates

    @property
    def default_model(self) -> str | None:
        """The packaged model trained when none is given; None where no package ships one."""
        return _FACTS[self].default_model

    @property
    def default_data(self) -> str:
        """The builtin dataset trained on when none is given."""
        return _FACTS[self].default_data

    @classmethod
    def parse(cls, value: object, field: str = "task") -> TaskKind:
        """`value` as a TaskKind (a member or its name).

        Raises:
            LorakitError: `value` names no task kind; the message lists the names.
        """
        try:
            return cls(value)
        except ValueError:
            raise LorakitError(f"{field} must be one of {', '.join(cls.names())}; got {value!r}") from None

    @classmethod
    def from_peft_type(cls, task_type: str | None) -> TaskKind | None:
        """The kind whose PEFT `task_type` this is, or None (TOKEN_CLS, FEATURE_EXTRACTION, None...)."""
        return next((kind for kind in cls if kind.peft_type == task_type), None)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """Every kind's name, in declaration order (for choices and messages)."""
        return tuple(kind.value for kind in cls)


_FACTS = {
    TaskKind.CLASSIFICATION: _Facts("SEQ_CLS", False, "all-MiniLM-L6-v2", "rotten-tomatoes"),
    TaskKind.CAUSAL_LM: _Facts("CAUSAL_LM", True, "SmolLM2-135M-Instruct", "chatterbot"),
    TaskKind.SEQ2SEQ: _Facts("SEQ_2_SEQ_LM", True, None, "chatterbot"),
}
