"""Flags for a `lorakit train` run on the tiny model and data of conftest.py (fast, fp32, quiet)."""

from __future__ import annotations

from pathlib import Path


def tiny_flags(model: Path, data: Path) -> list[str]:
    return [
        "--model",
        str(model),
        "--data",
        str(data),
        "--text-column",
        "review",
        "--label-column",
        "sentiment",
        "--batch-size",
        "8",
        "--max-length",
        "32",
        "--precision",
        "fp32",
        "--quiet",
    ]
