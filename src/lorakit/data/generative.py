"""Instruction-tuning data: conversations that end with the answer a model should learn to give.

```python
from lorakit.data.generative import load_generative_data
data = load_generative_data("chatterbot")             # or a file, a folder, a Hub name
data.train[0].prompt_messages, data.train[0].response
```

Sources, first match wins: the builtin `chatterbot`; a path: one .jsonl/.json/.csv/.tsv/.parquet
file (all train), a folder of split files (`train.*`, `validation.*`/`valid.*`/`val.*`/`dev.*`,
`test.*`) or a `datasets` save_to_disk folder; else a Hugging Face Hub dataset (`name` or
`name:config`).

Rows come in one of two shapes; the first whose columns are all present is used:

- `prompt_column` + `response_column`: one user turn and the assistant's answer;
- `messages_column`: a list of messages, OpenAI style (`{"role": "user", "content": ...}`, roles
  system/user/assistant) or ShareGPT style (`{"from": "human", "value": ...}`, roles
  system/human/gpt). An optional system message comes first, then user and assistant turns
  alternate, and the last is the assistant's (the response to learn). In CSV/TSV the cell holds
  the list as JSON text.

`system_prompt` is put first in every conversation that has no system message of its own.

Splits. A split the source lacks is carved from train: 10 % each for validation and test,
grouped by the first user message (lower-cased, whitespace collapsed, trailing `.?!` dropped), so
a question is never in two splits, even when it comes with different answers. The grouping fills
each held-out split whole questions at a time, in a seeded random order (numpy's generator, the
same in every process). Given validation/test splits are kept as they are; questions they share
with train are counted in the notes.

The builtin `chatterbot` (see `lorakit.data.chatterbot`): 898 distinct conversations, no split
shipped, carved by question 80/10/10: train 718 · validation 90 · test 90 (sizes that hold for
every seed: single questions top the held-out splits up).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from lorakit.data.assemble import SPLITS, Table
from lorakit.data.chatterbot import chatterbot_conversations
from lorakit.data.files import split_files
from lorakit.data.hf import is_saved_dataset, named_splits, read_hub_dataset, read_saved_dataset
from lorakit.data.load import looks_like_path
from lorakit.data.options import ON_EMPTY_CHOICES
from lorakit.data.readers import read_table
from lorakit.data.splits import holdout_size
from lorakit.errors import LorakitError

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

GENERATIVE_BUILTINS: tuple[str, ...] = ("chatterbot",)
HOLDOUT_FRACTION = 0.1
# Role names in the wild, by the role they stand for.
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}
# Why an example is unusable, and the words for it in notes.
_EMPTY = {"empty prompt": "an empty prompt", "empty response": "an empty response", "empty conversation": "no messages"}


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


@dataclass(frozen=True)
class _Options:
    """The user's choices for `load_generative_data`, validated once, here."""

    prompt_column: str
    response_column: str
    messages_column: str
    system_prompt: str | None
    on_empty: str
    seed: int
    max_train_examples: int | None

    def __post_init__(self) -> None:
        for name in ("prompt_column", "response_column", "messages_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise LorakitError(f"{name} must be a non-empty column name, got {value!r}")
        if self.prompt_column == self.response_column:
            raise LorakitError(f"prompt_column and response_column must differ, both are {self.prompt_column!r}")
        system = self.system_prompt
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise LorakitError(f"system_prompt must be a non-empty text or None, got {self.system_prompt!r}")
        if self.on_empty not in ON_EMPTY_CHOICES:
            raise LorakitError(f"on_empty must be 'skip' or 'fail', got {self.on_empty!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise LorakitError(f"seed must be a non-negative integer, got {self.seed!r}")
        cap = self.max_train_examples
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise LorakitError(f"max_train_examples must be a positive integer or None, got {cap!r}")

    @property
    def has_default_columns(self) -> bool:
        return (self.prompt_column, self.response_column, self.messages_column) == ("prompt", "response", "messages")


def load_generative_data(
    source: str,
    *,
    prompt_column: str = "prompt",
    response_column: str = "response",
    messages_column: str = "messages",
    system_prompt: str | None = None,
    on_empty: str = "skip",
    seed: int = 42,
    max_train_examples: int | None = None,
) -> GenerativeData:
    """Load conversations for causal-LM instruction tuning or seq2seq as train/validation/test.

    Args:
        source: `chatterbot`, a path, or a Hub dataset name (see the module docstring).
        prompt_column, response_column: the columns of prompt/response data.
        messages_column: the column of messages data (used when the prompt/response pair is absent).
        system_prompt: a system message put first in conversations that have none.
        on_empty: rows with an empty or missing prompt, response or message: "skip" drops them
            with a note, "fail" refuses the data.
        seed: seeds the carved splits and the train cap; the same seed, the same splits.
        max_train_examples: keep a random sample of this many train examples (after carving).

    Raises:
        LorakitError: one line naming the problem (a missing column, empty prompts or responses,
            a malformed message, a conversation not ending with the assistant, no usable
            examples, a malformed file, an unreachable name) and the fix.
    """
    options = _Options(
        prompt_column, response_column, messages_column, system_prompt, on_empty, seed, max_train_examples
    )
    if not isinstance(source, (str, Path)) or not str(source).strip():
        raise LorakitError(f"source must be a builtin dataset name, a path or a Hub name, got {source!r}")
    source = str(source)
    if source in GENERATIVE_BUILTINS:
        if not options.has_default_columns:
            raise LorakitError(
                f"builtin dataset {source!r} has fixed columns; prompt_column, response_column and messages_column "
                "apply to files and Hub datasets only: leave them at their defaults"
            )
        conversations, notes = chatterbot_conversations()
        examples = {"train": [_with_system(messages, options.system_prompt) for messages in conversations]}
        return _split(examples, {"train": source}, options, source, notes)
    path = Path(source).expanduser()
    if path.exists():
        tables, notes = _path_tables(path, options)
    elif looks_like_path(source):
        raise LorakitError(f"no such file or folder: {source}")
    else:
        tables, notes = _datasets_tables(read_hub_dataset(source, list(GENERATIVE_BUILTINS)), source, options)
    return _assemble(tables, options, source, notes)


def _path_tables(path: Path, options: _Options) -> tuple[dict[str, Table], list[str]]:
    if path.is_dir():
        if is_saved_dataset(path):
            return _datasets_tables(read_saved_dataset(path), str(path), options)
        return {split: Table(read_table(file), file.name) for split, file in split_files(path).items()}, []
    return {"train": Table(read_table(path), path.name)}, []


def _datasets_tables(data: Dataset | DatasetDict, source: str, options: _Options) -> tuple[dict[str, Table], list[str]]:
    """A `datasets` object's splits as tables of the columns that may hold conversations.

    `to_dict` rather than `to_pandas`: a list-of-structs column then stays Python lists of dicts.
    """
    splits, notes = named_splits(data, source)
    wanted = (options.prompt_column, options.response_column, options.messages_column)
    tables = {}
    for split, split_data in splits.items():
        present = [column for column in wanted if column in split_data.column_names]
        if present:
            frame = pd.DataFrame(split_data.select_columns(present).to_dict())
        else:  # an empty frame of the names lets the column check list what is there
            frame = pd.DataFrame(columns=split_data.column_names)
        tables[split] = Table(frame, f"split {split!r} of {source}")
    return tables, notes


def _assemble(tables: dict[str, Table], options: _Options, source: str, notes: list[str]) -> GenerativeData:
    """Parse each split's rows into examples, apply the empty-row policy, then split and cap."""
    shape = _shape(tables["train"], options)
    examples: dict[str, list[GenerativeExample]] = {}
    empty: dict[str, dict[str, list[int]]] = {}
    for split, table in tables.items():
        if split != "train" and _shape(table, options) != shape:
            raise LorakitError(
                f"{table.origin} is {_shape_words(_shape(table, options), options)} but "
                f"{tables['train'].origin} is {_shape_words(shape, options)}; give every split the same columns"
            )
        parse = _pair_examples if shape == "pairs" else _message_examples
        examples[split], empty[split] = parse(table, options)
    _apply_empty_policy(empty, tables, shape, options, notes)
    for split, table in tables.items():
        if not examples[split]:
            raise LorakitError(
                f"{table.origin} has no usable examples: every row has an empty prompt or response; "
                f"check {_shape_words(shape, options)}"
            )
    if options.system_prompt is not None:
        own = sum(example.messages[0]["role"] == "system" for split in examples.values() for example in split)
        if own:
            notes.append(f"{_plural(own, 'example')} keep their own system message instead of system_prompt")
        examples = {
            split: [_with_system(example.messages, options.system_prompt) for example in split_examples]
            for split, split_examples in examples.items()
        }
    origins = {split: table.origin for split, table in tables.items()}
    return _split(examples, origins, options, source, notes)


def _shape(table: Table, options: _Options) -> str:
    """ "pairs" when the prompt and response columns are both there, else "messages" when the
    messages column is, else a LorakitError listing the columns present."""
    columns = [str(column) for column in table.frame.columns]
    if options.prompt_column in columns and options.response_column in columns:
        return "pairs"
    if options.messages_column in columns:
        return "messages"
    missing = " or ".join(repr(c) for c in (options.prompt_column, options.response_column) if c not in columns)
    # A CSV that is really tab-separated reads as one column named "prompt\tresponse".
    hint = "; it looks tab-separated: name the file .tsv" if any("\t" in name for name in columns) else ""
    raise LorakitError(
        f"{table.origin} has no {missing} column for prompt/response data and no {options.messages_column!r} column "
        f"for messages data; columns present: {columns}; name yours with prompt_column= and response_column=, "
        f"or messages_column={hint}"
    )


def _shape_words(shape: str, options: _Options) -> str:
    if shape == "pairs":
        return f"prompt_column ({options.prompt_column!r}) and response_column ({options.response_column!r})"
    return f"messages_column ({options.messages_column!r})"


def _pair_examples(table: Table, options: _Options) -> tuple[list[GenerativeExample], dict[str, list[int]]]:
    """Examples from prompt/response rows; the rows (1-based) with an empty prompt or response."""
    frame = table.frame
    prompts = frame[options.prompt_column].tolist()
    responses = frame[options.response_column].tolist()
    examples = []
    empty: dict[str, list[int]] = {reason: [] for reason in _EMPTY}
    for row, (prompt_value, response_value) in enumerate(zip(prompts, responses, strict=True), 1):
        prompt = _text(prompt_value, options.prompt_column, table.origin, row)
        response = _text(response_value, options.response_column, table.origin, row)
        if prompt is None:
            empty["empty prompt"].append(row)
        elif response is None:
            empty["empty response"].append(row)
        else:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            examples.append(GenerativeExample(messages))
    return examples, empty


def _message_examples(table: Table, options: _Options) -> tuple[list[GenerativeExample], dict[str, list[int]]]:
    """Examples from a messages column; the rows (1-based) with an empty message or none."""
    examples = []
    empty: dict[str, list[int]] = {reason: [] for reason in _EMPTY}
    for row, value in enumerate(table.frame[options.messages_column].tolist(), 1):
        messages = _messages(value, options.messages_column, table.origin, row)
        if not messages:
            empty["empty conversation"].append(row)
        elif not messages[-1]["content"].strip():
            empty["empty response"].append(row)
        elif not all(message["content"].strip() for message in messages):
            empty["empty prompt"].append(row)
        else:
            examples.append(GenerativeExample(messages))
    return examples, empty


def _messages(value: object, column: str, origin: str, row: int) -> list[dict[str, str]]:
    """One messages cell as checked `{"role", "content"}` dicts (content "" when missing); [] for
    a missing cell or an empty list. Raises a LorakitError naming the row for anything malformed."""
    where = f"row {row} of {origin}"
    if _is_missing(value):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise LorakitError(
                f"{where}: column {column!r} holds text that is not a JSON list of messages ({error.msg}); "
                'write it as [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]'
            ) from None
    if isinstance(value, np.ndarray):  # Parquet list columns read as numpy arrays
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise LorakitError(
            f"{where}: column {column!r} holds a {type(value).__name__}, not a list of messages; "
            "pick the column of message lists with messages_column="
        )
    messages = []
    for number, item in enumerate(value, 1):
        if not isinstance(item, dict):
            raise LorakitError(
                f"{where}: message {number} is a {type(item).__name__}, not an object with 'role' and 'content' "
                "(or 'from' and 'value')"
            )
        keys = ("role", "content") if "role" in item else ("from", "value") if "from" in item else None
        if keys is None:
            raise LorakitError(
                f"{where}: message {number} has neither 'role' nor 'from' (keys: {sorted(map(str, item))}); "
                "each message needs 'role' and 'content', or 'from' and 'value'"
            )
        role_name = item[keys[0]]
        role = _ROLES.get(role_name.strip().lower()) if isinstance(role_name, str) else None
        if role is None:
            raise LorakitError(
                f"{where}: message {number} has role {role_name!r}; use system, user (or human), assistant (or gpt)"
            )
        content = item.get(keys[1])
        if not isinstance(content, str) and not _is_missing(content):
            raise LorakitError(f"{where}: message {number}'s {keys[1]!r} is a {type(content).__name__}, not text")
        messages.append({"role": role, "content": content if isinstance(content, str) else ""})
    _check_turns([message["role"] for message in messages], where)
    return messages


def _check_turns(roles: list[str], where: str) -> None:
    """An optional system message, then user and assistant alternating, ending with the assistant."""
    if not roles:
        return
    if roles[-1] != "assistant":
        raise LorakitError(
            f"{where}: the conversation ends with a {roles[-1]} message, not the assistant's; "
            "each conversation must end with the assistant response to learn"
        )
    body = roles[1:] if roles[0] == "system" else roles
    for index, role in enumerate(body):
        number = index + 1 + (len(roles) - len(body))
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise LorakitError(
                f"{where}: message {number} is a {role} message where the {expected} turn belongs; after an optional "
                "first system message, user and assistant turns must alternate, starting with the user"
            )


def _apply_empty_policy(
    empty: dict[str, dict[str, list[int]]], tables: dict[str, Table], shape: str, options: _Options, notes: list[str]
) -> None:
    """Refuse the data (on_empty="fail") or note the skipped rows per reason and split."""
    total = sum(len(rows) for found in empty.values() for rows in found.values())
    if not total:
        return
    if options.on_empty == "fail":
        column = {
            "empty prompt": options.prompt_column if shape == "pairs" else options.messages_column,
            "empty response": options.response_column if shape == "pairs" else options.messages_column,
            "empty conversation": options.messages_column,
        }
        found = ", ".join(
            f"{tables[split].origin} has {_plural(len(rows), reason)} in column {column[reason]!r} "
            f"(first at row {rows[0]})"
            for split, reasons in empty.items()
            for reason, rows in reasons.items()
            if rows
        )
        raise LorakitError(
            f"{_plural(total, 'unusable row')}: {found}; fill them in or pass on_empty='skip' to drop them"
        )
    for reason, words in _EMPTY.items():
        counts = {split: len(found[reason]) for split, found in empty.items() if found[reason]}
        if counts:
            where = ", ".join(f"{split} {count:,}" for split, count in counts.items())
            notes.append(f"skipped {_plural(sum(counts.values()), 'row')} with {words} ({where})")


def _split(
    examples: dict[str, list[GenerativeExample]],
    origins: dict[str, str],
    options: _Options,
    source: str,
    notes: list[str],
) -> GenerativeData:
    """Carve the missing held-out splits from train by question, cap train, note shared questions."""
    train = examples["train"]
    keys = [question_key(example) for example in train]
    missing = [split for split in ("validation", "test") if split not in examples]
    if missing:
        sizes = [holdout_size(len(train), HOLDOUT_FRACTION) for _ in missing]
        rest, parts = grouped_split(keys, sizes, options.seed)
        if not len(rest) or not all(len(part) for part in parts):
            raise LorakitError(
                f"{origins['train']} has {_plural(len(set(keys)), 'distinct first user message')} in "
                f"{_plural(len(train), 'example')}, too few to carve {' and '.join(missing)} from it by question; "
                f"add {'/'.join(missing)} files or more examples"
            )
        for split, part in zip(missing, parts, strict=True):
            examples[split] = [train[i] for i in part]
            notes.append(
                f"{split}: {len(part):,} examples carved from train "
                f"({HOLDOUT_FRACTION:.0%}, grouped by first user message, seed {options.seed})"
            )
        examples["train"] = [train[i] for i in rest]
        keys = [keys[i] for i in rest]
    cap = options.max_train_examples
    if cap is not None and cap < len(examples["train"]):
        kept = np.sort(np.random.default_rng(options.seed).permutation(len(examples["train"]))[:cap])
        n = len(examples["train"])
        notes.append(f"train capped at {cap:,} of {n:,} examples (max_train_examples, seed {options.seed})")
        examples["train"] = [examples["train"][i] for i in kept]
        keys = [keys[i] for i in kept]
    seen = set(keys)
    for split in ("validation", "test"):
        shared = sum(question_key(example) in seen for example in examples[split])
        if shared:
            notes.append(f"{_plural(shared, f'{split} example')} share their first user message with train")
    return GenerativeData(**{split: examples[split] for split in SPLITS}, source=source, notes=notes)


def question_key(example: GenerativeExample) -> str:
    """The first user message, normalized: lower-cased, whitespace collapsed, trailing `.?!` dropped."""
    first = next(message["content"] for message in example.messages if message["role"] == "user")
    return " ".join(first.casefold().split()).rstrip(" .?!")


def grouped_split(keys: list[str], sizes: list[int], seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
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


def _with_system(messages: list[dict[str, str]], system_prompt: str | None) -> GenerativeExample:
    if system_prompt is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return GenerativeExample(messages)


def _text(value: object, column: str, origin: str, row: int) -> str | None:
    """A cell as text: None where missing or blank, numbers as their digits, other types refused."""
    if isinstance(value, str):
        return value if value.strip() else None
    if _is_missing(value):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_)):
        return str(value)
    raise LorakitError(
        f"column {column!r} of {origin} holds {type(value).__name__} values, not text (row {row}); pick a text column"
    )


def _is_missing(value: object) -> bool:
    if value is None or value is pd.NA:
        return True
    return isinstance(value, (float, np.floating)) and math.isnan(value)


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"
