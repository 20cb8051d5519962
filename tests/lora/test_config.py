"""`LoraConfig` validation and its round trip through PEFT's `adapter_config.json`.

Every refusal must be a `LorakitError` (a ValueError) whose message is one line and names the
field, so the CLI can print it as is.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import re

import peft
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lorakit import LoraConfig, LorakitError


def tiny_bert(num_labels: int = 2) -> BertForSequenceClassification:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=num_labels,
    )
    return BertForSequenceClassification(config)


def assert_one_line_error(error: pytest.ExceptionInfo, *words: str) -> str:
    """The error is a LorakitError with a non-empty single-line message naming each word."""
    assert isinstance(error.value, LorakitError)
    assert isinstance(error.value, ValueError)
    message = str(error.value)
    assert message.strip(), "empty error message"
    assert "\n" not in message, f"message spans several lines: {message!r}"
    for word in words:
        assert re.search(rf"(?<![A-Za-z_]){re.escape(word)}(?![A-Za-z_])", message), (
            f"{word!r} not named in {message!r}"
        )
    return message


def build_error(**kwargs) -> pytest.ExceptionInfo:
    with pytest.raises(LorakitError) as error:
        LoraConfig(**kwargs)
    return error


# --- field validation ------------------------------------------------------------------------


def test_defaults_are_valid():
    config = LoraConfig()
    assert config.r == 8
    assert config.lora_alpha == 8
    assert config.rank_and_scaling("x.query") == (8, 1.0)


@pytest.mark.parametrize("r", [0, -1, -8])
def test_rank_must_be_positive(r):
    assert_one_line_error(build_error(r=r), "r")


@pytest.mark.parametrize("r", [2.0, 2.5, "8", None, [8]])
def test_rank_must_be_int(r):
    assert_one_line_error(build_error(r=r), "r")


@pytest.mark.parametrize("r", [True, False])
def test_rank_must_not_be_bool(r):
    assert_one_line_error(build_error(r=r), "r")


@pytest.mark.parametrize("alpha", [0, -1, -0.5, math.nan, math.inf, "16", True, None])
def test_lora_alpha_must_be_positive_number(alpha):
    assert_one_line_error(build_error(lora_alpha=alpha), "lora_alpha")


@pytest.mark.parametrize("alpha", [1, 0.5, 16, 32.0])
def test_lora_alpha_accepts_positive_numbers(alpha):
    assert LoraConfig(r=4, lora_alpha=alpha).rank_and_scaling("q")[1] == pytest.approx(alpha / 4)


@pytest.mark.parametrize("dropout", [1.0, 1, -0.1, 1.5, "0.1", None, True, math.nan])
def test_lora_dropout_outside_unit_interval(dropout):
    assert_one_line_error(build_error(lora_dropout=dropout), "lora_dropout")


@pytest.mark.parametrize("dropout", [0, 0.0, 0.1, 0.999])
def test_lora_dropout_accepts_unit_interval(dropout):
    assert LoraConfig(lora_dropout=dropout).lora_dropout == dropout


@pytest.mark.parametrize("bias", ["both", "None", "NONE", "", None, True])
def test_bad_bias(bias):
    message = assert_one_line_error(build_error(bias=bias), "bias")
    assert "lora_only" in message, "the message should list the allowed values"


@pytest.mark.parametrize("bias", ["none", "all", "lora_only"])
def test_bias_options(bias):
    assert LoraConfig(bias=bias).bias == bias


@pytest.mark.parametrize("task_type", ["SEQ_CLASSIFICATION", "classification", "LM", ""])
def test_bad_task_type(task_type):
    message = assert_one_line_error(build_error(task_type=task_type), "task_type")
    assert "SEQ_CLS" in message, "the message should list the allowed values"


@pytest.mark.parametrize(
    ("given", "stored"),
    [("seq_cls", "SEQ_CLS"), ("causal_lm", "CAUSAL_LM"), ("Token_Cls", "TOKEN_CLS"), ("SEQ_2_SEQ_LM", "SEQ_2_SEQ_LM")],
)
def test_task_type_lower_case_accepted(given, stored):
    config = LoraConfig(task_type=given)
    assert config.task_type == stored
    if stored in ("SEQ_CLS", "TOKEN_CLS"):
        assert config.heads_to_save() == ["classifier", "score"]


@pytest.mark.parametrize("init", ["pissa", "normal", "kaiming", "", 1, 0, 1.0, None, "true"])
def test_bad_init_lora_weights(init):
    assert_one_line_error(build_error(init_lora_weights=init), "init_lora_weights")


@pytest.mark.parametrize(
    ("init", "stored"), [(True, True), (False, False), ("gaussian", "gaussian"), ("Gaussian", "gaussian")]
)
def test_init_lora_weights_options(init, stored):
    value = LoraConfig(init_lora_weights=init).init_lora_weights
    assert value == stored and type(value) is type(stored)


@pytest.mark.parametrize("field_name", ["target_modules", "exclude_modules"])
@pytest.mark.parametrize("pattern", ["(", "[query", "query\\", "*query", "(?P<x"])
def test_invalid_regex(field_name, pattern):
    assert_one_line_error(build_error(**{field_name: pattern}), field_name)


def test_empty_target_list():
    message = assert_one_line_error(build_error(target_modules=[]), "target_modules")
    assert "empty" in message


@pytest.mark.parametrize("targets", [[1], ["query", None], ["query", ""], 5, {"query": 1}])
def test_target_list_of_non_names(targets):
    assert_one_line_error(build_error(target_modules=targets), "target_modules")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        (["query", "value"], ["query", "value"]),
        (("query", "value"), ["query", "value"]),
        ({"value", "query"}, ["query", "value"]),
        ("all-linear", "all-linear"),
        ("ALL-LINEAR", "all-linear"),
        (r".*\.(query|value)", r".*\.(query|value)"),
    ],
)
def test_target_modules_normalised(given, stored):
    assert LoraConfig(target_modules=given).target_modules == stored


@pytest.mark.parametrize("rank", [0, -2, 2.5, "4", True, None])
def test_rank_pattern_bad_rank(rank):
    assert_one_line_error(build_error(rank_pattern={"query": rank}), "rank_pattern")


@pytest.mark.parametrize("alpha", [0, -2, "4", math.nan, None])
def test_alpha_pattern_bad_alpha(alpha):
    assert_one_line_error(build_error(alpha_pattern={"query": alpha}), "alpha_pattern")


@pytest.mark.parametrize("field_name", ["rank_pattern", "alpha_pattern"])
def test_pattern_with_invalid_regex_key(field_name):
    assert_one_line_error(build_error(**{field_name: {"(query": 4}}), field_name)


@pytest.mark.parametrize("field_name", ["rank_pattern", "alpha_pattern"])
@pytest.mark.parametrize("value", [["query"], "query=4", 4])
def test_pattern_that_is_not_a_dict(field_name, value):
    assert_one_line_error(build_error(**{field_name: value}), field_name)


@pytest.mark.parametrize("field_name", ["rank_pattern", "alpha_pattern"])
def test_pattern_none_is_not_a_raw_crash(field_name):
    """None (what an edited adapter_config.json may hold) is either "no overrides" or a clean error."""
    try:
        config = LoraConfig(**{field_name: None})
    except LorakitError as error:
        assert "\n" not in str(error) and field_name in str(error)
    else:
        assert config.rank_and_scaling("a.query") == (8, 1.0)


def test_rank_and_alpha_pattern_apply():
    config = LoraConfig(r=8, lora_alpha=16, rank_pattern={"query": 4}, alpha_pattern={"value": 32})
    assert config.rank_and_scaling("bert.encoder.layer.0.attention.self.query") == (4, 4.0)
    assert config.rank_and_scaling("bert.encoder.layer.0.attention.self.value") == (8, 4.0)
    assert config.rank_and_scaling("bert.encoder.layer.0.attention.self.xquery") == (8, 2.0)


@pytest.mark.parametrize("targets", [r".*\.query", "all-linear"])
def test_layers_to_transform_needs_a_target_list(targets):
    assert_one_line_error(build_error(target_modules=targets, layers_to_transform=[0]), "layers_to_transform")


@pytest.mark.parametrize("layers", [[-1], [0, "1"], [True], [0.5], -1])
def test_layers_to_transform_bad_indices(layers):
    assert_one_line_error(build_error(target_modules=["query"], layers_to_transform=layers), "layers_to_transform")


@pytest.mark.parametrize("pattern", ["layer", ["layers", "h"]])
def test_layers_pattern_without_layers_to_transform(pattern):
    message = assert_one_line_error(build_error(target_modules=["query"], layers_pattern=pattern), "layers_pattern")
    assert "layers_to_transform" in message


def test_layers_to_transform_with_pattern_is_valid():
    config = LoraConfig(target_modules=["query"], layers_to_transform=1, layers_pattern="layer")
    assert config.layers_to_transform == 1


def test_error_is_value_error_subclass():
    assert issubclass(LorakitError, ValueError)
    with pytest.raises(ValueError):
        LoraConfig(r=0)


# --- to_peft_dict: PEFT accepts what lorakit writes ------------------------------------------

PEFT_COMPARABLE = (
    "r",
    "lora_alpha",
    "lora_dropout",
    "bias",
    "use_rslora",
    "init_lora_weights",
    "rank_pattern",
    "alpha_pattern",
    "layers_to_transform",
    "layers_pattern",
    "fan_in_fan_out",
    "lora_bias",
    "inference_mode",
)

CONFIG_CASES = {
    "defaults": {},
    "seq_cls": dict(task_type="SEQ_CLS", r=4, lora_alpha=16, target_modules=["query", "value"]),
    "seq_cls_extra_save": dict(task_type="SEQ_CLS", target_modules=["query"], modules_to_save=["pooler"]),
    "causal_all_linear": dict(task_type="CAUSAL_LM", target_modules="all-linear", lora_dropout=0.1),
    "regex": dict(target_modules=r".*\.(query|value)", exclude_modules=r".*layer\.0\..*"),
    "patterns": dict(
        r=8, lora_alpha=8, rank_pattern={"query": 2}, alpha_pattern={"value": 32}, target_modules=["query", "value"]
    ),
    "layers": dict(target_modules=["query"], layers_to_transform=[1], layers_pattern="layer"),
    "rslora_gaussian": dict(use_rslora=True, init_lora_weights="gaussian", bias="lora_only"),
    "no_init_bias_all": dict(init_lora_weights=False, bias="all", exclude_modules=["key"]),
    "lora_bias_inference": dict(
        lora_bias=True, inference_mode=True, base_model_name_or_path="some/model", revision="main"
    ),
}


@pytest.mark.parametrize("kwargs", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_to_peft_dict_is_accepted_by_peft(kwargs):
    config = LoraConfig(**kwargs)
    data = config.to_peft_dict()
    assert data["peft_type"] == "LORA"
    json.dumps(data)  # it goes into adapter_config.json
    peft_config = peft.LoraConfig(**{k: v for k, v in data.items() if k != "peft_type"})
    for key in PEFT_COMPARABLE:
        assert getattr(peft_config, key) == data[key], key
    assert str(peft_config.peft_type.value) == "LORA"
    if isinstance(config.target_modules, list):
        assert set(peft_config.target_modules) == set(config.target_modules)
    else:
        assert peft_config.target_modules == config.target_modules
    if config.task_type:
        task_type = peft_config.task_type
        assert str(getattr(task_type, "value", task_type)) == config.task_type
    expected_save = config.heads_to_save() or None
    assert (sorted(peft_config.modules_to_save) if peft_config.modules_to_save else None) == (
        sorted(expected_save) if expected_save else None
    )


@pytest.mark.parametrize("kwargs", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_to_peft_dict_from_peft_dict_round_trip(kwargs):
    config = LoraConfig(**kwargs)
    assert LoraConfig.from_peft_dict(config.to_peft_dict()) == config


# --- from_peft_dict of files PEFT wrote ------------------------------------------------------

PEFT_CASES = {
    "seq_cls": dict(task_type="SEQ_CLS", r=4, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"]),
    "seq_cls_pooler": dict(task_type="SEQ_CLS", r=2, target_modules=["query"], modules_to_save=["pooler"]),
    "feature_patterns": dict(
        task_type="FEATURE_EXTRACTION",
        r=8,
        lora_alpha=8,
        target_modules=["query", "key", "value"],
        rank_pattern={"key": 2},
        alpha_pattern={"value": 4},
        use_rslora=True,
    ),
    "layers_bias": dict(
        r=4,
        target_modules=["query", "value"],
        layers_to_transform=[1],
        layers_pattern="layer",
        bias="lora_only",
        init_lora_weights="gaussian",
    ),
    "regex_no_task": dict(r=4, target_modules=r".*\.attention\.self\.(query|value)", bias="all"),
}


def peft_saved_config(tmp_path, kwargs) -> tuple[dict, peft.LoraConfig]:
    model = peft.get_peft_model(tiny_bert(), peft.LoraConfig(**copy.deepcopy(kwargs)))  # PEFT mutates lists
    model.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "adapter_config.json").read_text())
    return data, model.peft_config["default"]


@pytest.mark.parametrize("kwargs", PEFT_CASES.values(), ids=PEFT_CASES.keys())
def test_from_peft_dict_of_peft_saved_config(tmp_path, kwargs):
    data, peft_config = peft_saved_config(tmp_path, kwargs)
    assert data["peft_type"] == "LORA" and "peft_version" in data  # a real PEFT file, informational keys and all
    config = LoraConfig.from_peft_dict(data)
    for key in PEFT_COMPARABLE:
        if key == "inference_mode":
            continue
        assert getattr(config, key) == getattr(peft_config, key), key
    assert config.inference_mode is True  # what PEFT writes on save
    if isinstance(kwargs["target_modules"], str):
        assert config.target_modules == kwargs["target_modules"]
    else:
        assert sorted(config.target_modules) == sorted(kwargs["target_modules"])
    assert config.task_type == kwargs.get("task_type")
    # PEFT writes the task head into modules_to_save; lorakit keeps the user's own entries only
    # and adds the head back from task_type.
    assert config.modules_to_save == kwargs.get("modules_to_save")
    assert sorted(config.heads_to_save()) == sorted(peft_config.modules_to_save or [])

    # and back: what lorakit would write is what PEFT wrote, for every key lorakit knows
    again = config.to_peft_dict()
    for key, value in again.items():
        if key in ("target_modules", "modules_to_save") and isinstance(value, list):
            assert sorted(value) == sorted(data[key]), key
        else:
            assert value == data[key], key
    reread = peft.LoraConfig(**{k: v for k, v in again.items() if k != "peft_type"})
    assert reread.to_dict()["r"] == peft_config.r
    assert LoraConfig.from_peft_dict(again) == config


def test_from_peft_dict_minimal():
    config = LoraConfig.from_peft_dict({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    assert (config.r, config.lora_alpha, config.target_modules) == (4, 8, ["q_proj", "v_proj"])


def peft_dict(**overrides) -> dict:
    data = LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS").to_peft_dict()
    data.update(overrides)
    return data


def from_dict_error(data) -> pytest.ExceptionInfo:
    with pytest.raises(LorakitError) as error:
        LoraConfig.from_peft_dict(data, source="/tmp/some/adapter_config.json")
    return error


def test_from_peft_dict_refuses_dora():
    message = assert_one_line_error(from_dict_error(peft_dict(use_dora=True)), "use_dora")
    assert "peft" in message


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"modules_to_save": True}, ["modules_to_save must be a list of module names or None; got True"]),
        ({"modules_to_save": ["classifier", 3]}, ["modules_to_save must be a list of module names"]),
        ({"lora_bias": "false"}, ["lora_bias must be True or False; got 'false'"]),
        ({"use_rslora": 1}, ["use_rslora must be True or False; got 1"]),
        ({"inference_mode": None}, ["inference_mode must be True or False"]),
        ({"base_model_name_or_path": 5}, ["base_model_name_or_path must be a model name or path, or None"]),
        ({"revision": ["main"]}, ["revision must be a revision name or None"]),
        ({"layers_to_transform": {"0": 1}}, ["layers_to_transform must be layer indices"]),
        ({"layers_to_transform": [0], "layers_pattern": 3}, ["layers_pattern must be a layer list's name"]),
    ],
)
def test_from_peft_dict_checks_the_type_of_every_field(overrides, words):
    """An adapter_config.json from another tool may hold anything: a truthy "false" must not turn a
    switch on, and a `true` list of modules once raised a TypeError."""
    assert_one_line_error(from_dict_error(peft_dict(**overrides)), "adapter_config.json", *words)


def test_a_path_as_base_model_name_is_its_text():
    assert LoraConfig(base_model_name_or_path=pathlib.Path("/models/bert")).base_model_name_or_path == "/models/bert"


@pytest.mark.parametrize("peft_type", ["IA3", "LOHA", "ADALORA", "PROMPT_TUNING", "lora"])
def test_from_peft_dict_refuses_other_peft_types(peft_type):
    assert_one_line_error(from_dict_error(peft_dict(peft_type=peft_type)), peft_type)


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_16", "olora", "loftq", "corda", "PiSSA"])
def test_from_peft_dict_refuses_base_modifying_init(init):
    message = assert_one_line_error(from_dict_error(peft_dict(init_lora_weights=init)), "init_lora_weights")
    assert init in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("layer_replication", [[0, 1], [1, 2]]),
        ("trainable_token_indices", {"embed_tokens": [1, 2]}),
        ("target_parameters", ["mlp.experts.gate_up_proj"]),
        ("use_qalora", True),
        ("some_future_feature", 3),
    ],
)
def test_from_peft_dict_refuses_unimplemented_features(key, value):
    assert_one_line_error(from_dict_error(peft_dict(**{key: value})), key)


@pytest.mark.parametrize(
    "extra",
    [
        {"peft_version": "0.21.2"},
        {"peft_version": "0.13.0", "auto_mapping": {"base_model_class": "BertModel"}, "megatron_core": "megatron.core"},
        {"loftq_config": {}, "eva_config": None, "corda_config": None, "qalora_group_size": 16},
        {"use_dora": False, "layer_replication": None, "trainable_token_indices": None, "target_parameters": None},
        {"some_future_flag": False, "another_future_option": None},
    ],
)
def test_from_peft_dict_accepts_informational_and_unset_keys(extra):
    config = LoraConfig.from_peft_dict(peft_dict(**extra))
    assert config.r == 4 and config.task_type == "SEQ_CLS"


@pytest.mark.parametrize("data", [[], "LORA", None, 4])
def test_from_peft_dict_needs_an_object(data):
    assert_one_line_error(from_dict_error(data), "JSON object")


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"r": 0}, "r"),
        ({"r": "8"}, "r"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"bias": "both"}, "bias"),
        ({"task_type": "SEQ_CLASSIFICATION"}, "task_type"),
        ({"target_modules": "("}, "target_modules"),
        ({"rank_pattern": {"query": 0}}, "rank_pattern"),
        ({"layers_pattern": "layer"}, "layers_pattern"),
    ],
)
def test_from_peft_dict_bad_values(overrides, field_name):
    assert_one_line_error(from_dict_error(peft_dict(**overrides)), field_name)


def test_from_peft_dict_gaussian_and_eva_inits():
    assert LoraConfig.from_peft_dict(peft_dict(init_lora_weights="gaussian")).init_lora_weights == "gaussian"
    # inits that only shape the fresh A/B (overwritten on load) are read as plain LoRA
    assert LoraConfig.from_peft_dict(peft_dict(init_lora_weights="eva")).init_lora_weights is True


def test_from_peft_dict_of_peft_config_with_null_patterns(tmp_path):
    """A config file with null patterns (peft.LoraConfig accepts None for both) reads as no pattern."""
    data, _ = peft_saved_config(tmp_path, dict(r=4, target_modules=["query"]))
    data["rank_pattern"] = data["alpha_pattern"] = None
    config = LoraConfig.from_peft_dict(data)
    assert config.rank_and_scaling("bert.encoder.layer.0.attention.self.query") == (4, 2.0)
