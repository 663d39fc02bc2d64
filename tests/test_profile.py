"""runtime.profile / fedsim run --profile: where each round's wall time goes, in profile.csv."""

from __future__ import annotations

import tomllib

import pandas as pd
import pytest
from helpers import SMALL, small_config

import fedsim
from fedsim.callbacks import Callback
from fedsim.cli import main
from fedsim.options import ConfigError
from fedsim.profiling import PHASES, PROFILE_COLUMNS, phase_table

TIMING = ["server_s", "train_s", "wall_time_s"]
ASYNC = ('server.mode="async"', "server.deadline_s=inf", 'server.straggler_policy="drop"',
         "server.over_selection=1.0")  # fmt: skip
# Clocks read in two processes (driver, Ray actor) and float sums: a microsecond of slack.
TOLERANCE_S = 1e-6


def _profile(out) -> pd.DataFrame:
    return pd.read_csv(out / "profile.csv")


def _check_rows(frame: pd.DataFrame, rounds: int) -> None:
    assert list(frame.columns) == PROFILE_COLUMNS
    assert frame["round"].tolist() == list(range(1, rounds + 1))
    phases = frame[[f"{p}_s" for p in PHASES]]
    assert (phases >= 0).all().all() and (frame.total_s > 0).all()
    assert (phases.sum(axis=1) <= frame.total_s + TOLERANCE_S).all()
    assert (frame.train_s > 0).all()


def test_profile_csv_has_one_row_per_round_and_phases_within_the_total(tmp_path):
    out = tmp_path / "run"
    cfg = small_config("server.rounds=4", "runtime.checkpoint_every=2", "server.eval_every=2",
                       "runtime.profile=true")  # fmt: skip
    fedsim.run(cfg, out_dir=out)
    frame = _profile(out)
    _check_rows(frame, 4)
    # Checkpoints after rounds 2 and 4 (every 2), evaluations after rounds 2 and 4 only.
    assert (frame.checkpoint_s > 0).tolist() == [False, True, False, True]
    assert (frame.evaluate_s > frame.evaluate_s.min()).tolist()[1::2] == [True, True]
    assert (frame.broadcast_s > 0).all() and (frame.select_plan_s > 0).all()


def test_profile_is_off_by_default_and_writes_no_file(tmp_path):
    assert small_config().runtime.profile is False
    fedsim.run(small_config("server.rounds=2"), out_dir=tmp_path / "run")
    assert (tmp_path / "run" / "rounds.csv").is_file()
    assert not (tmp_path / "run" / "profile.csv").exists()


def test_results_with_profile_are_identical_to_results_without(tmp_path):
    plain = fedsim.run(small_config("server.rounds=3"), out_dir=tmp_path / "plain")
    cfg = small_config("server.rounds=3", "runtime.profile=true")
    timed = fedsim.run(cfg, out_dir=tmp_path / "timed")
    pd.testing.assert_frame_equal(plain.rounds.drop(columns=TIMING),
                                  timed.rounds.drop(columns=TIMING))  # fmt: skip
    pd.testing.assert_frame_equal(plain.clients, timed.clients)


def test_async_mode_profiles_each_server_step(tmp_path):
    out = tmp_path / "run"
    fedsim.run(small_config("server.rounds=3", "runtime.profile=true", *ASYNC), out_dir=out)
    frame = _profile(out)
    _check_rows(frame, 3)
    assert (frame.broadcast_s == 0).all()  # the model goes out inside the training calls


def test_profile_on_ray_reaches_the_driver_with_the_rounds(tmp_path, ray_session):
    out = tmp_path / "run"
    cfg = small_config("server.rounds=3", 'runtime.backend="ray"', "runtime.workers=1",
                       "runtime.profile=true")  # fmt: skip
    fedsim.run(cfg, out_dir=out)
    _check_rows(_profile(out), 3)


def test_a_resumed_run_times_each_round_once(tmp_path):
    class Crash(Callback):
        def on_round_start(self, round_: int) -> None:
            if round_ == 4:
                raise RuntimeError("boom")

    out = tmp_path / "run"
    cfg = small_config("server.rounds=5", "runtime.checkpoint_every=2", "runtime.profile=true")
    with pytest.raises(RuntimeError, match="boom"):
        fedsim.run(cfg, out_dir=out, callbacks=[Crash()])
    assert _profile(out)["round"].tolist() == [1, 2, 3]  # the checkpoint is round 2's
    fedsim.resume(out)
    _check_rows(_profile(out), 5)


def test_phase_table_sorts_phases_by_time_with_their_share():
    row = {c: 0.0 for c in PROFILE_COLUMNS}
    rows = [{**row, "round": r, "train_s": 0.6, "evaluate_s": 0.2, "total_s": 1.0} for r in (1, 2)]
    lines = phase_table(pd.DataFrame(rows)).splitlines()
    assert lines[0] == "where the time went: 2 rounds, 2.000 s wall time"
    assert lines[4] == "| train | 1.200 | 600.00 | 60.0% |"
    assert lines[5] == "| evaluate | 0.400 | 200.00 | 20.0% |"
    assert lines[6] == "| other (transport, loop) | 0.400 | 200.00 | 20.0% |"


def test_the_profile_flag_sets_the_key_and_prints_the_phases(tmp_path, capsys):
    config = tmp_path / "small.toml"
    config.write_text(SMALL)
    out = tmp_path / "run"
    assert main(["run", str(config), "--out", str(out), "--profile", "-q",
                 "--set", "server.rounds=2"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "where the time went: 2 rounds" in printed and "| train |" in printed
    assert tomllib.loads((out / "config.toml").read_text())["runtime"]["profile"] is True
    _check_rows(_profile(out), 2)


def test_profile_without_a_run_folder_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^runtime\.profile: writes profile\.csv"):
        fedsim.run(small_config("server.rounds=2", "runtime.profile=true"))


def test_a_damaged_profile_is_started_anew_on_resume(tmp_path):
    out = tmp_path / "run"
    fedsim.run(small_config("server.rounds=2", "runtime.profile=true"), out_dir=out)
    (out / "profile.csv").write_text("not,a\nprofile,\n")
    fedsim.resume(out, overrides=["server.rounds=3"])
    assert _profile(out)["round"].tolist() == [3]
