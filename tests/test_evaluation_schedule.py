"""The evaluation schedule as a callback: built-in from [server], replaced or added to by users."""

from __future__ import annotations

import hashlib
import math

import pandas as pd
import pytest
from helpers import small_config

import fedsim
from fedsim.callbacks import Callback, EvaluationSchedule
from fedsim.evaluation import CLIENTS, TEST, TRAIN, Schedule
from fedsim.metrics import read_rounds

TIMING = ["server_s", "train_s", "wall_time_s"]
EVERY_3 = ("server.rounds=7", "server.eval_every=3", "server.eval_train=true")
CLIENTS_EVERY_2 = ("server.client_eval_every=2", "server.client_eval_clients=30")
NEVER = ("server.rounds=7", "server.eval_every=0", "server.client_eval_every=0")


class Every(Callback):
    """A user's own schedule: the test set and the global objective every ``k`` rounds."""

    def __init__(self, k: int, clients_k: int, last: int) -> None:
        self.k, self.clients_k, self.last = k, clients_k, last

    def evaluations(self, round_: int) -> list[str]:
        due = [TEST, TRAIN] if round_ % self.k == 0 or round_ == self.last else []
        if round_ % self.clients_k == 0 or round_ == self.last:
            due.append(CLIENTS)
        return due


class AtRound(Callback):
    def __init__(self, round_: int, name: str) -> None:
        self.round, self.name = round_, name

    def evaluations(self, round_: int) -> str | tuple[()]:
        return self.name if round_ == self.round else ()


def _rounds_csv(out) -> pd.DataFrame:
    return read_rounds(out / "rounds.csv").drop(columns=TIMING)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_schedule_runs_every_k_rounds_and_after_the_last():
    s = Schedule(every=3, train=True, clients_every=2, rounds=7)
    due = {r: s.due(r) for r in range(1, 8)}
    assert due == {
        1: (),
        2: (CLIENTS,),
        3: (TEST, TRAIN),
        4: (CLIENTS,),
        5: (),
        6: (TEST, TRAIN, CLIENTS),
        7: (TEST, TRAIN, CLIENTS),
    }
    never = Schedule(every=0, rounds=4)
    assert never.due(3) == () and never.due(4) == (TEST,)


def test_evaluation_columns_are_filled_exactly_on_the_scheduled_rounds(tmp_path):
    fedsim.run(small_config(*EVERY_3, *CLIENTS_EVERY_2), out_dir=tmp_path / "a")
    rounds = _rounds_csv(tmp_path / "a").set_index("round")
    assert list(rounds.index[rounds.test_accuracy.notna()]) == [3, 6, 7]
    assert list(rounds.index[rounds.global_train_loss.notna()]) == [3, 6, 7]
    assert list(rounds.index[rounds.client_acc_p50.notna()]) == [2, 4, 6, 7]
    assert rounds.test_accuracy.dropna().between(0, 1).all()


def test_builtin_schedule_and_equal_user_schedules_write_identical_files(tmp_path):
    builtin = tmp_path / "builtin"
    fedsim.run(small_config(*EVERY_3, *CLIENTS_EVERY_2), out_dir=builtin)
    # An EvaluationSchedule of one's own replaces the built-in one (eval_every=1 is ignored).
    replaced = tmp_path / "replaced"
    fedsim.run(
        small_config("server.rounds=7", "server.client_eval_clients=30"),
        out_dir=replaced,
        callbacks=[EvaluationSchedule(Schedule(3, True, 2, 7))],
    )
    # A plain callback adds evaluations to the built-in schedule (here: last round only).
    added = tmp_path / "added"
    fedsim.run(
        small_config(*NEVER, "server.client_eval_clients=30"),
        out_dir=added,
        callbacks=[Every(3, 2, last=7)],
    )
    expected = _rounds_csv(builtin)
    for out in (replaced, added):
        pd.testing.assert_frame_equal(_rounds_csv(out), expected)
        assert _sha(out / "clients.csv") == _sha(builtin / "clients.csv")


#: Scores of the small config with eval_every = 3, eval_train and client_eval_every = 2 over 7
#: rounds, as rounds.csv held them (10 significant digits) when the server still decided the
#: schedule itself (commit aabf819, before the schedule became a callback).
BEFORE = {
    "test_accuracy": {3: 0.231884058, 6: 0.3007246377, 7: 0.2644927536},
    "test_loss": {3: 2.182100875, 6: 2.121130619, 7: 2.140912485},
    "global_train_loss": {3: 2.177080842, 6: 2.117902695, 7: 2.137282565},
    "global_train_accuracy": {3: 0.2350515464, 6: 0.2787628866, 7: 0.2622680412},
    "client_acc_mean": {2: 0.1194453774, 4: 0.2013607187, 6: 0.2212691586, 7: 0.2146492153},
}


