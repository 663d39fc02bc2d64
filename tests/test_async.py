"""Asynchronous training (FedBuff, FedAsync) on the simulated clock; time-varying availability."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import pytest
from helpers import SMALL, small_config, write

import fedsim
from fedsim import checkpoint
from fedsim import config as config_mod
from fedsim.config import AsyncConfig
from fedsim.pipeline.base import Pipeline
from fedsim.population import Population
from fedsim.runner import prepare
from fedsim.runtime.asynchronous import staleness_weight
from fedsim.runtime.server import round_context
from fedsim.runtime.work import make_chunks, train_chunks, train_spec
from fedsim.strategies import Strategy

ASYNC = ("server.mode='async'", "server.deadline_s=inf", "async.concurrency=30")

THREE = """
[experiment]
seed = 1
[data]
dataset = "synthetic"
max_samples = 80
eval_clients = 3
[population]
num_clients = 3
profiles_csv = "profiles.csv"
[model]
name = "softmax"
[training]
local_epochs = 2
batch_size = 10
learning_rate = 0.05
[server]
mode = "async"
rounds = 8
clients_per_round = 3
[async]
concurrency = 3
buffer_size = 1
staleness_weight = "polynomial"
staleness_exponent = 0.5
[runtime]
backend = "local"
progress = false
"""

#: Seconds each of the three clients takes from download to upload (bandwidth ~ infinite).
DURATION = {0: 1.0, 1: 2.4, 2: 3.7}


class Recording(Strategy):
    """FedAvg that keeps every server step's aggregate update."""

    def __init__(self) -> None:
        super().__init__()
        self.deltas: list[np.ndarray] = []

    def server_update(self, w, agg):
        self.deltas.append(agg.delta.copy())
        return super().server_update(w, agg)


def _three_clients(tmp_path, *overrides):
    path = write(tmp_path / "three.toml", THREE)
    raw = config_mod.apply_overrides(tomllib.loads(THREE), list(overrides))
    raw["population"].pop("profiles_csv")
    sizes = prepare(config_mod.from_dict(raw)).dataset.client_sizes()
    rows = [f"{k},{2 * sizes[k] / d},1e15,1e15" for k, d in DURATION.items()]
    (tmp_path / "profiles.csv").write_text(
        "client_id,speed,download_bandwidth,upload_bandwidth\n" + "\n".join(rows) + "\n"
    )
    return path, sizes


def test_three_clients_fedasync_steps_in_the_order_their_timelines_give(tmp_path):
    path, sizes = _three_clients(tmp_path)
    strategy = Recording()
    res = fedsim.run(path, strategy=strategy)
    # Client 0 every 1 s, client 1 every 2.4 s, client 2 every 3.7 s; each restarts at once
    # from the newest model. K = 1: every arrival is a step.
    expect = [  # (time, client, version it trained from)
        (1.0, 0, 0), (2.0, 0, 1), (2.4, 1, 0), (3.0, 0, 2),
        (3.7, 2, 0), (4.0, 0, 4), (4.8, 1, 3), (5.0, 0, 6),
    ]  # fmt: skip
    r, c = res.rounds, res.clients
    np.testing.assert_allclose(r["sim_time_s"], [t for t, _, _ in expect], atol=1e-6)
    assert r["model_version"].tolist() == list(range(1, 9))
    assert c["client_id"].tolist() == [k for _, k, _ in expect]
    assert c["model_version"].tolist() == [v for _, _, v in expect]
    stale = [step - v for step, (_, _, v) in enumerate(expect)]
    assert stale == [0, 0, 2, 1, 4, 1, 3, 1]
    assert c["staleness"].tolist() == stale == r["staleness_max"].tolist()
    # Step 3 is client 1's update from the initial model, weighted 1/sqrt(1 + 2).
    exp = prepare(config_mod.load(path), tmp_path)
    w0 = exp.model.init(exp.cfg.experiment.seed)
    ids, n = np.array([1]), sizes[[1]].astype(np.int64)
    spec = train_spec(exp.cfg, exp.strategy, exp.aggregator)
    (out,) = train_chunks(
        exp.model, exp.dataset, w0, spec, round_context(exp.cfg, 1),
        make_chunks(ids, n, np.array([2]), 1), Pipeline(),
    )  # fmt: skip
    u = out.updates[0].astype(np.float64)
    np.testing.assert_allclose(strategy.deltas[2], u / np.sqrt(3.0), rtol=1e-12, atol=0)
    assert strategy.deltas[2].any()


def test_three_clients_fedbuff_steps_every_second_arrival(tmp_path):
    path, _ = _three_clients(tmp_path)
    res = fedsim.run(path, overrides=["async.buffer_size=2", "server.rounds=4"])
    np.testing.assert_allclose(res.rounds["sim_time_s"], [2.0, 3.0, 4.0, 5.0], atol=1e-6)
    c = res.clients
    assert c["client_id"].tolist() == [0, 0, 1, 0, 2, 0, 1, 0]
    assert c["model_version"].tolist() == [0, 0, 0, 1, 0, 2, 1, 3]
    assert c["staleness"].tolist() == [0, 0, 1, 0, 2, 0, 2, 0]
    assert res.rounds["staleness_mean"].tolist() == [0.0, 0.5, 1.0, 1.0]


