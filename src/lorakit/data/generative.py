"""Instruction-tuning data: a source's split tables → conversations that end with the answer to learn.

```python
from lorakit.data.generative import load_generative_data
data = load_generative_data("chatterbot")             # or a file, a folder, a Hub name
data.train[0].prompt_messages, data.train[0].response
```

Sources (read by `lorakit.data.sources`), first match wins: the builtin `chatterbot`; a path: one
.jsonl/.json/.csv/.tsv/.parquet file (all train), a folder of split files (`train.*`,
`validation.*`/`valid.*`/`val.*`/`dev.*`, `test.*`) or a `datasets` save_to_disk folder; else a
Hugging Face Hub dataset (`name` or `name:config`).

Rows come in one of two shapes; the first whose columns are all present is used:

- `prompt_column` + `response_column`: one user turn and the assistant's answer;
- `messages_column`: a list of messages (see `lorakit.data.messages`), OpenAI or ShareGPT style,
  ending with the assistant's response; in CSV/TSV the cell holds the list as JSON text.

`system_prompt` is put first in every conversation that has no system message of its own. Rows
with an empty or missing prompt, response or message (a blank text counts as missing) are
skipped with a note or refused (`lorakit.data.policy`).

Splits. A split the source lacks is carved from train: 10 % each for validation and test,
grouped by the first user message (lower-cased, whitespace collapsed, trailing `.?!` dropped), so
a question is never in two splits, even when it comes with different answers. The grouping fills
each held-out split whole questions at a time, in a seeded random order (`grouped_split` of
`lorakit.data.splits`). Given validation/test splits are kept as they are; questions they share
with train are counted in the notes.

The builtin `chatterbot` (see `lorakit.data.chatterbot`): 898 distinct conversations, no split
shipped, carved by question 80/10/10: train 718 · validation 90 · test 90 (sizes that hold for
every seed: single questions top the held-out splits up).
"""

from __future__ import annotations

from lorakit.data.cells import text_cell
from lorakit.data.chatterbot import chatterbot_source
from lorakit.data.messages import read_messages
from lorakit.data.options import GenerativeOptions, resolve_options
from lorakit.data.policy import EmptyReason, UnusableRows, apply_empty_policy
from lorakit.data.sources import SPLITS, Table, read_source, source_name
from lorakit.data.splits import grouped_split, holdout_size, random_subset
from lorakit.data.types import GenerativeData, GenerativeExample
from lorakit.data.wording import plural
from lorakit.errors import LorakitError, option_name, option_setting

_READERS = {"chatterbot": chatterbot_source}
GENERATIVE_BUILTINS: tuple[str, ...] = tuple(_READERS)
HOLDOUT_FRACTION = 0.1

# Why an example is unusable, and the words for it in notes ("skipped 2 rows with an empty prompt").
_EMPTY = {"empty prompt": "an empty prompt", "empty response": "an empty response", "empty conversation": "no messages"}


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
    max_validation_examples: int | None = None,
    options: GenerativeOptions | None = None,
) -> GenerativeData:
    """Load conversations for causal-LM instruction tuning or seq2seq as train/validation/test.

    Args:
        source: `chatterbot`, a path, or a Hub dataset name (see the module docstring).
        prompt_column, response_column: the columns of prompt/response data.
        messages_column: the column of messages data (used when the prompt/response pair is absent).
        system_prompt: a system message put first in conversations that have none.
        on_empty: rows with an empty or missing prompt, response or message: "skip" drops them
            with a note, "fail" refuses the data.
        seed: seeds the carved splits and the caps; the same seed, the same splits.
        max_train_examples: keep a random sample of this many train examples (after carving).
        max_validation_examples: keep a random sample of this many validation examples (the
            test split stays whole).
        options: all of the above as one `GenerativeOptions`, already validated; pass either it
            or the keywords above.

    Raises:
        LorakitError: one line naming the problem (a missing column, empty prompts or responses,
            a malformed message, a conversation not ending with the assistant, no usable
            examples, a malformed file, an unreachable name) and the fix.
        TypeError: `options` comes with a keyword changed from its default.
    """
    fields = {
        "prompt_column": prompt_column,
        "response_column": response_column,
        "messages_column": messages_column,
        "system_prompt": system_prompt,
        "on_empty": on_empty,
        "seed": seed,
        "max_train_examples": max_train_examples,
        "max_validation_examples": max_validation_examples,
    }
    options = resolve_options(GenerativeOptions, options, fields)
    name = source_name(source)
    if name in GENERATIVE_BUILTINS:
        options.check_builtin_columns(name)
    column_sets = [[options.prompt_column, options.response_column], [options.messages_column]]
    read = read_source(name, _READERS, column_sets)
    return _assemble(read.tables, options, name, list(read.notes))


