"""TrainState: the checkpoint's progress.json, typed; lorakit 0.1 checkpoints still resume."""

from __future__ import annotations

import json

import pytest

from lorakit.errors import LorakitError
from lorakit.train.state import STATE_VERSION, TrainState

# progress.json as lorakit 0.1 wrote it (a plain dict with these nine keys, no version).
LORAKIT_0_1_PROGRESS = {
    "step": 12,
    "epoch": 1,
    "batch": 4,
    "history": {
        "train": [{"step": 10, "epoch": 1.25, "loss": 0.61, "lr": 0.0004}],
        "eval": [{"step": 8, "epoch": 1.0, "loss": 0.58, "accuracy": 0.7, "macro_f1": 0.69}],
    },
    "best": {"step": 8, "epoch": 1.0, "loss": 0.58, "accuracy": 0.7, "macro_f1": 0.69},
    "bad_evals": 0,
    "train_seconds": 3.5,
    "tokens": 2048,
    "samples_before": None,
}


def test_state_dict_round_trips_through_json():
    state = TrainState(step=3, epoch=1, batch=2, tokens=99, train_seconds=1.5, bad_evals=1)
    state.record_train_loss(1.123456, 0.5, 1e-4)
    restored = TrainState()
    restored.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert restored == state
    assert state.state_dict()["version"] == STATE_VERSION
    assert state.history["train"] == [{"step": 3, "epoch": 1.1235, "loss": 0.5, "lr": 1e-4}]


def test_a_lorakit_0_1_checkpoint_loads():
    state = TrainState()
    state.load_state_dict(LORAKIT_0_1_PROGRESS)
    assert (state.step, state.epoch, state.batch, state.tokens) == (12, 1, 4, 2048)
    assert state.best["accuracy"] == 0.7 and state.history["eval"][0]["step"] == 8


@pytest.mark.parametrize(
    ("saved", "words"),
    [
        ({**LORAKIT_0_1_PROGRESS, "version": STATE_VERSION + 1}, ["newer lorakit"]),
        ({key: value for key, value in LORAKIT_0_1_PROGRESS.items() if key != "tokens"}, ["missing tokens"]),
        ({**LORAKIT_0_1_PROGRESS, "optimizer": {}}, ["unknown optimizer"]),
    ],
)
def test_a_state_this_lorakit_cannot_resume_is_refused_in_one_line(saved, words):
    with pytest.raises(LorakitError) as caught:
        TrainState().load_state_dict(saved, source="checkpoint runs/x/checkpoints/step-12")
    message = str(caught.value)
    assert "\n" not in message and "step-12" in message
    for word in words:
        assert word in message
