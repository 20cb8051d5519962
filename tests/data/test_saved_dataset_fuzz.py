"""Property: a `datasets` save_to_disk folder with any of its metadata files damaged loads or ends
in one LorakitError line.

`datasets.load_from_disk` reads dataset_dict.json, state.json and dataset_info.json without
checking their shape; Hypothesis gives one of them a junk value for one key, drops a key, or
replaces the file with junk JSON or no JSON, or truncates the Arrow data.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from lorakit import LorakitError
from lorakit.data import load_classification_data

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.text(max_size=5),
    st.lists(st.text(max_size=3) | st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2),
)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DatasetDict (train and validation) saved with save_to_disk."""
    from datasets import Dataset, DatasetDict

    def split(rows: int) -> Dataset:
        return Dataset.from_dict({"text": [f"t{i}" for i in range(rows)], "label": [i % 2 for i in range(rows)]})

    folder = tmp_path_factory.mktemp("saved") / "data"
    DatasetDict(train=split(20), validation=split(6)).save_to_disk(folder)
    return folder


def damaged(draw: st.DrawFn, file: Path) -> bytes:
    """`file` with one damage: a key's value replaced or the key dropped (at the top or one level
    down), the whole file junk JSON or no JSON, or an Arrow file truncated."""
    content = file.read_bytes()
    if file.suffix == ".arrow":
        return content[: draw(st.integers(0, len(content) - 1))]
    how = draw(st.sampled_from(["value", "value", "drop", "whole"]))
    data = json.loads(content)
    if how == "whole" or not isinstance(data, dict) or not data:
        return draw(st.sampled_from([b"", b"{", b"[]", b"null"]) | JUNK.map(lambda v: json.dumps(v).encode()))
    key = draw(st.sampled_from(sorted(data)))
    target = data
    if isinstance(data[key], dict) and data[key] and draw(st.booleans()):
        target, key = data[key], draw(st.sampled_from(sorted(data[key])))
    if how == "drop":
        del target[key]
    else:
        target[key] = draw(JUNK)
    return json.dumps(data).encode()


@given(data=st.data())
def test_any_damaged_saved_dataset_loads_or_says_why_in_one_line(saved: Path, data: st.DataObject) -> None:
    files = sorted(path.relative_to(saved) for path in saved.rglob("*") if path.is_file())
    with tempfile.TemporaryDirectory() as into:
        target = Path(into) / "data"
        shutil.copytree(saved, target)
        file = target / data.draw(st.sampled_from(files))
        file.write_bytes(damaged(data.draw, file))
        try:
            loaded = load_classification_data(str(target))
        except LorakitError as error:
            event(str(error).split(": ", 1)[-1][:60])
            assert str(error).strip() and "\n" not in str(error)
            return
    event("loaded")
    assert loaded.train.texts
