"""`lorakit serve` refuses impossible flags and bad keys files with one line and status 2, before loading any model."""

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


@pytest.mark.parametrize(
    ("keys", "flags", "message"),
    [
        ("tenants:\n  - name: acme\n    adapters: [acme-*]\n", [], "keys file KEYS: tenant 'acme' has no key; add"),
        ("tenants: [", [], "keys file KEYS line 1 is not valid YAML"),
        (
            "tenants:\n  - name: acme\n    key: k1\n    base: true\n",
            ["--api-key", "k1"],
            "--keys KEYS: tenant 'acme' has the --api-key's key; give the admin its own key",
        ),
    ],
)
def test_a_bad_keys_file_gives_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, keys: str, flags: list[str], message: str
) -> None:
    path = tmp_path / "keys.yaml"
    path.write_text(keys)
    argv = ["serve", "--base", "no-such-model", "--adapters", str(tmp_path), "--keys", str(path), *flags]
    assert main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("lorakit serve: error: ") and message.replace("KEYS", str(path)) in error
    assert error.count("\n") == 1
