"""Property: any training config, from Python, a YAML/JSON file or flags, is a valid `TrainConfig`
or one LorakitError line.

Hypothesis gives every field a value of a random type (its own, or None, booleans, integers up to
2**70, NaN and infinities, texts such as "5e-4", "on", "(", lists, mappings), adds unknown fields
and dashed names, and writes the lot as YAML (including YAML 1.1's own words and aliases), as
JSON, as junk text or junk bytes, for `lorakit train --config`. A config that is accepted holds
the declared type in every field, finite numbers, and survives its own config.yaml (what `--resume`
reads back) unchanged.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import typing
from pathlib import Path

import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from lorakit.cli.train import validate_train_flags
from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind
from lorakit.train.config import TrainConfig, read_config_file

FIELDS = {field.name: field for field in dataclasses.fields(TrainConfig)}
HINTS = typing.get_type_hints(TrainConfig)
WORDS = ["5e-4", "1e-3", "0.1", "on", "off", "yes", "auto", "nan", "-inf", "4GiB", "0", "-1", "query,value", "("]
WORDS += ["all-linear", "causal-lm", "seq2seq", "lora", "full", "nf4", "bnb-nf4", "cosine", "bf16", "", " "]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.sampled_from(WORDS),
    st.text(max_size=8),
    st.lists(st.sampled_from(["query", "value", "", "q_proj"]) | st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers() | st.text(max_size=3), max_size=2),
)


def plausible(name: str) -> st.SearchStrategy:
    """A value of the field's own type, in a range that is often valid."""
    meta, hint = FIELDS[name].metadata, HINTS[name]
    if meta["choices"]:
        return st.sampled_from(meta["choices"])
    members = set(typing.get_args(hint) or (hint,))
    if bool in members:
        return st.booleans()
    if int in members and float not in members:
        return st.integers(0, 300)
    if float in members:
        return st.floats(0.0, 1.0) | st.integers(1, 10)
    return st.sampled_from(["text", "label", "pair", "q_proj,v_proj", "512MiB", "hello"])


@st.composite
def settings_dicts(draw: st.DrawFn) -> dict:
    """Field name (sometimes dashed) → a plausible value or junk, for a random subset of the fields;
    sometimes an unknown field."""
    settings = {}
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=8, unique=True)):
        value = draw(JUNK if draw(st.integers(0, 2)) == 0 else plausible(name))
        settings[name.replace("_", "-") if draw(st.booleans()) else name] = value
    if draw(st.integers(0, 9)) == 0:
        settings[draw(st.sampled_from(["learning_rate", "lora-r", "nested", "Task"]))] = draw(JUNK)
    return settings


def assert_one_line(error: LorakitError) -> None:
    """The error is one non-empty line; its opening words are counted in Hypothesis' statistics."""
    message = str(error)
    event(" ".join(message.split()[:3]))
    assert message.strip() and "\n" not in message and "\r" not in message, repr(message)


def assert_well_typed(config: TrainConfig) -> None:
    """Every field holds its declared type (a bool a bool, an int no bool, a float finite)."""
    for name, hint in HINTS.items():
        value = getattr(config, name)
        members = typing.get_args(hint) or (hint,)
        kinds = tuple(typing.get_origin(member) or member for member in members)
        assert isinstance(value, kinds) or (float in kinds and type(value) is int), (name, value)
        if isinstance(value, bool):
            assert bool in kinds, (name, value)
        if isinstance(value, float):
            assert math.isfinite(value), (name, value)
    assert isinstance(config.task, TaskKind)


def assert_resumes_as_saved(config: TrainConfig, folder: Path) -> None:
    """config.yaml, as `lorakit train` writes it and `--resume` reads it, gives the same config."""
    config.save(folder / "config.yaml")
    assert TrainConfig.from_dict(read_config_file(folder / "config.yaml")) == config


@given(settings=settings_dicts())
def test_any_settings_make_a_well_typed_config_or_one_error_line(settings: dict) -> None:
    try:
        config = TrainConfig.from_dict({key.replace("-", "_"): value for key, value in settings.items()})
    except LorakitError as error:
        assert_one_line(error)
        return
    event("accepted")
    assert_well_typed(config)
    with tempfile.TemporaryDirectory() as folder:
        assert_resumes_as_saved(config, Path(folder))


YAML_TEXTS = [
    "lr: 5e-4\n",  # YAML 1.1 reads this as a string
    "epochs: .inf\n",
    "weight_decay: .nan\n",
    "packing: on\nfsdp: no\n",
    "task: causal-lm\nbatch-size: 4\nbatch_size: 8\n",
    "seed: 2024-01-01\n",
    "a: &a [x, y]\ntarget_modules: *a\n",
    "target_modules: &b [*b]\n",
    "r: !!binary aGVsbG8=\n",
    "r: !!python/object:os.system ls\n",
    "- r: 4\n",
    "r: [" * 3_000 + "]" * 3_000 + "\n",
    "r: " + "9" * 5_000 + "\n",
    "max_memory: 4096\n",
    "r: 4\n\tlr: 1\n",
    "",
    "---\n---\n",
]


@st.composite
def config_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """(suffix, content) of a config file: a settings mapping as YAML or JSON, a known YAML trap,
    or junk text and bytes."""
    kind = draw(st.sampled_from(["yaml", "yaml", "json", "trap", "text", "bytes"]))
    if kind == "trap":
        return ".yaml", draw(st.sampled_from(YAML_TEXTS)).encode()
    if kind == "text":
        return draw(st.sampled_from([".yaml", ".json"])), draw(st.text(max_size=40)).encode()
    if kind == "bytes":
        return draw(st.sampled_from([".yaml", ".json"])), draw(st.binary(max_size=40))
    settings = draw(settings_dicts())
    if kind == "json":
        import json

        return ".json", json.dumps(settings).encode()
    return ".yaml", yaml.safe_dump(settings).encode()


@given(file=config_files())
def test_any_config_file_gives_a_well_typed_config_or_one_error_line(file: tuple[str, bytes]) -> None:
    """`lorakit train --config FILE`, resolved as the command resolves it (without training)."""
    suffix, content = file
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"run{suffix}"
        path.write_bytes(content)
        try:
            config = validate_train_flags(["--config", str(path)])
        except LorakitError as error:
            assert_one_line(error)
            return
        event("accepted")
        assert_well_typed(config)
        assert_resumes_as_saved(config, Path(folder))


FLAG_VALUES = st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers(-5, 2**40).map(str))


@given(data=st.data())
def test_any_command_line_gives_a_well_typed_config_or_one_error_line(data: st.DataObject) -> None:
    """`lorakit train` with random flags and values (flags of every field, unknown ones, no value)."""
    flags = []
    for name in data.draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=5)):
        flags.append(f"--{name.replace('_', '-')}")
        if HINTS[name] is not bool and data.draw(st.integers(0, 5)):
            flags.append(data.draw(FLAG_VALUES))
    if data.draw(st.integers(0, 9)) == 0:
        flags.insert(data.draw(st.integers(0, len(flags))), data.draw(st.sampled_from(["--lr-max", "-x", "extra"])))
    try:
        config = validate_train_flags(flags)
    except LorakitError as error:
        assert_one_line(error)
        return
    event("accepted")
    assert_well_typed(config)