def _assemble(tables: dict[str, Table], options: GenerativeOptions, source: str, notes: list[str]) -> GenerativeData:
    """Parse each split's rows into examples, apply the empty-row policy, then split and cap."""
    shape = _shape(tables["train"], options)
    reasons = _reasons(shape, options)
    examples: dict[str, list[GenerativeExample]] = {}
    unusable: UnusableRows = {}
    for split, table in tables.items():
        if split != "train" and _shape(table, options) != shape:
            raise LorakitError(
                f"{table.origin} is {_shape_words(_shape(table, options), options)} but "
                f"{tables['train'].origin} is {_shape_words(shape, options)}; give every split the same columns"
            )
        parse = _pair_examples if shape == "pairs" else _message_examples
        examples[split], unusable[split] = parse(table, options)
    origins = {split: table.origin for split, table in tables.items()}
    apply_empty_policy(unusable, reasons, origins, options.on_empty, notes)
    for split, table in tables.items():
        if not examples[split]:
            raise LorakitError(
                f"{table.origin} has no usable examples: every row has an empty prompt or response; "
                f"check {_shape_words(shape, options)}"
            )
    if options.system_prompt is not None:
        own = sum(example.messages[0]["role"] == "system" for split in examples.values() for example in split)
        if own:
            notes.append(f"{plural(own, 'example')} keep their own system message instead of system_prompt")
        examples = {
            split: [_with_system(example.messages, options.system_prompt) for example in split_examples]
            for split, split_examples in examples.items()
        }
    return _split(examples, origins, options, source, notes)


def _shape(table: Table, options: GenerativeOptions) -> str:
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
        f"for messages data; columns present: {columns}; name yours with "
        f"{option_setting('prompt_column', '<column>')} and {option_setting('response_column', '<column>')}, "
        f"or {option_setting('messages_column', '<column>')}{hint}"
    )


def _shape_words(shape: str, options: GenerativeOptions) -> str:
    """The options that name the columns of a shape, for messages."""
    if shape == "pairs":
        return (
            f"{option_name('prompt_column')} ({options.prompt_column!r}) and "
            f"{option_name('response_column')} ({options.response_column!r})"
        )
    return f"{option_name('messages_column')} ({options.messages_column!r})"


def _reasons(shape: str, options: GenerativeOptions) -> list[EmptyReason]:
    """The empty-row reasons of a shape, each with the column it is found in."""
    pairs = shape == "pairs"
    columns = {
        "empty prompt": options.prompt_column if pairs else options.messages_column,
        "empty response": options.response_column if pairs else options.messages_column,
        "empty conversation": options.messages_column,
    }
    return [EmptyReason(name, columns[name], "row", f" with {words}") for name, words in _EMPTY.items()]


def _pair_examples(table: Table, options: GenerativeOptions) -> tuple[list[GenerativeExample], dict[str, list[int]]]:
    """Examples from prompt/response rows; the rows (1-based) with an empty prompt or response."""
    frame = table.frame
    prompts = frame[options.prompt_column].tolist()
    responses = frame[options.response_column].tolist()
    examples = []
    unusable: dict[str, list[int]] = {reason: [] for reason in _EMPTY}
    for row, (prompt_value, response_value) in enumerate(zip(prompts, responses, strict=True), 1):
        prompt = text_cell(prompt_value, options.prompt_column, table.origin, row)
        response = text_cell(response_value, options.response_column, table.origin, row)
        if prompt is None:
            unusable["empty prompt"].append(row)
        elif response is None:
            unusable["empty response"].append(row)
        else:
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            examples.append(GenerativeExample(messages))
    return examples, unusable