def test_staleness_weights_follow_their_formulas():
    s = np.array([0, 1, 3, 4, 5, 8])
    np.testing.assert_allclose(
        staleness_weight(AsyncConfig(staleness_weight="polynomial"), s), 1 / np.sqrt(1 + s)
    )
    hinge = staleness_weight(AsyncConfig(staleness_weight="hinge", hinge_a=10, hinge_b=4), s)
    np.testing.assert_allclose(hinge, [1, 1, 1, 1, 1 / 11, 1 / 41])
    assert staleness_weight(AsyncConfig(staleness_weight="constant"), s).tolist() == [1.0] * 6


def test_too_stale_updates_are_discarded_and_counted(tmp_path):
    path, _ = _three_clients(tmp_path)
    res = fedsim.run(path, overrides=["async.max_staleness=1"])
    c = res.clients
    assert (c.loc[c["outcome"] == "completed", "staleness"] <= 1).all()
    assert (c.loc[c["outcome"] == "straggler", "staleness"] > 1).all()
    assert res.rounds["stragglers"].sum() == (c["outcome"] == "straggler").sum() > 0


def test_async_run_counts_server_steps_and_stops_at_target_accuracy():
    full = fedsim.run(small_config(*ASYNC, "server.rounds=12"))
    r = full.rounds
    assert len(r) == 12 and r["model_version"].tolist() == list(range(1, 13))
    assert np.all(np.diff(r["sim_time_s"]) >= 0)
    assert full.summary["sim_time_s"] == r["sim_time_s"].iloc[-1] > 0
    assert (r["completed"] == 10).all() and (r["staleness_max"] >= 1).any()
    target = float(r["test_accuracy"].iloc[5])
    stopped = fedsim.run(
        small_config(*ASYNC, "server.rounds=12", f"server.target_accuracy={target}")
    )
    assert stopped.summary["stop_reason"] == "target_accuracy"
    assert len(stopped.rounds) <= 6
    every = fedsim.run(small_config(*ASYNC, "server.rounds=6", "server.eval_every=3"))
    assert every.rounds["test_accuracy"].notna().tolist() == [False, False, True] * 2


def test_sync_rounds_have_empty_async_columns():
    r = fedsim.run(small_config("server.rounds=1")).rounds
    assert r[["model_version", "staleness_mean", "staleness_max"]].isna().all().all()


def _same(a, b):
    cols = [c for c in a.rounds.columns if not c.endswith("_s") or c == "sim_time_s"]
    cols = [c for c in cols if c not in ("server_s", "train_s", "wall_time_s")]
    assert a.rounds[cols].equals(b.rounds[cols])
    assert a.clients.equals(b.clients)
    assert np.array_equal(a.model, b.model)


@pytest.mark.slow
def test_async_identical_for_local_one_and_two_ray_workers(ray_session):
    sets = (*ASYNC, "server.rounds=6")
    local = fedsim.run(small_config(*sets))
    one = fedsim.run(small_config(*sets, "runtime.backend='ray'", "runtime.workers=1"))
    two = fedsim.run(small_config(*sets, "runtime.backend='ray'", "runtime.workers=2"))
    _same(local, one)
    _same(local, two)


def test_async_resumed_from_a_checkpoint_is_identical(tmp_path):
    from test_reliability import _assert_same_run

    sets = (*ASYNC, "server.rounds=10", "runtime.checkpoint_every=3")
    fedsim.run(small_config(*sets), out_dir=tmp_path / "ref")
    out = tmp_path / "cut"
    fedsim.run(small_config(*sets[:-2], "server.rounds=4", "runtime.checkpoint_every=3"),
               out_dir=out)  # fmt: skip
    state = checkpoint.load(out).state["server"]["async"]
    assert len(state["flights"]["client"]) == 30  # every slot is in flight at a step
    assert len(state["versions"]) == len(state["models"]) >= 2  # only versions still in use
    fedsim.resume(out, overrides=["server.rounds=10"])
    _assert_same_run(tmp_path / "ref", out)


