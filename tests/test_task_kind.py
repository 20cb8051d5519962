"""TaskKind: one enum carries what every place used to compare strings for."""

from __future__ import annotations

import json

import pytest
import yaml

from lorakit.errors import LorakitError
from lorakit.task_kind import TaskKind


def test_each_kind_carries_its_facts():
    facts = {
        kind: (kind.value, kind.peft_type, kind.generates, kind.default_model, kind.default_data) for kind in TaskKind
    }
    assert facts == {
        TaskKind.CLASSIFICATION: ("classification", "SEQ_CLS", False, "all-MiniLM-L6-v2", "rotten-tomatoes"),
        TaskKind.CAUSAL_LM: ("causal-lm", "CAUSAL_LM", True, "SmolLM2-135M-Instruct", "chatterbot"),
        TaskKind.SEQ2SEQ: ("seq2seq", "SEQ_2_SEQ_LM", True, None, "chatterbot"),
    }


def test_a_kind_is_its_name_in_strings_and_files():
    kind = TaskKind.CAUSAL_LM
    assert (
        kind == "causal-lm" and str(kind) == "causal-lm" and f"{kind}" == "causal-lm" and f"{kind:>10}" == " causal-lm"
    )
    assert json.dumps({"task": kind}) == '{"task": "causal-lm"}'
    assert yaml.safe_load(yaml.safe_dump({"task": kind.value})) == {"task": "causal-lm"}


def test_parse_and_peft_lookup():
    assert TaskKind.parse("seq2seq") is TaskKind.SEQ2SEQ
    assert TaskKind.parse(TaskKind.CLASSIFICATION) is TaskKind.CLASSIFICATION
    assert TaskKind.from_peft_type("CAUSAL_LM") is TaskKind.CAUSAL_LM
    assert TaskKind.from_peft_type("TOKEN_CLS") is None and TaskKind.from_peft_type(None) is None
    assert TaskKind.names() == ("classification", "causal-lm", "seq2seq")


@pytest.mark.parametrize("value", ["generation", "SEQ_CLS", None, 3])
def test_an_unknown_kind_is_a_one_line_error_listing_the_names(value):
    with pytest.raises(LorakitError) as caught:
        TaskKind.parse(value, "--task")
    message = str(caught.value)
    assert "\n" not in message and "--task" in message and "classification, causal-lm, seq2seq" in message