def _message_examples(table: Table, options: GenerativeOptions) -> tuple[list[GenerativeExample], dict[str, list[int]]]:
    """Examples from a messages column; the rows (1-based) with an empty message or none."""
    examples = []
    unusable: dict[str, list[int]] = {reason: [] for reason in _EMPTY}
    for row, value in enumerate(table.frame[options.messages_column].tolist(), 1):
        messages = read_messages(value, options.messages_column, table.origin, row)
        if not messages:
            unusable["empty conversation"].append(row)
        elif not messages[-1]["content"].strip():
            unusable["empty response"].append(row)
        elif not all(message["content"].strip() for message in messages):
            unusable["empty prompt"].append(row)
        else:
            examples.append(GenerativeExample(messages))
    return examples, unusable


def _cap(
    examples: dict[str, list[GenerativeExample]], split: str, cap: int | None, seed: int, notes: list[str]
) -> range | list[int]:
    """Keep a seeded random `cap` of `split` (in their order); returns the kept indices."""
    n = len(examples[split])
    if cap is None or cap >= n:
        return range(n)
    kept = random_subset(n, cap, seed).tolist()
    notes.append(f"{split} capped at {cap:,} of {n:,} examples (max_{split}_examples, seed {seed})")
    examples[split] = [examples[split][i] for i in kept]
    return kept


def _split(
    examples: dict[str, list[GenerativeExample]],
    origins: dict[str, str],
    options: GenerativeOptions,
    source: str,
    notes: list[str],
) -> GenerativeData:
    """Carve the missing held-out splits from train by question, cap train and validation, note
    shared questions."""
    keys = _carve_missing_splits(examples, origins["train"], options.seed, notes)
    kept = _cap(examples, "train", options.max_train_examples, options.seed, notes)
    keys = [keys[i] for i in kept]
    _cap(examples, "validation", options.max_validation_examples, options.seed, notes)
    seen = set(keys)
    for split in ("validation", "test"):
        shared = sum(question_key(example) in seen for example in examples[split])
        if shared:
            notes.append(f"{plural(shared, f'{split} example')} share their first user message with train")
    return GenerativeData(**{split: examples[split] for split in SPLITS}, source=source, notes=notes)


def _carve_missing_splits(
    examples: dict[str, list[GenerativeExample]], train_origin: str, seed: int, notes: list[str]
) -> list[str]:
    """Hold validation and/or test out of train by question when the source lacks them; returns
    the question keys of the train examples left."""
    train = examples["train"]
    keys = [question_key(example) for example in train]
    missing = [split for split in ("validation", "test") if split not in examples]
    if not missing:
        return keys
    sizes = [holdout_size(len(train), HOLDOUT_FRACTION) for _ in missing]
    rest, parts = grouped_split(keys, sizes, seed)
    if not len(rest) or not all(len(part) for part in parts):
        raise LorakitError(
            f"{train_origin} has {plural(len(set(keys)), 'distinct first user message')} in "
            f"{plural(len(train), 'example')}, too few to carve {' and '.join(missing)} from it by question; "
            f"add {'/'.join(missing)} files or more examples"
        )
    for split, part in zip(missing, parts, strict=True):
        examples[split] = [train[i] for i in part]
        notes.append(
            f"{split}: {plural(len(part), 'example')} carved from train "
            f"({HOLDOUT_FRACTION:.0%}, grouped by first user message, seed {seed})"
        )
    examples["train"] = [train[i] for i in rest]
    return [keys[i] for i in rest]


def question_key(example: GenerativeExample) -> str:
    """The first user message, normalized: lower-cased, whitespace collapsed, trailing `.?!` dropped."""
    first = next(message["content"] for message in example.messages if message["role"] == "user")
    return " ".join(first.casefold().split()).rstrip(" .?!")


def _with_system(messages: list[dict[str, str]], system_prompt: str | None) -> GenerativeExample:
    """The conversation with `system_prompt` put first, unless it has a system message already."""
    if system_prompt is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return GenerativeExample(messages)
