"""Every command that takes a model (train, inspect, serve) or an adapter whose base model it loads
(eval, predict, generate, merge, combine) answers a base that cannot work with one line naming the
problem and the fix, exit status 2, and writes nothing: a missing path, a name that is no Hub id,
a junk config.json, no weights, no tokenizer files, a tokenizer without its vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapter_folders import save_adapter_folder, save_base, save_tokenizer
from lorakit.cli.main import main
from tiny_models import ARCHS

MISSING = "/no/such/folder"
NOT_A_HUB_ID = "no/such/folder"  # a Hub id is `name` or `owner/name`: this can only be a path
EXPECTED = {
    "missing": f"no such model folder or file: {MISSING}; pass an existing model folder, a .gguf file",
    "not-a-hub-id": f"no such model folder or file: {NOT_A_HUB_ID}; pass an existing model folder",
    "junk-config": "config.json' is not a valid JSON file.); pass a local model folder",
    "no-weights": "has a config.json but no weights (model.safetensors or pytorch_model.bin); copy the weight files",
    "no-tokenizer-llama": "(the folder has no tokenizer files); give the model folder its tokenizer files",
    "no-tokenizer-bert": "(it has no vocabulary beyond its 5 special tokens); give the model folder its tokenizer",
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each bad base by case, for BERT ("...-bert") and Llama ("...-llama") where it depends on the architecture."""
    root = tmp_path_factory.mktemp("bad-bases")
    found = {"missing": MISSING, "not-a-hub-id": NOT_A_HUB_ID}
    junk = root / "junk-config"
    junk.mkdir()
    (junk / "config.json").write_text("junk")
    (junk / "model.safetensors").write_bytes(b"")
    for arch in ("bert", "llama"):
        found[f"junk-config-{arch}"] = str(junk)
        found[f"missing-{arch}"], found[f"not-a-hub-id-{arch}"] = MISSING, NOT_A_HUB_ID
        no_weights = root / f"no-weights-{arch}"
        ARCHS[arch].build(0).config.save_pretrained(no_weights)
        save_tokenizer(no_weights)
        found[f"no-weights-{arch}"] = str(no_weights)
        no_tokenizer = root / f"no-tokenizer-{arch}"
        ARCHS[arch].build(0).save_pretrained(no_tokenizer)
        found[f"no-tokenizer-{arch}"] = str(no_tokenizer)
    return found


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory, bases: dict[str, str]) -> dict[str, Path]:
    """A classifier run ("cls-CASE", on BERT) and a causal-lm run ("gen-CASE", on Llama) per bad base."""
    root = tmp_path_factory.mktemp("bad-adapters")
    runs = {}
    for kind, arch in (("cls", "bert"), ("gen", "llama")):
        good = save_adapter_folder(arch, save_base(arch, root / arch), root / kind / "adapter")
        for case in ("missing", "not-a-hub-id", "junk-config", "no-weights", "no-tokenizer"):
            run = root / f"{kind}-{case}"
            (run / "adapter").mkdir(parents=True)
            for file in good.iterdir():
                (run / "adapter" / file.name).write_bytes(file.read_bytes())
            info = json.loads((good / "lorakit.json").read_text())
            (run / "adapter" / "lorakit.json").write_text(json.dumps({**info, "base_model": bases[f"{case}-{arch}"]}))
            runs[f"{kind}-{case}"] = run
    (root / "served").mkdir()
    (root / "data.csv").write_text("text,label\n" + "w3 w4,negative\nw5 w6,positive\n" * 10)
    runs["served"], runs["data"] = root / "served", root / "data.csv"
    return runs


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], expected: str) -> str:
    """Run `lorakit argv`, assert exit status 2 and one stderr line holding `expected`; the line."""
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith(("memory:", "data:"))]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"lorakit {argv[0]}: error: ") and expected in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config", "no-weights", "no-tokenizer"])
def test_train(case, bases, adapters, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--model", bases[f"{case}-bert"], "--data", str(adapters["data"]), "--output-dir", str(out)]
    expected = EXPECTED[f"{case}-bert" if case == "no-tokenizer" else case]
    refused(capsys, [*argv, "--max-steps", "1", "--quiet"], expected)
    assert not out.exists(), "a refused model writes no run folder"


@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config"])
def test_inspect(case, bases, capsys):
    refused(capsys, ["inspect", bases[f"{case}-llama"]], EXPECTED[case])


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config", "no-weights", "no-tokenizer"])
def test_serve(case, arch, bases, adapters, capsys):
    expected = EXPECTED[f"{case}-{arch}" if case == "no-tokenizer" else case]
    refused(capsys, ["serve", "--base", bases[f"{case}-{arch}"], "--adapters", str(adapters["served"])], expected)


@pytest.mark.parametrize("command", ["eval", "predict"])
@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config", "no-weights", "no-tokenizer"])
def test_classifier_commands(command, case, adapters, capsys):
    argv = [command, "--adapter", str(adapters[f"cls-{case}"])]
    argv += ["--data", str(adapters["data"])] if command == "eval" else ["w3 w4"]
    refused(capsys, argv, EXPECTED[f"{case}-bert" if case == "no-tokenizer" else case])


@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config", "no-weights", "no-tokenizer"])
def test_generate(case, adapters, capsys):
    argv = ["generate", "--adapter", str(adapters[f"gen-{case}"]), "w3 w4"]
    refused(capsys, argv, EXPECTED[f"{case}-llama" if case == "no-tokenizer" else case])


@pytest.mark.parametrize("command", ["merge", "combine"])
@pytest.mark.parametrize("case", ["missing", "not-a-hub-id", "junk-config", "no-weights"])
def test_merge_and_combine(command, case, adapters, tmp_path, capsys):
    run = str(adapters[f"gen-{case}"])
    out = tmp_path / "out"
    sources = ["--adapter", run] if command == "merge" else [run, run]
    refused(capsys, [command, *sources, "--out", str(out)], EXPECTED[case])
    assert not out.exists() and not list(tmp_path.glob(".out.*")), "nothing is written"


def test_merge_of_a_base_without_tokenizer_files_saves_the_model_alone(adapters, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", "--adapter", str(adapters["gen-no-tokenizer"]), "--out", str(out)]) == 0
    assert "note: the base model has no tokenizer, so none was saved" in capsys.readouterr().out
    assert not any(file.name.startswith("tokenizer") for file in out.iterdir())