def test_async_resumed_after_sigkill_is_identical(tmp_path):
    from helpers import spawn_run
    from test_reliability import _assert_same_run, _kill_at, _reference

    long = (*ASYNC, "server.rounds=40", "runtime.checkpoint_every=4")
    path = write(tmp_path / "small.toml", SMALL)
    reference = _reference(tmp_path, *long)
    out = tmp_path / "killed"
    sets = [a for o in long for a in ("--set", o)]
    _kill_at(spawn_run(str(path), "--out", str(out), *sets), out / "rounds.csv", 6)
    assert checkpoint.load(out).round < 40
    fedsim.resume(out)
    _assert_same_run(reference, out)


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (("privacy.enabled=true", "privacy.noise_multiplier=1.0"), "server.mode"),
        (("strategy.name='scaffold'",), "strategy.name"),
        (("server.deadline_s=5.0",), "server.deadline_s"),
        (("async.concurrency=1000",), "async.concurrency"),
    ],
)
def test_async_refuses_what_it_cannot_do_in_one_line(tmp_path, sets, key):
    path = write(tmp_path / "e.toml", SMALL)
    base = [o for o in ASYNC if key != "server.deadline_s" or "deadline" not in o]
    args = [a for o in (*base, *sets) for a in ("--set", o)]
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "-q", "--out", str(tmp_path / "o"),
         *args], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and key in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()


# --- availability -----------------------------------------------------------------------------


def _population(**kw):
    cfg = config_mod.from_dict({"population": {"num_clients": 20000, **kw}}).population
    return Population(cfg, seed=5)


def test_diurnal_online_share_peaks_and_troughs_by_the_configured_ratio():
    pop = _population(availability="diurnal", online_probability=0.8, diurnal_ratio=4.0)
    ids = np.arange(20000)
    zone = pop.curve.zone(ids)
    assert len(np.unique(zone)) == 24
    hour = 3600.0
    local_peak = ids[zone == 0]  # local hour = slot for zone 0
    at_peak = pop.is_online(local_peak, 0, 0.5 * hour).mean()
    at_trough = pop.is_online(local_peak, 0, 12.5 * hour).mean()
    assert at_peak == pytest.approx(0.8, abs=0.05)
    assert at_trough == pytest.approx(0.2, abs=0.04)
    # Over all zones the share online is the day average, at any time.
    assert pop.is_online(ids, 0, 7 * hour).mean() == pytest.approx(0.8 * 1.25 / 2, abs=0.02)


def test_diurnal_clients_go_offline_mid_training_at_an_hour_boundary():
    pop = _population(availability="diurnal", online_probability=0.6)
    ids = np.arange(2000)
    on = ids[pop.is_online(ids, 0, 100.0)]
    off = pop.offline_after(on, 100.0, np.full(len(on), 100.0 + 3 * 3600))
    gone = np.isfinite(off)
    assert 0.2 < gone.mean() < 0.99
    assert np.all(np.isin(off[gone], [3600.0, 7200.0, 10800.0]))
    first = off[gone] == 3600.0
    assert not pop.is_online(on[gone][first], 0, 3600.0).any()
    assert pop.is_online(on[~gone], 0, 7200.0).all()


def test_availability_trace_intervals_decide_who_is_online(tmp_path):
    csv = tmp_path / "trace.csv"
    csv.write_text("client_id,start_s,end_s\n0,0,100\n0,200,300\n1,50,400\n")
    pop = Population(
        config_mod.from_dict(
            {"population": {"num_clients": 3, "availability": "trace",
                            "availability_csv": str(csv)},
             "server": {"clients_per_round": 2}}
        ).population, seed=0,
    )  # fmt: skip
    ids = np.array([0, 1, 2])
    assert pop.is_online(ids, 0, 60.0).tolist() == [True, True, False]
    assert pop.is_online(ids, 0, 150.0).tolist() == [False, True, False]
    assert pop.is_online(ids, 0, 460.0).tolist() == [True, True, False]  # repeats every 400 s
    off = pop.offline_after(np.array([0, 1]), 60.0, np.array([90.0, 500.0]))
    assert off.tolist() == [np.inf, 400.0]


def test_async_run_with_diurnal_availability_drops_clients_that_go_offline():
    res = fedsim.run(
        small_config(*ASYNC, "server.rounds=8", "population.availability='diurnal'",
                     "population.online_probability=0.5", "population.period_s=100.0")
    )  # fmt: skip
    c = res.clients
    dropped = c[c["outcome"] == "dropped"]
    assert len(dropped) > 0
    # Offline drops happen on an hour boundary of the 100 s day (multiples of 100 / 24 s).
    slots = dropped["finish_s"] / (100.0 / 24)
    assert np.isclose(slots, np.round(slots)).any()
    assert res.rounds["model_version"].iloc[-1] == 8


@pytest.mark.parametrize(
    "text", ["", "client_id,start_s\n0,1\n", "client_id,start_s,end_s\n0,5,2\n", None]
)
def test_a_bad_availability_trace_is_a_one_line_config_error(tmp_path, text):
    csv = tmp_path / "trace.csv"
    if text is not None:
        csv.write_text(text)
    path = write(tmp_path / "e.toml", SMALL)
    sets = ["population.availability='trace'", f"population.availability_csv='{csv}'"]
    proc = subprocess.run(
        [sys.executable, "-m", "fedsim.cli", "run", str(path), "-q", "--out", str(tmp_path / "o"),
         *[a for o in sets for a in ("--set", o)]], capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "population.availability_csv" in lines[0], proc.stderr
    assert not (tmp_path / "o").exists()
