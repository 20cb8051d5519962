"""Read one data file into a DataFrame, by extension, refusing files that are not what they say.

CSV/TSV cells are read as strings (so "007" stays a text and labels are typed later, the same way
for every format); JSON lines are parsed line by line so a broken line is named; Parquet files are
checked for their magic bytes first, so a renamed CSV gets a clear message rather than an Arrow
traceback.

Text files are UTF-8, with or without a byte-order mark (Excel writes one), or UTF-16 with its
byte-order mark (Excel's "Unicode Text"); a byte that is not UTF-8 is named by its line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from lorakit.data.wording import first_line, kind_of
from lorakit.errors import LorakitError
from lorakit.jsontext import loads

SUPPORTED_EXTENSIONS = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
_PARQUET_MAGIC = b"PAR1"
_UTF16_MARKS = (b"\xff\xfe", b"\xfe\xff")
_BYTE_ORDER_MARKS = (b"\xef\xbb\xbf", *_UTF16_MARKS)


def read_table(path: Path) -> pd.DataFrame:
    """The rows of a .csv, .tsv, .jsonl, .json (JSON lines or one array of objects) or .parquet file.

    Raises:
        LorakitError: an unsupported extension (the supported ones are listed), a missing or
            empty file, or content that does not parse as its extension says (where it fails).
    """
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_EXTENSIONS:
        raise LorakitError(
            f"{path.name}: unsupported file type {suffix or '(no extension)'!r}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise LorakitError(f"no such file: {path}")
    head = _head(path)
    if _blank(path, head):
        raise LorakitError(f"{path.name} is empty; it needs a header and at least one row")
    if suffix == ".parquet":
        frame = _read_parquet(path, head)
    elif head.startswith(_PARQUET_MAGIC):
        raise LorakitError(f"{path.name} is a Parquet file, not {suffix[1:].upper()} text; rename it to .parquet")
    elif suffix in (".csv", ".tsv"):
        frame = _read_delimited(path, "\t" if suffix == ".tsv" else ",", _encoding(head))
    else:
        frame = _read_json(path, _encoding(head))
    if frame.empty:
        raise LorakitError(f"{path.name} has no rows; it needs at least one row of data")
    return frame


def read_text_file(path: Path, kind: str = "") -> str:
    """The text of a UTF-8 file (`kind` names its format in the error: "CSV", "JSON").

    Raises:
        LorakitError: the file is not UTF-8 text, naming the first undecodable byte and the fix.
    """
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise _not_utf8(path, kind, error) from None


def _not_utf8(path: Path, kind: str, error: UnicodeDecodeError) -> LorakitError:
    described = f"UTF-8 {kind} text" if kind else "UTF-8 text"
    return LorakitError(
        f"{path.name} is not {described} (undecodable byte at position {error.start}); re-save it as UTF-8"
    )


def _head(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(64)


def _blank(path: Path, head: bytes) -> bool:
    """Whether the file holds nothing but whitespace, after a byte-order mark if it has one."""
    if head.strip() not in (b"", *_BYTE_ORDER_MARKS):
        return False
    data = path.read_bytes()  # read whole only when its start is blank
    for mark in _BYTE_ORDER_MARKS:
        data = data.removeprefix(mark)
    return not data.strip()


def _encoding(head: bytes) -> str:
    """UTF-16 when the file starts with its byte-order mark, else UTF-8 (a mark, if any, dropped)."""
    return "utf-16" if head.startswith(_UTF16_MARKS) else "utf-8-sig"


def _undecodable(path: Path, kind: str, encoding: str) -> LorakitError:
    """The error for a text file that does not decode, naming the first bad byte and its line
    (pandas decodes in chunks, so the position in its error is not the file's: find it here)."""
    data = path.read_bytes()
    try:
        data.decode(encoding)
        where = "an undecodable byte"  # only a chunked decoder's failure would get here
    except UnicodeDecodeError as error:
        line = data[: error.start].decode(encoding, errors="replace").count("\n") + 1
        where = f"byte 0x{data[error.start]:02x} on line {line:,}"
    named = "valid UTF-16" if encoding == "utf-16" else "UTF-8"
    return LorakitError(f"{path.name} is not {named} {kind} text ({where}); re-save it as UTF-8")


def _read_parquet(path: Path, head: bytes) -> pd.DataFrame:
    if not head.startswith(_PARQUET_MAGIC):
        start = head.decode("utf-8", errors="replace").splitlines()[0][:40]
        raise LorakitError(
            f"{path.name} is not a Parquet file (it starts with {start!r}); "
            "rename it to the extension of its real format (.csv, .tsv, .jsonl) or re-save it as Parquet"
        )
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise LorakitError(f"{path.name} is not a readable Parquet file ({first_line(error)}); re-save it") from None


def _read_delimited(path: Path, separator: str, encoding: str) -> pd.DataFrame:
    kind = "TSV" if separator == "\t" else "CSV"
    try:
        # keep_default_na=False: a text "NA" or "null" is a text; truly empty cells read as "".
        return pd.read_csv(path, sep=separator, dtype=str, keep_default_na=False, encoding=encoding)
    except UnicodeDecodeError:
        raise _undecodable(path, kind, encoding) from None
    except (pd.errors.ParserError, csv.Error) as error:
        raise LorakitError(
            f"{path.name} is not valid {kind}: {first_line(error)}; check quoting and separators"
        ) from None
    except pd.errors.EmptyDataError:
        raise LorakitError(f"{path.name} is empty; it needs a header and at least one row") from None


def _read_json(path: Path, encoding: str) -> pd.DataFrame:
    """JSON lines (one object per line), or for .json also a single array of objects."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError:
        raise _undecodable(path, "JSON", encoding) from None
    hint = "each line must be one JSON object"
    if path.suffix.lower() == ".json":
        if text.lstrip().startswith("["):
            return _read_json_array(path, text)
        hint += " (a .json file may also be one array of objects)"
    records = []
    # Lines end at "\n" only: str.splitlines would also split at U+2028 or U+0085, which JSON
    # strings may hold as they are.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as error:
            raise LorakitError(
                f"{path.name} line {number} is not valid JSON ({error.msg} at column {error.colno}); {hint}"
            ) from None
        if not isinstance(record, dict):
            raise LorakitError(f"{path.name} line {number} is a JSON {kind_of(record)}, not an object; {hint}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _read_json_array(path: Path, text: str) -> pd.DataFrame:
    try:
        records = loads(text)
    except json.JSONDecodeError as error:
        raise LorakitError(
            f"{path.name} is not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); "
            "it must be JSON lines or one array of objects"
        ) from None
    if not isinstance(records, list) or not all(isinstance(record, dict) for record in records):
        raise LorakitError(f"{path.name} must hold an array of JSON objects, one per row")
    return pd.DataFrame.from_records(records)
