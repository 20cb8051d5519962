"""`lorakit serve` refuses impossible flags with one line and status 2, before loading any model."""

from __future__ import annotations

from pathlib import Path

import pytest

from lorakit.cli.main import main


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "70000"], "--port must be between 0 and 65535"),
        (["--max-batch-size", "0"], "--max-batch-size must be at least 1"),
        (["--max-inputs", "-1"], "--max-inputs must be at least 1"),
        (["--max-wait-ms", "-5"], "--max-wait-ms must be 0 or more"),
        (["--body-timeout", "0"], "--body-timeout must be more than 0 seconds"),
        (["--adapters", "/no/such/folder"], "is not a folder"),
    ],
)
def test_bad_flags_give_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str
) -> None:
    assert main(["serve", "--base", "no-such-model", "--adapters", str(tmp_path), *flags]) == 2
    error = capsys.readouterr().err
    assert error.startswith("lorakit serve: error: ") and message in error
    assert error.count("\n") == 1
