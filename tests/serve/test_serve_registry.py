"""The adapter registry: load on demand, LRU eviction by bytes, confinement, refusals, threads."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
import torch
from serve_helpers import BASE_NAME, bert_with_labels, write_classifier, write_generator

from lorakit.errors import LorakitError
from lorakit.lora import list_adapters, load_adapter
from lorakit.serve.engine.registry import AdapterRegistry
from lorakit.serve.kernels.mixed import mixed_adapters
from lorakit.task_kind import TaskKind
from tiny_models import tiny_bert

INFO = {"task": "classification", "base_model": BASE_NAME}


@pytest.fixture
def adapters_dir(tmp_path: Path) -> Path:
    """Four classifier adapters of tiny_bert: a, b, c (3 labels) and d (run folder layout)."""
    root = tmp_path / "adapters"
    for seed, name in enumerate("abc"):
        write_classifier(root / name, r=2 * (seed + 1), num_labels=3, seed=seed, info=INFO)
    write_classifier(root / "run-d" / "adapter", r=4, num_labels=3, seed=7, info=INFO)
    return root


def registry(adapters_dir: Path | None, max_bytes: int = 10**9) -> AdapterRegistry:
    return AdapterRegistry(
        tiny_bert(), BASE_NAME, adapters_dir=adapters_dir, max_bytes=max_bytes, kind=TaskKind.CLASSIFICATION
    )


def test_loads_on_first_get_and_counts(adapters_dir: Path) -> None:
    reg = registry(adapters_dir)
    first = reg.get("a")
    again = reg.get("a")
    assert again is first
    assert first.label_names == ("LABEL_0", "LABEL_1", "LABEL_2")
    assert reg.get("run-d").path == (adapters_dir / "run-d" / "adapter").resolve()
    assert reg.stats() | {"bytes": None} == {
        "loads": 2,
        "evictions": 0,
        "hits": 1,
        "misses": 2,
        "loaded": 2,
        "bytes": None,
        "max_bytes": 10**9,
    }
    assert [entry["name"] for entry in reg.list()] == ["a", "run-d", "b", "c"]
    assert [entry["loaded"] for entry in reg.list()] == [True, True, False, False]
    assert list_adapters(reg.model) == [first.model_name, reg.get("run-d").model_name]


def test_lru_eviction_by_bytes(adapters_dir: Path) -> None:
    sizes = {name: registry(adapters_dir).get(name).nbytes for name in "abc"}
    assert len(set(sizes.values())) == 3  # ranks 2, 4, 6: the budget counts bytes, not adapters
    reg = registry(adapters_dir, max_bytes=sizes["a"] + sizes["c"])
    reg.get("a")
    reg.get("b")
    reg.get("a")  # b is now the least recently used
    reg.get("c")  # a + b + c > budget: b goes; a + c fits
    assert [entry["name"] for entry in reg.list() if entry["loaded"]] == ["a", "c"]
    assert reg.stats()["evictions"] == 1
    assert reg.stats()["bytes"] == sizes["a"] + sizes["c"]
    reg.get("b")  # reloads; a + c + b > budget, and so is c + b (b is larger than a): both go
    assert [entry["name"] for entry in reg.list() if entry["loaded"]] == ["b"]
    assert reg.stats()["loads"] == 4 and reg.stats()["evictions"] == 3
    assert list_adapters(reg.model) == [reg.get("b").model_name]
    assert reg.slots.names == (reg.get("b").model_name,)  # evicted adapters leave the packed slots too


def test_packed_slots_follow_loads_evictions_and_unloads(adapters_dir: Path) -> None:
    """After slots are freed and reused, a mixed batch on the packed slots still equals packing
    the batch's adapters afresh."""
    size = registry(adapters_dir).get("c").nbytes
    reg = registry(adapters_dir, max_bytes=2 * size)
    for name in ("a", "b", "c", "a", "run-d", "b"):
        reg.get(name)
    reg.unload("b")
    reg.get("c")
    loaded = [entry["name"] for entry in reg.list() if entry["loaded"]]
    assert sorted(reg.slots.names) == sorted(list_adapters(reg.model)) and len(loaded) >= 2
    rows = [reg.get(name).model_name for name in loaded] + [None]
    ids = torch.randint(4, 100, (len(rows), 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with mixed_adapters(reg.model, rows, reg.slots):
            packed = reg.model(input_ids=ids).logits
        with mixed_adapters(reg.model, rows):
            afresh = reg.model(input_ids=ids).logits
    torch.testing.assert_close(packed, afresh, atol=1e-6, rtol=1e-6)


def test_adapters_held_by_a_batch_are_not_evicted(adapters_dir: Path) -> None:
    size = registry(adapters_dir).get("c").nbytes
    reg = registry(adapters_dir, max_bytes=size)
    with reg.hold(["a", "b", "c", None]) as held:
        assert sorted(held) == ["a", "b", "c"]
        assert reg.stats()["loaded"] == 3  # over budget while the batch runs
        with pytest.raises(LorakitError, match="in use"):
            reg.unload("a")
        with mixed_adapters(reg.model, [held["a"].model_name, None, held["c"].model_name]):
            pass
    assert [entry["name"] for entry in reg.list() if entry["loaded"]] == ["c"]


def test_hold_reports_a_bad_adapter_without_failing_the_others(adapters_dir: Path) -> None:
    reg = registry(adapters_dir)
    with reg.hold(["a", "missing"]) as held:
        assert held["a"].name == "a"
        assert isinstance(held["missing"], LorakitError)
        assert str(held["missing"]) == f"no adapter named 'missing' in {adapters_dir.resolve()}; add its folder there"


@pytest.mark.parametrize("name", ["../a", "/etc", "a/b", "..", ".hidden", "", "a b", "x" * 200])
def test_unsafe_names_are_refused(adapters_dir: Path, name: str) -> None:
    with pytest.raises(LorakitError, match="not allowed"):
        registry(adapters_dir).get(name)


def test_symlink_out_of_the_adapters_folder_is_refused(adapters_dir: Path, tmp_path: Path) -> None:
    outside = write_classifier(tmp_path / "elsewhere", r=2, num_labels=3, seed=0, info=INFO)
    (adapters_dir / "sneaky").symlink_to(outside, target_is_directory=True)
    (adapters_dir / "alias").symlink_to(adapters_dir / "a", target_is_directory=True)
    reg = registry(adapters_dir)
    with pytest.raises(LorakitError, match="outside the adapters folder"):
        reg.get("sneaky")
    assert reg.get("alias").name == "alias"  # a link that stays inside is fine
    assert "sneaky" not in [entry["name"] for entry in reg.list()]


def test_explicit_path_load_and_unload(adapters_dir: Path, tmp_path: Path) -> None:
    extra = write_classifier(tmp_path / "runs" / "extra.v1" / "adapter", r=2, num_labels=3, seed=9, info=INFO)
    reg = registry(None)
    with pytest.raises(LorakitError, match="no adapters folder"):
        reg.get("a")
    info = reg.load(extra.parent)
    assert (info.name, info.path) == ("extra.v1", extra.resolve())
    assert reg.load(str(extra), name="other").name == "other"
    with pytest.raises(LorakitError, match="already loaded"):
        reg.load(adapters_dir / "a", name="other")
    reg.unload("other")
    with pytest.raises(LorakitError, match="not loaded"):
        reg.unload("other")
    assert [entry["name"] for entry in reg.list()] == ["extra.v1"]
    assert len(list_adapters(reg.model)) == 1


def test_adapter_for_another_base_is_refused(adapters_dir: Path, tmp_path: Path) -> None:
    reg = registry(adapters_dir)
    other = write_classifier(tmp_path / "o", r=2, num_labels=3, seed=0, info={"base_model": "bert-base-uncased"})
    with pytest.raises(LorakitError, match="trained on base model 'bert-base-uncased'"):
        reg.load(other)
    # The same base under another spelling (org/name vs name) is accepted.
    same = write_classifier(tmp_path / "s", r=2, num_labels=3, seed=0, info={"base_model": f"someorg/{BASE_NAME}"})
    assert reg.load(same).name == "s"


def test_adapter_that_does_not_fit_the_base_is_refused_and_leaves_no_trace(tmp_path: Path) -> None:
    folder = write_generator(tmp_path / "llama", r=4, seed=0)
    reg = AdapterRegistry(tiny_bert(), BASE_NAME, max_bytes=10**9)
    before = {name: p.clone() for name, p in reg.model.named_parameters()}
    with pytest.raises(LorakitError, match=r"does not have|not a Linear"):
        reg.load(folder)
    assert reg.list() == [] and list_adapters(reg.model) == []
    assert all(torch.equal(p, before[name]) for name, p in reg.model.named_parameters())


def test_other_task_and_trained_base_biases_are_refused(tmp_path: Path) -> None:
    reg = AdapterRegistry(tiny_bert(), BASE_NAME, kind=TaskKind.CAUSAL_LM)
    with pytest.raises(LorakitError, match="task_type SEQ_CLS"):
        reg.load(write_classifier(tmp_path / "cls", r=2, num_labels=3, seed=0))
    folder = write_classifier(tmp_path / "bias", r=2, num_labels=3, seed=0)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps(config | {"bias": "all"}))
    with pytest.raises(LorakitError, match="biases"):
        registry(None).load(folder)


def test_adapter_larger_than_the_budget_is_refused(adapters_dir: Path) -> None:
    reg = registry(adapters_dir, max_bytes=100)
    with pytest.raises(LorakitError, match="more than the whole adapter budget"):
        reg.get("a")
    assert list_adapters(reg.model) == [] and reg.stats()["loaded"] == 0


def test_classifiers_with_different_label_counts_share_the_base(tmp_path: Path) -> None:
    """Heads of 2 and 4 labels on a 3-label base; each row equals its adapter loaded alone."""
    two = write_classifier(tmp_path / "two", r=4, num_labels=2, seed=1, info=INFO | {"label_names": ["no", "yes"]})
    four = write_classifier(tmp_path / "four", r=8, num_labels=4, seed=2, info=INFO)
    reg = registry(None)
    rows = [reg.load(two), None, reg.load(four)]
    assert rows[0].label_names == ("no", "yes") and len(rows[2].label_names) == 4
    ids = torch.randint(4, 100, (3, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), mixed_adapters(reg.model, [info.model_name if info else None for info in rows]):
        mixed = reg.model(input_ids=ids).logits
    assert mixed.shape == (3, 4)
    assert torch.isinf(mixed[0, 2:]).all() and torch.isinf(mixed[1, 3:]).all()
    with torch.no_grad():
        alone_two = load_adapter(bert_with_labels(2), two)(input_ids=ids).logits
        alone_four = load_adapter(bert_with_labels(4), four)(input_ids=ids).logits
        base = tiny_bert()(input_ids=ids).logits
    torch.testing.assert_close(mixed[0, :2], alone_two[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[1, :3], base[1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mixed[2], alone_four[2], atol=1e-5, rtol=1e-5)
    assert reg.model.classifier.original_module.out_features == 3  # the base head came back


def test_label_names_that_do_not_match_the_head_are_refused(tmp_path: Path) -> None:
    folder = write_classifier(tmp_path / "x", r=2, num_labels=3, seed=0, info=INFO | {"label_names": ["a", "b"]})
    reg = registry(None)
    with pytest.raises(LorakitError, match="2 label_names but its head has 3"):
        reg.load(folder)
    assert list_adapters(reg.model) == []


def test_concurrent_gets_and_batches_keep_model_and_books_in_step(adapters_dir: Path) -> None:
    size = registry(adapters_dir).get("c").nbytes
    reg = registry(adapters_dir, max_bytes=2 * size)
    names = ["a", "b", "c", "run-d"]
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                if seed == 0:
                    with reg.hold(rng.sample(names, 2)) as held:
                        slots = [info.model_name for info in held.values()]
                        assert set(slots) <= set(list_adapters(reg.model))
                else:
                    reg.get(rng.choice(names))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    loaded = [entry for entry in reg.list() if entry["loaded"]]
    assert sum(entry["nbytes"] for entry in loaded) <= 2 * size
    assert len(list_adapters(reg.model)) == len(loaded)
    stats = reg.stats()
    assert stats["loads"] - stats["evictions"] == len(loaded)


def test_an_adapter_trained_on_a_4bit_base_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_classifier(tmp_path / "q", r=2, num_labels=2, seed=0, info=INFO | {"quantize": "nf4"})
    reg = registry(tmp_path)
    with caplog.at_level("WARNING", logger="lorakit.serve"):
        info = reg.get("q")
    assert info.quantize == "nf4" and reg.list()[0]["quantize"] == "nf4"
    assert "trained on a nf4-quantized base" in caplog.text
