"""Numbers as the report shows them."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lorakit.report.humanize import (
    format_bytes,
    format_column,
    format_compact,
    format_count,
    format_duration,
    format_number,
    format_percent,
    format_value,
    label_for,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (301234, "294.2 KiB"),
        (1.2e9, "1.1 GiB"),
        (1024**2 * 1023.99, "1.0 GiB"),  # rounds up into the next unit, never "1024.0 MiB"
        (3 * 1024**5, "3.0 PiB"),
        (5 * 1024**6, "5120.0 PiB"),
        (math.nan, "n/a"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "40 ms"),
        (0.9996, "1.0 s"),
        (4.25, "4.2 s"),
        (9.96, "10 s"),
        (42.4, "42 s"),
        (59.6, "1 min 0 s"),
        (312.5, "5 min 12 s"),
        (3599.6, "1 h 0 min"),
        (7380, "2 h 3 min"),
        (86399, "1 d 0 h"),
        (200_000, "2 d 8 h"),
        (-5, "-5.0 s"),
        (math.inf, "n/a"),
    ],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_counts_and_percent():
    assert format_count(22788484) == "22,788,484"
    assert format_count(12.5) == "12.50"
    assert format_compact(74498) == "74.5K"
    assert format_compact(22788484) == "22.8M"
    assert format_compact(1e9) == "1B"
    assert format_compact(999) == "999"
    assert format_percent(0.3269) == "0.33 %"
    assert format_percent(math.nan) == "n/a"


@pytest.mark.parametrize(
    ("x", "text"),
    [(0.81234, "0.8123"), (1e-4, "0.0001"), (5210.3, "5,210"), (74498, "74,498"), (np.int64(3), "3"), (True, "True")],
)
def test_format_number(x, text):
    assert format_number(x) == text


@pytest.mark.parametrize(
    ("key", "value", "text"),
    [
        ("adapter_bytes", 301234, "294.2 KiB"),
        ("train_seconds", 312.5, "5 min 12 s"),
        ("trainable_percent", 0.3269, "0.33 %"),
        ("trainable_params", 74498, "74,498"),
        ("accuracy", np.float32(0.5), "0.5"),
        ("accuracy", None, "–"),
        ("target_modules", ["query", "value"], '["query", "value"]'),
        ("device", "cpu", "cpu"),
        ("loss", math.nan, "n/a"),
    ],
)
def test_format_value_uses_the_unit_of_the_key(key, value, text):
    assert format_value(key, value) == text


def test_format_column_shares_decimals_in_plain_float_columns():
    assert format_column("macro_f1", [0.812, 0.82, None, 0.7]) == ["0.812", "0.820", "–", "0.700"]
    assert format_column("epoch", [1.0, 2.0, 3.0]) == ["1", "2", "3"]
    assert format_column("loss", [0.5, 1234.5]) == ["0.5", "1,234.5"]
    # Units, integers and text keep their own formats.
    assert format_column("adapter_bytes", [301234.0, 2048.0]) == ["294.2 KiB", "2.0 KiB"]
    assert format_column("r", [8, 16]) == ["8", "16"]
    assert format_column("name", ["a", 0.5]) == ["a", "0.5"]
    assert format_column("lr", [1e-5, 0.5]) == ["1e-05", "0.5"]


@pytest.mark.parametrize(
    ("key", "heading"),
    [
        ("macro_f1", "Macro-F1"),
        ("accuracy", "Accuracy"),
        ("lr", "LR"),
        ("adapter_bytes", "Adapter size"),
        ("eval_seconds", "Eval time"),
        ("tokens_per_second", "Tokens / s"),
        ("trainable_params", "Trainable params"),
        ("eval-loss", "Eval loss"),
    ],
)
def test_label_for(key, heading):
    assert label_for(key) == heading
