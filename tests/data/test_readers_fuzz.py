"""Property: any data file, however malformed, loads or ends in one LorakitError line.

Hypothesis writes CSV, TSV, JSON lines, JSON arrays and Parquet files (alone, or as the split files
of a folder) and loads them for classification and for generation. Half the examples are plain:
the columns a loader looks for, cells it reads, one in thirty a junk cell, default options. The
other half are chaos: junk headers (blank, duplicated, padded, with separators), ragged rows, junk
cells (the spellings of nothing and of numbers, NUL, U+2028, JSON nested thousands deep, integers
of thousands of digits), huge cells, random JSON values and Parquet column types, encodings other
than UTF-8, invalid bytes spliced in, truncation, random bytes, random column options.

The only outcomes allowed: data that keeps the loaders' promises, or a `LorakitError` whose
message is one non-empty line. A third property reads well-formed files back cell for cell. The
Hypothesis profile (tests/conftest.py) sets how many examples each property tries; run with
`--hypothesis-show-statistics` to see how often each error message came up.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import event, given
from hypothesis import strategies as st

from lorakit import LorakitError
from lorakit.data import load_classification_data, load_generative_data
from lorakit.data.readers import read_table

COLUMNS = ["text", "label", "prompt", "response", "messages", "hypothesis"]
# Names a header may carry: the options' defaults, near misses and junk.
HEADER_NAMES = st.one_of(
    st.sampled_from([*COLUMNS, "", " ", "text ", "Text", "label\tx", "a,b", 'q"uote', "0", "nan"]),
    st.text(max_size=6),
)
MESSAGES = [
    '[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]',
    '[{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]',
    '[{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"}, {"role": "assistant"}]',
    '[{"role": "assistant", "content": "a"}]',
    '[{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]',
    '[{"role": ["user"], "content": "q"}]',
    '[{"content": "q"}]',
    "[1, 2]",
    '{"role": "user"}',
    "[",
    "[]",
    "[" * 3_000 + "]" * 3_000,  # deeper than Python's JSON parser recurses
    '[{"role": "user", "content": ' + "9" * 5_000 + "}]",  # longer than Python converts to an int
]
# Junk cells: the spellings of nothing, numbers and booleans, messages, any short text.
CELL_TEXTS = st.one_of(
    st.sampled_from(["", " ", "\t", "NA", "NaN", "nan", "null", "None", "inf", "-0", "1", "1.0", "2.5", "-3", "1e3"]),
    st.sampled_from(["True", "false", "pos", "a b c", "\n", '"', "'", ",", "\x00", "\u2028", "\x85", "\ufeff"]),
    st.sampled_from(["9" * 5_000, "1e999", "-0.0", "0x10"]),  # past int's digit limit, past float's range
    st.sampled_from(MESSAGES),
    st.text(max_size=12),
)
HUGE_CELL = st.builds(lambda char, size: char * size, st.sampled_from("xé\u4e2d"), st.integers(70_000, 140_000))
JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True), CELL_TEXTS
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "text"]), inner, max_size=2),
    max_leaves=6,
)
BROKEN_JSON_LINES = ["[1, 2]", '"text"', "3", "{", "null", "", "   ", "{'a': 1}", *MESSAGES[-2:]]
ENCODINGS = st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16", "cp1252"])
INVALID_BYTES = st.sampled_from([b"\x80", b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80"])  # continuation, overlong...
PARQUET_KINDS = st.sampled_from(["text", "int", "float", "bool", "list", "messages", "struct", "null"])
EXTENSIONS = st.sampled_from([".csv", ".tsv", ".jsonl", ".json", ".parquet"])
SPLIT_FILES = st.sampled_from([["data"], ["train"], ["train", "validation"], ["train", "dev", "test"]])
CLASSIFICATION_SHAPES = st.sampled_from([["text", "label"], ["text", "label", "hypothesis"]])
GENERATION_SHAPES = st.sampled_from([["prompt", "response"], ["messages"]])
# The cells a column usually holds, by its name: loads get past the checks of cells often enough to
# reach the later stages (labels, carving, caps) as well.
PLAIN_CELLS = {
    "label": st.sampled_from(["pos", "neg", "neutral", "0", "1", "2", " pos ", "1.0"]),
    "messages": st.sampled_from(MESSAGES[:2]),
}
WORDS = st.text(alphabet="abcdefgh é?.", min_size=1, max_size=15)


@st.composite
def tables(draw: st.DrawFn, shape: list[str], chaos: bool) -> tuple[list[str], list[list[str]]]:
    """A header and rows of text cells: the `shape` columns (and maybe one more), cells the loaders
    read, one in thirty a junk cell; with `chaos` one in ten, and junk headers, ragged rows, huge cells."""
    header = [*shape, *draw(st.lists(HEADER_NAMES, max_size=3 if chaos else 1))]
    if chaos and draw(st.booleans()):
        header = draw(st.lists(HEADER_NAMES, min_size=1, max_size=5))
    header = draw(st.permutations(header))
    ragged = chaos and draw(st.integers(0, 4)) == 0
    rows = []
    junk = st.integers(0, 9 if chaos else 29).map(lambda draw_: draw_ == 0)
    for _ in range(draw(st.integers(0, 40))):
        cells = [draw(CELL_TEXTS if draw(junk) else PLAIN_CELLS.get(name, WORDS)) for name in header]
        if ragged and draw(st.booleans()):
            cells = cells[:-1] if draw(st.booleans()) else [*cells, draw(CELL_TEXTS)]
        rows.append(cells)
    if chaos and rows and draw(st.integers(0, 4)) == 0:
        row = rows[draw(st.integers(0, len(rows) - 1))]
        if row:
            row[draw(st.integers(0, len(row) - 1))] = draw(HUGE_CELL)
    return header, rows


def delimited_text(header: list[str], rows: list[list[str]], separator: str, quoting: int | None) -> str:
    """The table as CSV/TSV text, quoted by the csv module, or with `quoting` None its cells joined
    raw (so a separator, quote or newline inside a cell breaks the row, as in hand-made files)."""
    if quoting is None:
        return "".join(separator.join(cells) + "\n" for cells in [header, *rows])
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=separator, quoting=quoting, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


@st.composite
def json_text(draw: st.DrawFn, header: list[str], rows: list[list[str]], array: bool, chaos: bool) -> str:
    """Rows as JSON objects, one per line or one array, non-ASCII escaped or raw (U+2028 too, as
    JSON allows); with `chaos` some cells random JSON values and maybe one line no object, or no JSON."""
    records = []
    for row in rows:
        # A ragged row's cells beyond the header are dropped, its missing ones left out of the object.
        values = [draw(JSON_VALUES) if chaos and draw(st.integers(0, 19)) == 0 else cell for cell in row]
        records.append(dict(zip(header, values, strict=False)))
    ascii_only = draw(st.booleans())
    if array:
        return json.dumps(records, ensure_ascii=ascii_only)
    lines = [json.dumps(record, ensure_ascii=ascii_only) for record in records]
    if chaos and lines and draw(st.integers(0, 5)) == 0:
        lines[draw(st.integers(0, len(lines) - 1))] = draw(st.sampled_from(BROKEN_JSON_LINES))
    return "\n".join(lines) + draw(st.sampled_from(["\n", "", "\n\n"]))


def parquet_column(draw: st.DrawFn, cells: list[str | None], kind: str) -> list:
    """A column of `kind`: the cells as texts, or as many values of another type."""
    values = {
        "text": lambda cell: cell,
        "int": lambda _: draw(st.integers(-5, 5)),
        "float": lambda _: draw(st.sampled_from([0.0, 1.0, 2.5, math.nan, -1.0])),
        "bool": lambda _: draw(st.booleans()),
        "list": lambda _: draw(st.lists(st.text(max_size=3), max_size=2)),
        "messages": lambda _: json.loads(draw(st.sampled_from(MESSAGES[:2]))),
        "struct": lambda cell: {"role": "user", "content": cell},
        "null": lambda _: None,
    }[kind]
    return [values(cell) for cell in cells]


@st.composite
def parquet_bytes(draw: st.DrawFn, header: list[str], rows: list[list[str]], chaos: bool) -> bytes:
    """The table as Parquet (columns of unique names); with `chaos` some columns of other types
    (integers, floats with NaN, booleans, lists, message lists, structs, nulls)."""
    columns = {}
    for index, name in enumerate(dict.fromkeys(header)):
        cells = [row[index] if index < len(row) else None for row in rows]
        columns[name or "unnamed"] = parquet_column(draw, cells, draw(PARQUET_KINDS) if chaos else "text")
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer, index=False)
    return buffer.getvalue()


@st.composite
def data_files(draw: st.DrawFn, extension: str, shape: list[str], chaos: bool) -> bytes:
    """The bytes of a file with `extension` (see `tables`); with `chaos` maybe in another encoding
    than UTF-8, and sometimes damaged: invalid bytes spliced in, truncated, or random bytes."""
    header, rows = draw(tables(shape, chaos))
    if extension == ".parquet":
        content = draw(parquet_bytes(header, rows, chaos))
    elif extension in (".csv", ".tsv"):
        quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, None]))
        text = delimited_text(header, rows, "\t" if extension == ".tsv" else ",", quoting)
        content = text.encode(draw(ENCODINGS) if chaos else "utf-8", errors="replace")
    else:
        text = draw(json_text(header, rows, extension == ".json" and draw(st.booleans()), chaos))
        content = text.encode(draw(ENCODINGS) if chaos else "utf-8", errors="replace")
    damage = draw(st.sampled_from(["bytes", "truncate", "garbage"])) if chaos and draw(st.booleans()) else None
    if damage == "bytes":
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(INVALID_BYTES) + content[at:]
    elif damage == "truncate":
        content = content[: draw(st.integers(0, len(content)))]
    elif damage == "garbage":
        content = draw(st.binary(max_size=200))
    return content


@st.composite
def sources(draw: st.DrawFn, folder: Path, shapes: st.SearchStrategy[list[str]], chaos: bool) -> str:
    """One file, or a folder of split files, written under `folder`, each of a shape from `shapes`."""
    splits = draw(SPLIT_FILES)
    if splits != ["data"]:
        folder = folder / "splits"
        folder.mkdir()
    for split in splits:
        extension = draw(EXTENSIONS)
        (folder / f"{split}{extension}").write_bytes(draw(data_files(extension, draw(shapes), chaos)))
    return str(folder / f"data{extension}") if splits == ["data"] else str(folder)


def assert_one_line(error: LorakitError) -> None:
    """The error is one non-empty line; its gist (quoted names and numbers blanked) is counted in
    Hypothesis' statistics."""
    message = str(error)
    event(re.sub(r"'[^']*'|\"[^\"]*\"|\d+", "_", message)[:70])
    assert message.strip(), "empty error message"
    assert "\n" not in message and "\r" not in message, f"message spans several lines: {message!r}"


