"""The trainer state is a typed dataclass, written to trainer_state.json with the same keys as before, so
checkpoints written earlier still resume."""
from __future__ import annotations

import json

import pytest

from hone.training.state import TrainState

# trainer_state.json as a checkpoint at step 4 holds it (a run with eval, saved twice; RNG of one process)
OLD = {"global_step": 4, "epoch": 0.5, "total_steps": 8, "losses": [3.1, 2.9, 2.7, 2.5],
       "eval_history": [{"step": 2, "eval_loss": 2.8}, {"step": 4, "eval_loss": 2.6}], "best_metric": 2.6,
       "best_step": 4, "bad_evals": 0, "skipped_steps": 0, "fingerprint": "056b68dc10e39374", "rows": 16,
       "batch_size": 2, "gradient_accumulation_steps": 2, "world_size": 1, "max_steps": 8, "num_train_epochs": 3.0,
       "seed": 42, "last_checkpoint": "/runs/x/checkpoint-2", "rng": {"0": {"python": [3, [1, 2], None]}}}


def test_a_saved_state_reads_back_typed_and_writes_the_same_keys():
    st = TrainState.from_json(json.loads(json.dumps(OLD)), "trainer_state.json")
    assert (st.global_step, st.best_step, st.last_checkpoint, st.rng["0"]["python"][0]) == (4, 4, OLD[
        "last_checkpoint"], 3)
    assert st.to_json() == {k: v for k, v in OLD.items() if k != "rng"}


def test_a_fresh_state_has_no_checkpoint_keys_and_unknown_keys_are_named(caplog):
    assert set(TrainState().to_json()) == set(OLD) - {"last_checkpoint", "rng"}
    st = TrainState.from_json({**OLD, "from_the_future": 1}, "ck/trainer_state.json")
    assert st.global_step == 4 and "ignoring unknown trainer state keys from_the_future" in caplog.text


def test_a_state_of_the_wrong_shape_is_a_clear_error():
    from hone.errors import CheckpointError

    with pytest.raises(CheckpointError, match="ck/trainer_state.json: not a trainer state"):
        TrainState.from_json([1, 2], "ck/trainer_state.json")
