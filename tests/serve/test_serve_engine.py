"""The engine end to end on tiny models: batched mixed-adapter classification and generation,
per-request errors, streaming (sync and asyncio), stop strings, choice seeds, metrics."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import torch
from serve_helpers import (
    BASE_NAME,
    bert_with_labels,
    slow_steps,
    text,
    tiny_seq2seq,
    tokenizer,
    write_classifier,
    write_generator,
    write_seq2seq_generator,
)

from lorakit.errors import LorakitError
from lorakit.lora import load_adapter
from lorakit.serve import AdapterRegistry, Engine, load_engine
from lorakit.serve.engine.generate import GenerationHandle, choice_seed
from lorakit.task_kind import TaskKind
from tiny_models import tiny_bert, tiny_llama

INFO = {"task": "classification", "base_model": BASE_NAME}
THREE = ["LABEL_0", "LABEL_1", "LABEL_2"]
WAIT_MS = 300  # long enough for every request a test submits to join one batch


@pytest.fixture
def classifier_dir(tmp_path: Path) -> Path:
    root = tmp_path / "cls"
    write_classifier(root / "two", r=2, num_labels=2, seed=1, info=INFO | {"label_names": ["neg", "pos"]})
    write_classifier(root / "three", r=4, num_labels=3, seed=2, info=INFO)
    write_classifier(root / "short", r=8, num_labels=3, seed=3, info=INFO | {"max_length": 5})
    return root


@pytest.fixture
def generator_dir(tmp_path: Path) -> Path:
    root = tmp_path / "gen"
    write_generator(root / "g2", r=2, seed=1)
    write_generator(root / "g4", r=4, seed=2, targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    write_generator(root / "g8", r=8, seed=3)
    return root


@pytest.fixture
def seq2seq_dir(tmp_path: Path) -> Path:
    root = tmp_path / "seq2seq"
    write_seq2seq_generator(root / "t2", r=2, seed=1)
    write_seq2seq_generator(root / "t8", r=8, seed=3)
    return root


def classifier_engine(adapters_dir: Path, **settings) -> Engine:
    registry = AdapterRegistry(tiny_bert(), BASE_NAME, adapters_dir=adapters_dir, kind=TaskKind.CLASSIFICATION)
    return Engine(registry, tokenizer(classifier=True), **settings)


def generator_engine(adapters_dir: Path, **settings) -> Engine:
    registry = AdapterRegistry(tiny_llama(), BASE_NAME, adapters_dir=adapters_dir, kind=TaskKind.CAUSAL_LM)
    return Engine(registry, tokenizer(classifier=False), **settings)


def classify_alone(folder: Path | None, num_labels: int, sentence: str, pair: str | None = None) -> list[float]:
    model = bert_with_labels(num_labels) if folder is None else load_adapter(bert_with_labels(num_labels), folder)
    batch = tokenizer(classifier=True)(sentence, pair, return_tensors="pt")
    with torch.no_grad():
        return torch.softmax(model(**batch).logits[0], dim=-1).tolist()


def test_classification_batch_matches_each_adapter_alone(classifier_dir: Path) -> None:
    requests = [  # adapter, text, text pair
        ("two", text([5, 6, 7]), None),
        ("three", text([8, 9, 10, 11, 12, 13]), None),
        (None, text([14, 15]), None),
        ("two", text([16, 17, 18, 19]), text([30, 31])),
        ("three", text([20]), None),
    ]
    with classifier_engine(classifier_dir, max_wait_ms=WAIT_MS) as engine:
        futures = [engine.submit_classify(adapter, sentence, pair) for adapter, sentence, pair in requests]
        results = [future.result(timeout=60) for future in futures]
        metrics = engine.metrics()
    assert metrics["batcher"]["batch_sizes"] == {5: 1}
    assert metrics["adapters"]["loads"] == 2
    for (adapter, sentence, pair), result in zip(requests, results, strict=True):
        folder = classifier_dir / adapter if adapter else None
        labels = {"two": ["neg", "pos"], "three": THREE, None: THREE}
        expected = classify_alone(folder, len(labels[adapter]), sentence, pair)
        assert list(result["probabilities"]) == labels[adapter]
        assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
        assert result["label"] == labels[adapter][max(range(len(expected)), key=expected.__getitem__)]


def test_one_bad_request_fails_alone_and_the_worker_stays_up(classifier_dir: Path) -> None:
    with classifier_engine(classifier_dir, max_wait_ms=WAIT_MS, max_input_tokens=8) as engine:
        good = engine.submit_classify("two", text([5, 6]))
        unknown = engine.submit_classify("nope", text([5, 6]))
        too_long = engine.submit_classify("three", text(list(range(4, 20))))
        truncated = engine.submit_classify("short", text(list(range(4, 20))))  # max_length 5 in lorakit.json
        assert set(good.result(timeout=60)) == {"label", "probability", "probabilities"}
        with pytest.raises(LorakitError, match="no adapter named 'nope'"):
            unknown.result(timeout=60)
        with pytest.raises(LorakitError, match="18 tokens; this server takes at most 8"):
            too_long.result(timeout=60)
        assert truncated.result(timeout=60)["probabilities"]
        later = engine.submit_classify("three", text([7]))
        assert later.result(timeout=60)["label"].startswith("LABEL_")
        metrics = engine.metrics()["batcher"]
    assert (metrics["requests"], metrics["completed"], metrics["failed"]) == (5, 3, 2)
    assert metrics["batch_sizes"] == {1: 1, 4: 1}


def test_settings_are_checked_on_submit(classifier_dir: Path, generator_dir: Path) -> None:
    with classifier_engine(classifier_dir) as engine:
        with pytest.raises(LorakitError, match="not allowed"):
            engine.submit_classify("../etc", "w5")
        with pytest.raises(LorakitError, match="cannot generate"):
            engine.submit_generate("two", "w5")
    with generator_engine(generator_dir) as engine:
        with pytest.raises(LorakitError, match="max_new_tokens"):
            engine.submit_generate("g2", "w5", max_new_tokens=0)
        with pytest.raises(LorakitError, match="top_p"):
            engine.submit_generate("g2", "w5", temperature=1.0, top_p=0)
        with pytest.raises(LorakitError, match="stop strings must be non-empty"):
            engine.submit_generate("g2", "w5", stop=["w6", ""])
        with pytest.raises(LorakitError, match="top_logprobs must be None or a whole number from 0 to 20"):
            engine.submit_generate("g2", "w5", top_logprobs=21)
        with pytest.raises(LorakitError, match="seed must be a whole number"):
            engine.submit_generate("g2", "w5", temperature=1.0, seed=2**64)
        with pytest.raises(LorakitError, match="cannot classify"):
            engine.submit_classify("g2", "w5")
    with pytest.raises(LorakitError, match="shut down"):
        engine.submit_generate("g2", "w5")


def generate_alone(folder: Path | None, prompt: list[int], max_new_tokens: int, eos: list[int]) -> list[int]:
    model = tiny_llama() if folder is None else load_adapter(tiny_llama(), folder)
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos, pad_token_id=0
        )
    new = out[0, len(prompt) :].tolist()
    return new[: new.index(eos[0])] if eos[0] in new else new


def test_generation_batch_matches_each_adapter_alone_with_per_row_limits_and_eos(generator_dir: Path) -> None:
    requests = [  # adapter, prompt (different lengths: left padding), max_new_tokens
        ("g2", [5, 6, 7, 8], 6),
        ("g4", [9, 10], 9),
        (None, [11, 12, 13], 4),
        ("g8", [14, 15, 16, 17, 18], 7),
        ("g2", [19], 3),
    ]
    # End of sequence: a token that one row produces mid-way, so that row stops early.
    probe = generate_alone(generator_dir / "g4", [9, 10], 9, eos=[3])
    eos = probe[4]
    engine = generator_engine(generator_dir, max_wait_ms=WAIT_MS)
    engine.model.generation_config.eos_token_id = eos
    with engine:
        handles = [
            engine.submit_generate(adapter, text(prompt), max_new_tokens=limit) for adapter, prompt, limit in requests
        ]
        results = [handle.future.result(timeout=60) for handle in handles]
        streamed = ["".join(piece.text for piece in handle.stream) for handle in handles]
        metrics = engine.metrics()["batcher"]
    assert metrics["completed"] == 5 and max(metrics["batch_sizes"]) > 1  # rows decoded together
    for (adapter, prompt, limit), result, stream in zip(requests, results, streamed, strict=True):
        expected = generate_alone(generator_dir / adapter if adapter else None, prompt, limit, eos=[eos, 3])
        assert result.token_ids == expected
        assert result.finish_reason == ("stop" if len(expected) < limit else "length")
        assert result.text == engine.tokenizer.decode(expected, skip_special_tokens=True)
        assert stream == result.text
        assert result.prompt_tokens == len(prompt)
    assert results[1].finish_reason == "stop" and len(results[1].token_ids) == probe.index(eos) < 9


def test_sampled_and_greedy_rows_share_a_batch_and_greedy_ones_stay_exact(generator_dir: Path) -> None:
    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        greedy = engine.submit_generate("g2", text([5, 6]), max_new_tokens=3)
        sampled = engine.submit_generate("g8", text([5, 6]), max_new_tokens=5, temperature=0.9, top_p=0.95)
        greedy_too = engine.submit_generate(None, text([7]), max_new_tokens=2)
        assert len(sampled.future.result(timeout=60).token_ids) <= 5
        assert greedy.future.result(timeout=60).token_ids == generate_alone(generator_dir / "g2", [5, 6], 3, eos=[3])
        assert greedy_too.future.result(timeout=60).token_ids == generate_alone(None, [7], 2, eos=[3])


def test_a_short_request_leaves_while_a_long_one_runs(generator_dir: Path) -> None:
    """Continuous batching: the short request joins the running batch and finishes at once."""
    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        engine.model.generation_config.eos_token_id = 3  # as generate_alone's
        long = engine.submit_generate("g2", text([5, 6]), max_new_tokens=50)
        short = engine.submit_generate("g8", text([9]), max_new_tokens=2)
        assert short.future.result(timeout=60).token_ids == generate_alone(generator_dir / "g8", [9], 2, eos=[3])
        assert not long.future.done()
        assert long.future.result(timeout=60).token_ids == generate_alone(generator_dir / "g2", [5, 6], 50, eos=[3])


def test_a_short_request_is_not_held_up_by_a_long_prompt_prefilling(generator_dir: Path) -> None:
    """Chunked prefill: 2 tokens per chunk, so the 60-token prompt prefills over 30 steps; the
    short request joins meanwhile and is done long before."""
    with generator_engine(generator_dir, prefill_tokens=2) as engine:
        engine.model.generation_config.eos_token_id = 3
        slow_steps(engine, 0.02)  # the 30 chunks take at least 0.6 s
        long = engine.submit_generate("g2", text([5] * 60), max_new_tokens=2)
        short = engine.submit_generate("g8", text([9]), max_new_tokens=2)
        assert short.future.result(timeout=60).token_ids == generate_alone(generator_dir / "g8", [9], 2, eos=[3])
        assert not long.future.done() and long.stream.text() == ""
        assert long.future.result(timeout=60).token_ids == generate_alone(generator_dir / "g2", [5] * 60, 2, eos=[3])


def test_a_cancelled_request_leaves_the_batch_at_the_next_step(generator_dir: Path) -> None:
    from concurrent.futures import CancelledError

    assert len(generate_alone(generator_dir / "g2", [5, 6], 60, eos=[3])) == 60  # only the cancel ends it early
    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        engine.model.generation_config.eos_token_id = 3
        running = engine.submit_generate("g2", text([5, 6]), max_new_tokens=60)
        pieces = iter(running.stream)
        next(pieces)  # it runs
        running.cancel()
        with pytest.raises(CancelledError):
            running.future.result(timeout=60)
        after = engine.submit_generate("g4", text([7]), max_new_tokens=2)
        assert after.future.result(timeout=60).completion_tokens == 2
        metrics = engine.metrics()["batcher"]
        engine.registry.unload("g2")  # no longer pinned by the cancelled request
    assert metrics["cancelled"] == 1 and metrics["completed"] == 1 and metrics["failed"] == 0
    assert 1 <= len(running.stream.text().split()) < 60  # it stopped part-way


def test_seq2seq_rows_joining_mid_decode_match_each_adapter_alone(seq2seq_dir: Path) -> None:
    """T5 adapters: the prompt is the encoder's input (ending in [SEP], as the tokenizer adds it).
    Token 8 ends a sequence (besides [SEP], 3), so some rows stop early."""
    eos = [8, 3]

    def alone(adapter: str | None, prompt: list[int], max_new_tokens: int) -> list[int]:
        model = tiny_seq2seq("t5") if adapter is None else load_adapter(tiny_seq2seq("t5"), seq2seq_dir / adapter)
        with torch.no_grad():
            out = model.generate(
                torch.tensor([[*prompt, 3]]), max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos
            )
        new = out[0, 1:].tolist()
        return new[: min(new.index(i) for i in eos if i in new)] if set(eos) & set(new) else new

    requests = [("t2", [5, 6, 7, 8], 12), ("t8", [9, 10], 9), (None, [11, 12, 13], 4), ("t2", [19], 3)]
    registry = AdapterRegistry(tiny_seq2seq("t5"), BASE_NAME, adapters_dir=seq2seq_dir, kind=TaskKind.SEQ2SEQ)
    with Engine(registry, tokenizer(classifier=False, seq2seq=True)) as engine:
        assert engine.task_type == "SEQ_2_SEQ_LM"
        engine.model.generation_config.eos_token_id = eos[0]

        def submit(adapter: str | None, prompt: list[int], limit: int) -> GenerationHandle:
            return engine.submit_generate(adapter, text(prompt), max_new_tokens=limit)

        first = submit(*requests[0])
        pieces = iter(first.stream)
        head = next(pieces).text  # it runs: the others join its batch mid-decode
        handles = [first, *(submit(*request) for request in requests[1:])]
        results = [handle.future.result(timeout=60) for handle in handles]
        rest = ("".join(piece.text for piece in handle.stream) for handle in handles[1:])
        streamed = [head + "".join(piece.text for piece in pieces), *rest]
        batch_sizes = engine.metrics()["batcher"]["batch_sizes"]
        with pytest.raises(LorakitError, match="cannot classify"):
            engine.submit_classify("t2", "w5")
    for (adapter, prompt, limit), result, stream in zip(requests, results, streamed, strict=True):
        assert result.token_ids == alone(adapter, prompt, limit)
        assert result.finish_reason == ("stop" if len(result.token_ids) < limit else "length")
        assert stream == result.text == engine.tokenizer.decode(result.token_ids, skip_special_tokens=True)
        assert result.prompt_tokens == len(prompt) + 1
    assert len({tuple(result.token_ids) for result in results}) == len(results)
    assert max(batch_sizes) > 1  # rows decoded together
    assert {result.finish_reason for result in results} == {"stop", "length"}


def test_too_long_prompt_fails_that_request_only(generator_dir: Path) -> None:
    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        too_long = engine.submit_generate("g2", text([5] * 60), max_new_tokens=10)
        fine = engine.submit_generate("g2", text([5] * 10), max_new_tokens=2)
        with pytest.raises(LorakitError, match="must fit the model's 64 positions"):
            too_long.future.result(timeout=60)
        with pytest.raises(LorakitError, match="64 positions"):
            list(too_long.stream)
        assert fine.future.result(timeout=60).completion_tokens <= 2


def test_asyncio_api_and_streaming(generator_dir: Path) -> None:
    async def main(engine: Engine) -> tuple[str, str, str]:
        handle = engine.submit_generate("g8", text([5, 6, 7]), max_new_tokens=6)
        pieces = [piece.text async for piece in handle.stream]
        awaited = await engine.generate("g8", text([5, 6, 7]), max_new_tokens=6)
        result = await asyncio.wrap_future(handle.future)
        return "".join(pieces), awaited.text, result.text

    with generator_engine(generator_dir) as engine:
        streamed, awaited, result = asyncio.run(main(engine))
    assert streamed == awaited == result != ""


def test_load_engine_from_a_model_folder(tmp_path: Path, classifier_dir: Path) -> None:
    folder = tmp_path / BASE_NAME
    tiny_bert().save_pretrained(folder)
    tokenizer(classifier=True).save_pretrained(folder)
    with load_engine(str(folder), adapters_dir=classifier_dir, max_wait_ms=0) as engine:
        assert engine.task_type == "SEQ_CLS"
        assert engine.needs_adapter is False  # the head was saved with the model: the base classifies alone
        result = engine.submit_classify("two", text([5, 6, 7])).result(timeout=60)
        alone = engine.submit_classify(None, text([5, 6, 7])).result(timeout=60)
    expected = classify_alone(classifier_dir / "two", 2, text([5, 6, 7]))
    assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-5)
    assert list(alone["probabilities"].values()) == pytest.approx(classify_alone(None, 3, text([5, 6, 7])), abs=1e-5)


def test_a_base_without_a_trained_head_classifies_only_through_adapters(tmp_path: Path, classifier_dir: Path) -> None:
    """A published encoder (the body alone) loaded as a classifier gets a random head: never answered from."""
    folder = tmp_path / BASE_NAME
    tiny_bert().bert.save_pretrained(folder)
    tokenizer(classifier=True).save_pretrained(folder)
    with load_engine(str(folder), adapters_dir=classifier_dir, max_wait_ms=0) as engine:
        assert engine.needs_adapter is True
        with pytest.raises(LorakitError, match=re.escape(f"the base model '{folder}' has no trained classifier head")):
            engine.submit_classify(None, text([5, 6, 7]))
        result = engine.submit_classify("two", text([5, 6, 7])).result(timeout=60)
    expected = classify_alone(classifier_dir / "two", 2, text([5, 6, 7]))
    assert list(result["probabilities"].values()) == pytest.approx(expected, abs=1e-5)


def test_a_stop_string_ends_its_row_at_once_and_its_stream_never_sends_it(generator_dir: Path) -> None:
    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        full = engine.submit_generate("g2", text([5, 6, 7]), max_new_tokens=8).future.result(timeout=60)
        words = full.text.split()
        assert full.finish_reason == "length" and len(words) == 8  # only a stop string ends it early
        across = f"{words[2][-1]} {words[3][:2]}"  # the end of token 3 and the start of token 4
        stopped = engine.submit_generate("g2", text([5, 6, 7]), max_new_tokens=8, stop=["w999", across])
        first = engine.submit_generate("g2", text([5, 6, 7]), max_new_tokens=8, stop=words[0], top_logprobs=0)
        beside = engine.submit_generate("g4", text([9, 10]), max_new_tokens=8)
        result = stopped.future.result(timeout=60)
        assert result.text == full.text[: full.text.index(across)] and result.finish_reason == "stop"
        made_it = next(k for k in range(1, 9) if across in engine.tokenizer.decode(full.token_ids[:k]))
        assert result.token_ids == full.token_ids[:made_it]  # it left the batch with the token that made the stop
        assert "".join(piece.text for piece in stopped.stream) == result.text  # pieces only add: none sent it
        at_first = first.future.result(timeout=60)
        assert (at_first.text, at_first.token_ids, at_first.finish_reason) == ("", full.token_ids[:1], "stop")
        assert [entry.token for entry in at_first.logprobs] == [words[0]]  # its token's logprobs still come
        assert beside.future.result(timeout=60).completion_tokens == 8
    assert full.logprobs is None and result.logprobs is None  # not asked


def test_choice_seeds_sample_different_texts_and_reproduce_them(generator_dir: Path) -> None:
    assert choice_seed(7, 0) == 7 and choice_seed(None, 3) is None
    assert choice_seed(7, 1) == choice_seed(7, 1) != choice_seed(7, 2)

    def choices(engine: Engine) -> list[str]:
        handles = [
            engine.submit_generate("g8", text([5, 6]), max_new_tokens=6, temperature=1.0, seed=choice_seed(7, j))
            for j in range(3)
        ]
        return [handle.future.result(timeout=60).text for handle in handles]

    with generator_engine(generator_dir, max_wait_ms=WAIT_MS) as engine:
        first = choices(engine)
        again = choices(engine)
    assert len(set(first)) == 3 and again == first