COLUMN_OPTION = st.one_of(st.sampled_from(COLUMNS), HEADER_NAMES)


def option(data: st.DataObject, chaos: bool, default: object, other: st.SearchStrategy) -> object:
    """`default`, or with `chaos` now and then a value drawn from `other`."""
    return data.draw(other) if chaos and data.draw(st.integers(0, 3)) == 0 else default


@given(data=st.data(), chaos=st.booleans())
def test_classification_loads_any_file_or_says_why_in_one_line(data: st.DataObject, chaos: bool) -> None:
    options = {
        "text_column": option(data, chaos, "text", COLUMN_OPTION),
        "label_column": option(data, chaos, "label", COLUMN_OPTION),
        "text_pair_column": option(data, chaos, None, COLUMN_OPTION),
        "on_empty": data.draw(st.sampled_from(["skip", "fail"])),
        "allow_single_class": data.draw(st.booleans()),
        "carve_missing_splits": data.draw(st.booleans()),
        "max_train_examples": data.draw(st.none() | st.integers(1, 40)),
    }
    with tempfile.TemporaryDirectory() as folder:
        source = data.draw(sources(Path(folder), CLASSIFICATION_SHAPES, chaos))
        try:
            loaded = load_classification_data(source, **options)
        except LorakitError as error:
            assert_one_line(error)
            return
    event("loaded")
    classes = len(loaded.label_names)
    assert loaded.train.texts and (classes >= 2 or options["allow_single_class"])
    for split in loaded.splits().values():
        assert all(isinstance(text, str) and text.strip() for text in split.texts)
        assert all(0 <= label < classes for label in split.labels)
        assert split.text_pairs is None or all(isinstance(pair, str) and pair.strip() for pair in split.text_pairs)


