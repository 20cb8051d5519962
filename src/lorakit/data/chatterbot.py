"""The builtin `chatterbot`: the ChatterBot English corpus (chatterbot-corpus 1.3.3) as cleaned
conversations, read as a source of one train table with a messages column.

The package ships `data/english/*.yml`, each a mapping with `categories` (names) and
`conversations`: a list of conversations, each a list of turns, read as alternating
user / assistant messages (turn 0 user, turn 1 assistant, ...). The files are parsed with YAML's
base loader, which keeps every scalar as the string written (a safe loader would turn an answer
`yes` into True and `3.0` into a float, so the text the model learns would not be the text in the
file). The package's code is never imported.

Clean-up, in order, each counted in the notes:

- entries that are not a list of strings (one trivia entry is a bare string) are skipped;
- turns are stripped; a conversation with an empty turn is skipped;
- a conversation with an odd number of turns ends with a user turn: that last turn is dropped;
- conversations left with fewer than two turns are skipped;
- exactly repeated conversations are kept once (tech_support.yml alone repeats its 10 dialogues
  over 1,050 entries).

The 2,026 entries of the 21 English files give 898 distinct conversations: 830 of one question
and its answer, 68 of two to thirteen exchanges.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from lorakit.data.sources import Source, Table
from lorakit.errors import LorakitError
from lorakit.packages import package_dir

CHATTERBOT_REQUIREMENT = "chatterbot-corpus==1.3.3"
_ENGLISH = "data/english"
# libyaml's C parser when the wheel has it (a few times faster), else the pure-Python one.
_LOADER = getattr(yaml, "CBaseLoader", yaml.BaseLoader)


def chatterbot_source() -> Source:
    """The installed corpus's English conversations as the "messages" column of one train table,
    with notes on the clean-up.

    Raises:
        LorakitError: chatterbot-corpus is not installed (the message gives the pip command), or
            its English files are missing or not the corpus format.
    """
    folder = package_dir("chatterbot_corpus", CHATTERBOT_REQUIREMENT) / _ENGLISH
    files = sorted(folder.glob("*.yml"))
    if not files:
        raise LorakitError(
            f"{CHATTERBOT_REQUIREMENT} is installed but {folder} has no .yml files; "
            f"reinstall it: pip install --no-deps --force-reinstall {CHATTERBOT_REQUIREMENT}"
        )
    conversations, notes = read_conversations(files)
    return Source("chatterbot", {"train": Table(pd.DataFrame({"messages": conversations}), "chatterbot")}, notes)


def read_conversations(files: list[Path]) -> tuple[list[list[dict[str, str]]], list[str]]:
    """Parse and clean corpus YAML files (see the module docstring), in file order."""
    counts = dict.fromkeys(("not a list of strings", "empty turn", "odd length", "too short"), 0)
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    conversations = []
    for path in files:
        for entry in _entries(path):
            if not isinstance(entry, list) or not all(isinstance(turn, str) for turn in entry):
                counts["not a list of strings"] += 1
                continue
            turns = [turn.strip() for turn in entry]
            if not all(turns):
                counts["empty turn"] += 1
                continue
            if len(turns) % 2:
                counts["odd length"] += 1
                turns = turns[:-1]
            if len(turns) < 2:
                counts["too short"] += 1
                continue
            if tuple(turns) in seen:
                repeats += 1
                continue
            seen.add(tuple(turns))
            roles = ("user", "assistant")
            conversations.append([{"role": roles[i % 2], "content": turn} for i, turn in enumerate(turns)])
    notes = _notes(counts, repeats)
    return conversations, notes


def _entries(path: Path) -> list[object]:
    """A corpus file's `conversations` list."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise LorakitError(
            f"{path.name} of {CHATTERBOT_REQUIREMENT} is not readable YAML ({type(error).__name__}); "
            f"reinstall it: pip install --no-deps --force-reinstall {CHATTERBOT_REQUIREMENT}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("conversations"), list):
        raise LorakitError(
            f"{path.name} of {CHATTERBOT_REQUIREMENT} has no 'conversations' list; "
            f"reinstall it: pip install --no-deps --force-reinstall {CHATTERBOT_REQUIREMENT}"
        )
    return document["conversations"]


def _notes(counts: dict[str, int], repeats: int) -> list[str]:
    phrases = {
        "not a list of strings": "skipped {} that {} not a list of strings",
        "empty turn": "skipped {} with an empty turn",
        "odd length": "dropped the final user turn of {}",
        "too short": "skipped {} with fewer than two turns",
    }
    notes = []
    for reason, phrase in phrases.items():
        count = counts[reason]
        if count:
            entries = f"{count:,} {'entry' if count == 1 else 'entries'}"
            notes.append(phrase.format(entries, "is" if count == 1 else "are"))
    if repeats:
        notes.append(f"dropped {repeats:,} repeated conversation{'' if repeats == 1 else 's'}")
    return notes
