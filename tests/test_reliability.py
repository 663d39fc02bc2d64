"""Reliability, tested by injecting the fault: kills, Ctrl-C, dying workers, bad updates."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import DEADLINE_S, SMALL, finish, small_config, spawn_run, write

import fedsim
from fedsim import checkpoint, cli, rundir
from fedsim.metrics import ROUND_COLUMNS
from fedsim.options import ConfigError
from fedsim.rng import Purpose, uniform
from fedsim.runner import prepare, resume
from fedsim.runtime.session import RaySession
from fedsim.strategies.local_sgd import local_sgd

TIMING_COLUMNS = {"server_s", "train_s", "wall_time_s"}

# A run of a few seconds, slow enough to be killed mid-way, checkpointing every 4 rounds so
# that most kills land between checkpoints and the rows after the last one must be redone.
LONG = ("server.rounds=40", "runtime.checkpoint_every=4")


def _records(path: Path) -> list[list[str]]:
    """rounds.csv as text, without the wall-time columns: equal text means equal numbers."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    keep = [i for i, name in enumerate(rows[0]) if name not in TIMING_COLUMNS]
    return [[row[i] for i in keep] for row in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    assert _records(a / "rounds.csv") == _records(b / "rounds.csv")
    assert (a / "clients.csv").read_bytes() == (b / "clients.csv").read_bytes()
    wa = checkpoint.load(a).state["server"]["w"]
    wb = checkpoint.load(b).state["server"]["w"]
    np.testing.assert_array_equal(wa, wb)


def _reference(tmp_path: Path, *overrides: str) -> Path:
    out = tmp_path / "reference"
    fedsim.run(small_config(*overrides), out_dir=out)
    return out


def _data_rows(path: Path) -> int:
    """Complete data lines of a CSV being appended to (0 if it does not exist yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    return max(text.count("\n") - 1, 0)


def _wait_for_rows(proc: subprocess.Popen, rounds_csv: Path, rows: int) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while _data_rows(rounds_csv) < rows:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before round {rows}: {finish(proc)[1]}")
        if time.monotonic() > deadline:
            os.kill(proc.pid, signal.SIGKILL)
            finish(proc)
            raise AssertionError(f"no round {rows} within {DEADLINE_S:g} s")
        time.sleep(0.005)


def _kill_at(proc: subprocess.Popen, rounds_csv: Path, rows: int) -> None:
    _wait_for_rows(proc, rounds_csv, rows)
    assert proc.poll() is None, "the run must still be going when it is killed"
    os.kill(proc.pid, signal.SIGKILL)
    finish(proc)
    assert proc.returncode == -signal.SIGKILL


def _experiment(tmp_path: Path) -> Path:
    return write(tmp_path / "small.toml", SMALL)


# --- checkpoint files --------------------------------------------------------------------


def test_checkpoint_holds_the_state_and_loads_without_pickle(tmp_path):
    out = tmp_path / "run"
    result = fedsim.run(small_config("server.rounds=6", "runtime.checkpoint_every=4"), out_dir=out)
    ckpt_dir = out / "checkpoint"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["lock", "model-000006.npz", "state.json"]
    state = json.loads((ckpt_dir / "state.json").read_text())
    with np.load(ckpt_dir / "model-000006.npz", allow_pickle=False) as npz:
        w = npz["server.w"]
    np.testing.assert_array_equal(w, result.model)
    assert state["round"] == state["server"]["round"] == 6
    last = result.rounds.iloc[-1]
    assert state["server"]["sim_time_s"] == last["sim_time_s"]
    assert state["server"]["cum_bytes_up"] == last["cum_bytes_up"]
    assert state["server"]["strategy"] == {}
    assert state["records"] == {
        "rounds.csv": (out / "rounds.csv").stat().st_size,
        "clients.csv": (out / "clients.csv").stat().st_size,
    }


def test_a_kill_between_the_two_renames_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoint.save(tmp_path, {"round": 1, "server": {"w": np.ones(3, np.float32)}})
    real_replace = os.replace

    def die_at_commit(src, dst):
        if Path(dst).name == "state.json":
            raise SystemExit("killed")  # the process dies after the model's rename
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", die_at_commit)
    with pytest.raises(SystemExit):
        checkpoint.save(tmp_path, {"round": 2, "server": {"w": np.full(3, 2, np.float32)}})
    monkeypatch.undo()
    assert (tmp_path / "checkpoint" / "model-000002.npz").exists()
    ckpt = checkpoint.load(tmp_path)
    assert ckpt.round == 1
    np.testing.assert_array_equal(ckpt.state["server"]["w"], np.ones(3, np.float32))
    # The next checkpoint commits and clears what the dead one left.
    checkpoint.save(tmp_path, {"round": 3, "server": {"w": np.full(3, 3, np.float32)}})
    assert sorted(p.name for p in (tmp_path / "checkpoint").iterdir()) == [
        "model-000003.npz",
        "state.json",
    ]


def test_a_damaged_checkpoint_model_is_refused(tmp_path):
    checkpoint.save(tmp_path, {"round": 4, "server": {"w": np.arange(5, dtype=np.float32)}})
    model = tmp_path / "checkpoint" / "model-000004.npz"
    data = bytearray(model.read_bytes())
    data[-30] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="checksum mismatch"):
        checkpoint.load(tmp_path)


# --- records and resume, in process ------------------------------------------------------


def test_records_are_on_disk_as_roundsfinish(tmp_path):
    out = tmp_path / "run"
    seen = []
    fedsim.run(
        small_config("server.rounds=4"),
        out_dir=out,
        on_round=lambda rec: seen.append((rec["round"], _data_rows(out / "rounds.csv"))),
    )
    assert seen == [(1, 1), (2, 2), (3, 3), (4, 4)]


def test_crash_after_a_round_then_resume_matches_an_uninterrupted_run(tmp_path):
    reference = _reference(tmp_path, "server.rounds=9", "runtime.checkpoint_every=3")
    out = tmp_path / "crashed"

    def crash(record):
        if record["round"] == 8:
            raise RuntimeError("crash")

    cfg = small_config("server.rounds=9", "runtime.checkpoint_every=3")
    with pytest.raises(RuntimeError, match="crash"):
        fedsim.run(cfg, out_dir=out, on_round=crash)
    assert _data_rows(out / "rounds.csv") == 8
    assert checkpoint.load(out).round == 6
    result = resume(out)
    assert result.summary["resumed_from_rounds"] == [6]
    assert result.rounds["round"].tolist() == list(range(1, 10))
    _assert_same_run(reference, out)
    np.testing.assert_array_equal(result.model, checkpoint.load(reference).state["server"]["w"])


def test_a_finished_run_resumes_to_the_same_records(tmp_path):
    out = tmp_path / "run"
    first = fedsim.run(small_config(), out_dir=out)
    before = (out / "rounds.csv").read_bytes()
    again = resume(out)
    assert (out / "rounds.csv").read_bytes() == before
    np.testing.assert_array_equal(first.model, again.model)
    assert again.summary["rounds"] == 3


def test_run_with_resume_continues_an_existing_folder_and_extends_it(tmp_path):
    reference = _reference(tmp_path, "server.rounds=5", "server.eval_every=0")
    out = tmp_path / "run"
    cfg = small_config("server.rounds=3", "server.eval_every=0")
    fedsim.run(cfg, out_dir=out)
    longer = fedsim.run(cfg, overrides=["server.rounds=5"], out_dir=out, resume=True)
    assert longer.summary["resumed_from_rounds"] == [3]
    ref, got = _records(reference / "rounds.csv"), _records(out / "rounds.csv")
    acc = ref[0].index("test_accuracy")
    # Round 3 was the last round of the shorter run, so it was evaluated there.
    assert got[3][acc] != "" and ref[3][acc] == ""
    assert [r[:acc] + r[acc + 2 :] for r in got] == [r[:acc] + r[acc + 2 :] for r in ref]


def test_resume_refuses_a_changed_experiment_and_leaves_the_folder_alone(tmp_path, capsys):
    out = tmp_path / "run"
    fedsim.run(small_config("server.rounds=5", "runtime.checkpoint_every=2"), out_dir=out)
    # Pretend the run was killed after round 5's records but before its checkpoint.
    state = json.loads(checkpoint.state_path(out).read_text())
    assert state["round"] == 5
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    code = cli.main(["run", "--resume", str(out), "--set", "training.learning_rate=0.5"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "training.learning_rate: the run being resumed has 0.05, got 0.5" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_second_process_on_the_same_run_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    fedsim.run(small_config("server.rounds=4", "runtime.checkpoint_every=3"), out_dir=out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    held = rundir.RunLock(out)  # as if another process were running it
    try:
        assert cli.main(["run", "--resume", str(out), "-q"]) == 2
    finally:
        held.close()
    assert f"{out}: another fedsim process is running this run" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert resume(out).summary["rounds"] == 4, "the lock went with its holder"


def test_an_output_folder_holding_a_run_is_not_overwritten(tmp_path, capsys):
    path = _experiment(tmp_path)
    out = tmp_path / "run"
    fedsim.run(path, out_dir=out)
    before = (out / "rounds.csv").read_bytes()
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 2
    assert f"{out}: already holds a run; continue it with fedsim run --resume" in (
        capsys.readouterr().err
    )
    assert (out / "rounds.csv").read_bytes() == before


# --- killing a real `fedsim run` ---------------------------------------------------------


@pytest.mark.slow
def test_sigkill_twice_then_resume_ends_identical_to_an_uninterrupted_run(tmp_path):
    path = _experiment(tmp_path)
    reference = _reference(tmp_path, *LONG)
    out = tmp_path / "killed"
    sets = [a for o in LONG for a in ("--set", o)]
    _kill_at(spawn_run(str(path), "--out", str(out), *sets), out / "rounds.csv", 3)
    first = checkpoint.load(out).round
    _kill_at(spawn_run("--resume", str(out)), out / "rounds.csv", 15)
    second = checkpoint.load(out).round
    assert first < second < 40
    resume(out)
    _assert_same_run(reference, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from_rounds"] == [first, second]
    assert summary["rounds"] == 40


@pytest.mark.slow
def test_sigkill_of_a_ray_run_then_resume_on_the_local_backend_is_identical(tmp_path):
    path = _experiment(tmp_path)
    reference = _reference(tmp_path, *LONG)
    out = tmp_path / "killed"
    sets = [a for o in (*LONG, "runtime.backend='ray'", "runtime.workers=2") for a in ("--set", o)]
    _kill_at(spawn_run(str(path), "--out", str(out), *sets), out / "rounds.csv", 4)
    resume(out, overrides=["runtime.backend='local'"])
    _assert_same_run(reference, out)


# SIGTERM is what batch schedulers send before they preempt a job: it acts as Ctrl-C.
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_after_the_round_with_a_checkpoint_and_says_how_to_resume(tmp_path, sig):
    path = _experiment(tmp_path)
    reference = _reference(tmp_path, *LONG)
    out = tmp_path / "interrupted"
    proc = spawn_run(str(path), "--out", str(out), *[a for o in LONG for a in ("--set", o)])
    _wait_for_rows(proc, out / "rounds.csv", 3)
    proc.send_signal(sig)
    _, stderr = finish(proc)
    assert proc.returncode == 130
    assert f"checkpoint written; resume with: fedsim run --resume {out}" in stderr
    assert "Traceback" not in stderr
    stopped = checkpoint.load(out).round
    assert 3 <= stopped < 40
    assert stopped == _data_rows(out / "rounds.csv"), "checkpoint of the last recorded round"
    assert resume(out).summary["resumed_from_rounds"] == [stopped]
    _assert_same_run(reference, out)


# --- workers dying -----------------------------------------------------------------------


def _without_timing(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns=sorted(TIMING_COLUMNS)).reset_index(drop=True)


def test_a_worker_killed_mid_round_is_replaced_and_results_are_identical(ray_session):
    local = fedsim.run(small_config())
    killed = fedsim.run(
        small_config("runtime.backend='ray'", "runtime.workers=2", "faults.kill_worker_at_round=2")
    )
    assert killed.summary["worker_restarts"] == 1
    assert local.summary["worker_restarts"] == 0
    pd.testing.assert_frame_equal(_without_timing(local.rounds), _without_timing(killed.rounds))
    pd.testing.assert_frame_equal(local.clients, killed.clients)
    np.testing.assert_array_equal(local.model, killed.model)


@pytest.mark.slow
def test_a_worker_killed_by_the_os_is_replaced_and_results_are_identical(ray_session):
    local = fedsim.run(small_config())
    session = RaySession(prepare(small_config("runtime.backend='ray'", "runtime.workers=2")))
    try:
        records = [session.round().record]
        victim = session.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        records += [session.round().record, session.round().record]
        pids, restarts, model = session.worker_pids(), session.worker_restarts(), session.model()
    finally:
        session.close()
    assert restarts == 1 and victim not in pids
    got = pd.DataFrame(records, columns=ROUND_COLUMNS)
    pd.testing.assert_frame_equal(_without_timing(local.rounds), _without_timing(got))
    np.testing.assert_array_equal(local.model, model)


@pytest.mark.slow
def test_a_worker_that_keeps_dying_ends_the_run_with_records_and_checkpoint(
    ray_session, tmp_path, capsys
):
    path = _experiment(tmp_path)
    out = tmp_path / "run"
    code = cli.main(
        [
            "run",
            str(path),
            "--out",
            str(out),
            "-q",
            *("--set", "runtime.backend='ray'", "--set", "runtime.workers=2"),
            *("--set", "faults.kill_worker_at_round=3", "--set", "faults.kill_worker_times=3"),
            *("--set", "runtime.max_worker_restarts=2", "--set", "server.rounds=5"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert (
        "fedsim: error: training workers died 3 times in round 3, more than "
        "runtime.max_worker_restarts = 2"
    ) in err
    assert f"resume with: fedsim run --resume {out}" in err
    assert "Traceback" not in err
    assert _data_rows(out / "rounds.csv") == 2
    assert checkpoint.load(out).round == 2
    # The hint, followed as printed: the injected kill does not fire again on resume.
    assert cli.main(["run", "--resume", str(out), "-q"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    done = resume(out)
    assert done.rounds["round"].tolist() == [1, 2, 3, 4, 5]
    local = fedsim.run(small_config("server.rounds=5"))
    np.testing.assert_array_equal(done.model, local.model)


# --- bad updates and divergence ----------------------------------------------------------

# One round with every selected client reporting and no shuffling, so each client's model can
# be trained again here, independently of the simulator.
ONE_ROUND = (
    "server.rounds=1",
    "server.deadline_s=inf",
    "server.over_selection=1.0",
    "population.dropout_rate=0.0",
    "training.shuffle=false",
)


def _client_models(cfg, ids):
    exp = prepare(cfg)
    w0 = exp.model.init(cfg.experiment.seed)
    models, sizes = [], []
    for cid in ids:
        x, y = exp.dataset.client_train(int(cid))
        w, _ = local_sgd(
            exp.model, w0, x[None], y[None], epochs=2, batch_size=10, learning_rate=0.05
        )
        models.append(w[0].astype(np.float64))
        sizes.append(len(y))
    return w0, np.array(models), np.array(sizes, dtype=np.float64)


def test_nan_updates_are_rejected_before_aggregation_and_counted(tmp_path):
    cfg = small_config(*ONE_ROUND, "faults.nan_update_rate=0.3")
    result = fedsim.run(cfg, out_dir=tmp_path / "run")
    clients = result.clients
    ids = clients["client_id"].to_numpy()
    hit = uniform(cfg.experiment.seed, 1, Purpose.FAULT_NAN, ids) < 0.3
    assert 0 < hit.sum() < len(ids)
    assert clients["rejected"].tolist() == hit.tolist()
    assert result.rounds["rejected"].tolist() == [int(hit.sum())]
    assert result.summary["rejected_updates"] == int(hit.sum())
    _, models, sizes = _client_models(cfg, ids)
    expected = np.average(models[~hit], axis=0, weights=sizes[~hit])
    np.testing.assert_allclose(result.model, expected, rtol=1e-6, atol=1e-7)
    assert np.isfinite(result.model).all()
    loss = clients["train_loss"].to_numpy()
    np.testing.assert_allclose(
        result.rounds["train_loss"].iloc[0], np.average(loss[~hit], weights=sizes[~hit])
    )
    on_disk = pd.read_csv(tmp_path / "run" / "rounds.csv")
    assert on_disk["rejected"].tolist() == [int(hit.sum())]


def test_updates_above_the_norm_bound_are_rejected_exactly(tmp_path):
    probe = fedsim.run(small_config(*ONE_ROUND))
    ids = probe.clients["client_id"].to_numpy()
    w0, models, sizes = _client_models(small_config(*ONE_ROUND), ids)
    norms = np.linalg.norm(models - w0, axis=1)
    bound = float(np.median(norms))
    result = fedsim.run(small_config(*ONE_ROUND, f"server.max_update_norm={bound!r}"))
    too_big = norms > bound
    assert 0 < too_big.sum() < len(ids)
    assert result.clients["rejected"].tolist() == too_big.tolist()
    expected = np.average(models[~too_big], axis=0, weights=sizes[~too_big])
    np.testing.assert_allclose(result.model, expected, rtol=1e-6, atol=1e-7)


def test_nan_rejection_is_the_same_on_ray_and_local(ray_session):
    overrides = ("server.rounds=3", "faults.nan_update_rate=0.25")
    local = fedsim.run(small_config(*overrides))
    remote = fedsim.run(small_config(*overrides, "runtime.backend='ray'", "runtime.workers=2"))
    assert local.rounds["rejected"].sum() > 0
    pd.testing.assert_frame_equal(_without_timing(local.rounds), _without_timing(remote.rounds))
    np.testing.assert_array_equal(local.model, remote.model)


def test_a_diverging_run_stops_naming_the_round_with_records_intact(tmp_path, capsys):
    path = _experiment(tmp_path)
    out = tmp_path / "run"
    args = ["run", str(path), "--out", str(out), "-q", "--set", "server.rounds=6"]
    args += ["--set", "model.name='mlp'", "--set", "training.learning_rate=10.0"]
    with np.errstate(all="ignore"):
        code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 1
    assert "fedsim: error: training diverged at round 3 (all 20 client updates non-finite" in err
    assert "resume with" not in err, "resuming a diverged run would diverge again"
    assert "Traceback" not in err
    rounds = pd.read_csv(out / "rounds.csv")
    assert rounds["round"].tolist() == [1, 2]
    assert (rounds["rejected"] > 0).all(), "the blow-up shows in the records before the stop"
    assert np.isfinite(checkpoint.load(out).state["server"]["w"]).all()