@given(data=st.data(), chaos=st.booleans())
def test_generation_loads_any_file_or_says_why_in_one_line(data: st.DataObject, chaos: bool) -> None:
    options = {
        "prompt_column": option(data, chaos, "prompt", COLUMN_OPTION),
        "response_column": option(data, chaos, "response", COLUMN_OPTION),
        "messages_column": option(data, chaos, "messages", COLUMN_OPTION),
        "system_prompt": option(data, chaos, None, st.text(max_size=5)),
        "on_empty": data.draw(st.sampled_from(["skip", "fail"])),
        "max_validation_examples": data.draw(st.none() | st.integers(1, 10)),
    }
    with tempfile.TemporaryDirectory() as folder:
        source = data.draw(sources(Path(folder), GENERATION_SHAPES, chaos))
        try:
            loaded = load_generative_data(source, **options)
        except LorakitError as error:
            assert_one_line(error)
            return
    event("loaded")
    assert loaded.train
    for split in loaded.splits().values():
        for example in split:
            roles = [message["role"] for message in example.messages]
            assert roles[-1] == "assistant" and set(roles) <= {"system", "user", "assistant"}
            assert all(isinstance(message["content"], str) for message in example.messages)


# Any text a cell may hold, save NUL (CSV readers and writers disagree on it) and lone surrogates
# (not encodable).
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@given(
    header=st.lists(st.text(alphabet="abcxyz_", min_size=1, max_size=5), min_size=2, max_size=4, unique=True),
    data=st.data(),
    extension=EXTENSIONS,
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16"]),
)
def test_read_table_returns_every_cell_of_a_well_formed_file_as_written(
    header: list[str], data: st.DataObject, extension: str, encoding: str
) -> None:
    """A file written by the usual tools (csv, json, pandas) in UTF-8, UTF-8 with a byte-order mark
    or UTF-16 reads back cell for cell: quotes, separators, newlines, U+2028 and the like inside
    cells included."""
    rows = data.draw(st.lists(st.lists(ANY_TEXT, min_size=len(header), max_size=len(header)), min_size=1, max_size=8))
    records = [dict(zip(header, row, strict=True)) for row in rows]
    text = {
        ".csv": lambda: delimited_text(header, rows, ",", csv.QUOTE_ALL),
        ".tsv": lambda: delimited_text(header, rows, "\t", csv.QUOTE_ALL),
        ".json": lambda: json.dumps(records, ensure_ascii=False),
        ".jsonl": lambda: "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records),
        ".parquet": lambda: None,
    }[extension]()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{extension}"
        if text is None:
            pd.DataFrame(rows, columns=header).to_parquet(path, index=False)
        else:
            path.write_bytes(text.encode(encoding))
        frame = read_table(path)
    assert list(frame.columns) == header
    assert frame.astype(object).values.tolist() == rows