def test_scores_are_those_recorded_before_the_schedule_became_a_callback(tmp_path):
    fedsim.run(small_config(*EVERY_3, "server.client_eval_every=2"), out_dir=tmp_path / "a")
    rounds = _rounds_csv(tmp_path / "a").set_index("round")
    for column, expected in BEFORE.items():
        found = rounds[column].dropna()
        assert list(found.index) == list(expected), column
        assert found.tolist() == pytest.approx(list(expected.values()), rel=1e-9, abs=0), column


def test_an_added_evaluation_scores_the_model_of_its_round(tmp_path):
    # Round 2 of a 5-round run, scored on request, equals the last round of a 2-round run.
    five = fedsim.run(
        small_config("server.rounds=5", "server.eval_every=0"), callbacks=[AtRound(2, TEST)]
    )
    two = fedsim.run(small_config("server.rounds=2", "server.eval_every=0"))
    assert five.rounds.test_accuracy.notna().tolist() == [False, True, False, False, True]
    assert five.rounds.test_accuracy[1] == two.rounds.test_accuracy[1]
    assert five.rounds.test_loss[1] == two.rounds.test_loss[1]
    assert math.isnan(two.rounds.test_accuracy[0])


def test_asking_twice_for_an_evaluation_runs_it_once_with_the_same_result(tmp_path):
    once = fedsim.run(small_config("server.rounds=3"))
    twice = fedsim.run(small_config("server.rounds=3"), callbacks=[AtRound(2, TEST)])
    pd.testing.assert_frame_equal(
        once.rounds.drop(columns=TIMING), twice.rounds.drop(columns=TIMING)
    )


def test_an_unknown_evaluation_is_refused_naming_the_callback_and_the_name(tmp_path):
    with pytest.raises(ValueError, match=r"callbacks: AtRound: .*'valid'"):
        fedsim.run(small_config("server.rounds=3"), callbacks=[AtRound(2, "valid")])


def test_async_mode_runs_the_evaluations_callbacks_ask_for(tmp_path):
    base = (
        "server.rounds=5",
        'server.mode="async"',
        "server.deadline_s=inf",
        'server.straggler_policy="drop"',
        "server.over_selection=1.0",
    )
    builtin = fedsim.run(small_config(*base, "server.eval_every=2"))
    user = fedsim.run(
        small_config(*base, "server.eval_every=1"),
        callbacks=[EvaluationSchedule(Schedule(every=2, rounds=5))],
    )
    assert builtin.rounds.test_accuracy.notna().tolist() == [False, True, False, True, True]
    pd.testing.assert_frame_equal(
        builtin.rounds.drop(columns=TIMING), user.rounds.drop(columns=TIMING)
    )


def test_a_user_schedule_on_ray_equals_the_builtin_one_locally(tmp_path, ray_session):
    local = fedsim.run(small_config(*EVERY_3, *CLIENTS_EVERY_2))
    on_ray = fedsim.run(
        small_config(
            *NEVER, "server.client_eval_clients=30", 'runtime.backend="ray"', "runtime.workers=1"
        ),
        callbacks=[Every(3, 2, last=7)],
    )
    pd.testing.assert_frame_equal(
        local.rounds.drop(columns=TIMING), on_ray.rounds.drop(columns=TIMING)
    )


class _CountingActor:
    """Stands for the server actor and counts the remote calls made to it, by method."""

    def __init__(self, actor, counts: dict[str, int]) -> None:
        self.actor, self.counts = actor, counts

    def __getattr__(self, name: str):
        method, counts = getattr(self.actor, name), self.counts

        class Method:
            def remote(self, *args, **kwargs):
                counts[name] = counts.get(name, 0) + 1
                return method.remote(*args, **kwargs)

        return Method()


def test_evaluating_and_profiling_every_round_on_ray_cost_no_extra_call_to_the_server(
    tmp_path, ray_session, monkeypatch
):
    from fedsim.runtime import session as session_mod

    counts: dict[str, dict[str, int]] = {}
    opened, closed = session_mod.RaySession.__init__, session_mod.RaySession.close

    def open_counting(self, exp) -> None:
        opened(self, exp)
        self.actor = _CountingActor(self.actor, counts.setdefault(str(len(counts)), {}))

    def close_counting(self) -> None:
        self.actor = self.actor.actor
        closed(self)

    monkeypatch.setattr(session_mod.RaySession, "__init__", open_counting)
    monkeypatch.setattr(session_mod.RaySession, "close", close_counting)
    ray = ('runtime.backend="ray"', "runtime.workers=1", "server.rounds=4")
    fedsim.run(small_config(*ray, "server.eval_every=0"), out_dir=tmp_path / "quiet")
    # Evaluating everything every round, and timing every phase: the same calls.
    busy = ("server.eval_every=1", "server.eval_train=true", "server.client_eval_every=1",
            "runtime.profile=true")  # fmt: skip
    fedsim.run(small_config(*ray, *busy), out_dir=tmp_path / "busy")
    assert counts["0"] == counts["1"]
    assert counts["0"]["run_round"] == 4 and counts["0"].get("get_model", 0) == 1
    assert len(pd.read_csv(tmp_path / "busy" / "profile.csv")) == 4
