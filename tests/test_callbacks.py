"""Callbacks: what the round loop calls, user callbacks through the Python API, early stops."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import small_config

import fedsim
from fedsim import checkpoint
from fedsim.callbacks import Callback, RunContext
from fedsim.metrics import ROUND_COLUMNS, read_rounds

TIMING = ["server_s", "train_s", "wall_time_s"]


class Recording(Callback):
    """Keeps every call it gets, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []
        self.records: list[dict] = []
        self.run: RunContext | None = None
        self.summary: dict | None = None

    def on_run_start(self, run: RunContext) -> None:
        self.run = run
        self.calls.append(("run_start", run.start_round))

    def on_round_start(self, round_: int) -> None:
        self.calls.append(("round_start", round_))

    def on_round_end(self, record: dict) -> None:
        self.records.append(record)
        self.calls.append(("round_end", record["round"]))

    def on_run_end(self, summary: dict) -> None:
        self.summary = summary
        self.calls.append(("run_end", summary["rounds"]))

    def close(self) -> None:
        self.calls.append(("close", None))


class StopAfter(Callback):
    def __init__(self, round_: int, reason: str = "good_enough") -> None:
        self.round, self.reason = round_, reason

    def on_round_end(self, record: dict) -> str | None:
        return self.reason if record["round"] >= self.round else None


class StopBefore(Callback):
    def __init__(self, round_: int) -> None:
        self.round = round_

    def on_round_start(self, round_: int) -> str | None:
        return "budget" if round_ >= self.round else None


def _no_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=TIMING).reset_index(drop=True)


def test_a_user_callback_receives_every_round_record_equal_to_rounds_csv(tmp_path):
    seen = Recording()
    out = tmp_path / "run"
    result = fedsim.run(small_config("server.rounds=4"), out_dir=out, callbacks=[seen])
    assert [r["round"] for r in seen.records] == [1, 2, 3, 4]
    got = pd.DataFrame(seen.records, columns=ROUND_COLUMNS)
    pd.testing.assert_frame_equal(got, result.rounds, check_dtype=False)
    on_disk = read_rounds(out / "rounds.csv")
    pd.testing.assert_frame_equal(_no_timing(got), _no_timing(on_disk), check_dtype=False)
    assert seen.calls == [
        ("run_start", 0),
        *[c for r in range(1, 5) for c in (("round_start", r), ("round_end", r))],
        ("run_end", 4),
        ("close", None),
    ]
    assert seen.summary == json.loads((out / "summary.json").read_text())
    assert seen.run is not None and seen.run.out_dir == out and len(seen.run.records) == 4


def test_a_callback_mutating_its_record_changes_no_other_callback_or_file(tmp_path):
    class Vandal(Callback):
        def on_round_end(self, record: dict) -> None:
            record["test_accuracy"] = -1.0

    seen = Recording()
    result = fedsim.run(small_config(), out_dir=tmp_path / "r", callbacks=[Vandal(), seen])
    assert all(r["test_accuracy"] >= 0 for r in seen.records)
    assert (result.rounds["test_accuracy"] >= 0).all()


def test_a_callback_stops_the_run_early_with_its_reason_and_a_finished_checkpoint(tmp_path):
    full = fedsim.run(small_config("server.rounds=5"))
    out = tmp_path / "run"
    seen = Recording()
    stopped = fedsim.run(
        small_config("server.rounds=5", "runtime.checkpoint_every=0"),
        out_dir=out,
        callbacks=[StopAfter(2), seen],
    )
    assert len(stopped.rounds) == 2 and stopped.summary["stop_reason"] == "good_enough"
    # Callbacks after the one that stops still see that round; then the run ends.
    assert [r["round"] for r in seen.records] == [1, 2]
    pd.testing.assert_frame_equal(_no_timing(stopped.rounds), _no_timing(full.rounds.iloc[:2]))
    ckpt = checkpoint.load(out)
    assert ckpt is not None and ckpt.round == 2 and ckpt.state["finished"] == "good_enough"
    again = fedsim.resume(out)
    assert again.unchanged and len(again.rounds) == 2


def test_a_callback_stops_the_run_before_a_round_which_is_not_run(tmp_path):
    result = fedsim.run(
        small_config("server.rounds=5"), out_dir=tmp_path / "r", callbacks=[StopBefore(3)]
    )
    assert list(result.rounds["round"]) == [1, 2]
    assert result.summary["stop_reason"] == "budget"
    assert len(read_rounds(tmp_path / "r" / "rounds.csv")) == 2


def test_the_first_reason_to_stop_is_the_runs(tmp_path):
    result = fedsim.run(
        small_config("server.rounds=5"),
        callbacks=[StopAfter(3, "late"), StopAfter(2, "early"), StopAfter(2, "second")],
    )
    assert len(result.rounds) == 2 and result.summary["stop_reason"] == "early"


def test_callbacks_are_closed_when_a_callback_fails_and_the_run_can_be_resumed(tmp_path):
    class Crash(Callback):
        def on_round_end(self, record: dict) -> None:
            if record["round"] == 3:
                raise RuntimeError("boom")

    seen = Recording()
    out = tmp_path / "run"
    cfg = small_config("server.rounds=5", "runtime.checkpoint_every=2")
    with pytest.raises(RuntimeError, match="boom"):
        fedsim.run(cfg, out_dir=out, callbacks=[seen, Crash()])
    assert seen.calls[-1] == ("close", None)
    assert not any(name == "run_end" for name, _ in seen.calls)
    later = Recording()
    resumed = fedsim.resume(out, callbacks=[later])
    # The resumed start begins at the checkpoint (round 2) and sees the records kept up to it.
    assert later.calls[0] == ("run_start", 2)
    assert [r["round"] for r in later.records] == [3, 4, 5]
    assert later.run is not None and [r["round"] for r in later.run.records] == [1, 2, 3, 4, 5]
    full = fedsim.run(small_config("server.rounds=5"))
    pd.testing.assert_frame_equal(_no_timing(resumed.rounds), _no_timing(full.rounds))
    np.testing.assert_array_equal(resumed.model, full.model)


def test_something_not_a_callback_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TypeError, match="not a fedsim Callback"):
        fedsim.run(small_config(), out_dir=out, callbacks=[lambda record: None])
    assert not out.exists()


def test_results_with_callbacks_are_identical_to_results_without(tmp_path):
    plain = fedsim.run(small_config("server.rounds=4"))
    watched = fedsim.run(small_config("server.rounds=4"), callbacks=[Recording(), StopAfter(99)])
    pd.testing.assert_frame_equal(_no_timing(plain.rounds), _no_timing(watched.rounds))
    pd.testing.assert_frame_equal(plain.clients, watched.clients)
    np.testing.assert_array_equal(plain.model, watched.model)
