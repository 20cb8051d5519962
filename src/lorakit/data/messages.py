"""One messages cell → a checked conversation of `{"role", "content"}` dicts.

A cell holds a list of messages, OpenAI style (`{"role": "user", "content": ...}`, roles
system/user/assistant) or ShareGPT style (`{"from": "human", "value": ...}`, roles
system/human/gpt); in CSV/TSV the list is JSON text, in Parquet and `datasets` a numpy array. An
optional system message comes first, then user and assistant turns alternate, and the last is the
assistant's (the response to learn).
"""

from __future__ import annotations

import json

import numpy as np

from lorakit.data.cells import is_missing
from lorakit.data.wording import kind_of
from lorakit.errors import LorakitError, option_setting
from lorakit.jsontext import loads

# Role names in the wild, by the role they stand for.
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant"}


def read_messages(value: object, column: str, origin: str, row: int) -> list[dict[str, str]]:
    """A messages cell as checked `{"role", "content"}` dicts, roles normalised to
    system/user/assistant and a missing content read as ""; [] for a missing cell (see
    `is_missing`: a blank text counts) or an empty list.

    Raises:
        LorakitError: anything malformed (not JSON, not a list, a message without a role or with
            an unknown one, content that is not text, turns out of order), naming the row of
            `origin`.
    """
    where = f"row {row} of {origin}"
    if is_missing(value):
        return []
    if isinstance(value, str):
        try:
            value = loads(value)
        except json.JSONDecodeError as error:
            raise LorakitError(
                f"{where}: column {column!r} holds text that is not a JSON list of messages ({error.msg}); "
                'write it as [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]'
            ) from None
    if isinstance(value, np.ndarray):  # Parquet and `datasets` list columns read as numpy arrays
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise LorakitError(
            f"{where}: column {column!r} holds {kind_of(value, article=True)}, not a list of messages; "
            f"pick the column of message lists with {option_setting('messages_column', '<column>')}"
        )
    messages = [_message(item, number, where) for number, item in enumerate(value, 1)]
    _check_turns([message["role"] for message in messages], where)
    return messages


def _message(item: object, number: int, where: str) -> dict[str, str]:
    """Message `number` of a conversation as `{"role", "content"}`."""
    if not isinstance(item, dict):
        raise LorakitError(
            f"{where}: message {number} is {kind_of(item, article=True)}, not an object with 'role' and 'content' "
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
    if not isinstance(content, str) and not is_missing(content):
        raise LorakitError(f"{where}: message {number}'s {keys[1]!r} is {kind_of(content, article=True)}, not text")
    return {"role": role, "content": content if isinstance(content, str) else ""}


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
