"""A keyed population: attributes drawn from (seed, client id) when asked, nothing stored."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_population import TIERED

import fedsim
from fedsim.config import ConfigError, from_dict
from fedsim.metrics import read_rounds
from fedsim.population import Population

ROOT = Path(__file__).resolve().parents[1]
ATTRIBUTES = (
    "speed",
    "download_bandwidth",
    "upload_bandwidth",
    "dropout_rate",
    "on_fraction",
)
# The columnar tests' tiered population, keyed, with periodic availability.
KEYED = {
    **{k: TIERED[k] for k in ("tiers", "speed", "download_bandwidth", "upload_bandwidth")},
    "draws": "keyed",
    "dropout_rate": {"dist": "tiers", "values": [0.2, 0.1, 0.05]},
    "availability": "periodic",
    "period_s": 100.0,
    "on_fraction": {"dist": "uniform", "low": 0.3, "high": 0.9},
}
# Columns whose values are wall-clock measurements, never reproducible.
WALL = ("server_s", "train_s", "wall_time_s")


def keyed(num_clients: int, **changes) -> Population:
    population = {**KEYED, "num_clients": num_clients, **changes}
    return Population(config(population).population, seed=11)


def config(population: dict):
    # Workload W's data is made from the client id: no per-client arrays besides the population.
    data = {"dataset": "softmax_bench"}
    return from_dict({"data": data, "population": population, "server": {"clients_per_round": 1}})


def test_keyed_attributes_equal_alone_or_in_any_batch():
    pop = keyed(10**9)
    ids = np.array([999_999_999, 3, 123_456_789, 3, 0, 42], dtype=np.int64)
    for name in ATTRIBUTES:
        batch = pop.attribute(name, ids)
        alone = np.concatenate([pop.attribute(name, ids[i : i + 1]) for i in range(len(ids))])
        np.testing.assert_array_equal(batch, alone)
        np.testing.assert_array_equal(pop.attribute(name, ids[::-1]), batch[::-1])
    np.testing.assert_array_equal(
        pop.tier_of(ids), np.concatenate([pop.tier_of(ids[i : i + 1]) for i in range(len(ids))])
    )
    np.testing.assert_array_equal(
        pop.phase_of(ids), np.concatenate([pop.phase_of([k]) for k in ids])
    )


def test_keyed_attributes_do_not_depend_on_the_population_size():
    small, huge = keyed(1000), keyed(10**12)
    ids = np.arange(0, 1000, 7)
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(small.attribute(name, ids), huge.attribute(name, ids))
    np.testing.assert_array_equal(small.tier_of(ids), huge.tier_of(ids))


def test_keyed_draws_follow_their_distributions():
    pop = keyed(10**9)
    ids = np.arange(200_000) * 4_999
    tier = pop.tier_of(ids)
    np.testing.assert_allclose(
        np.bincount(tier, minlength=3) / len(ids), [0.5, 0.3, 0.2], atol=0.005
    )
    speed = pop.attribute("speed", ids)
    np.testing.assert_array_equal(speed, np.array([100, 400, 1500], np.float32)[tier])
    assert pop.attribute("dropout_rate", ids).dtype == np.float32
    assert np.median(pop.attribute("download_bandwidth", ids)) == pytest.approx(1e6, rel=0.01)
    up = pop.attribute("upload_bandwidth", ids)
    assert up.min() >= 1e5 and up.max() <= 1e6
    assert np.mean(up) == pytest.approx(5.5e5, rel=0.01)
    phase = pop.phase_of(ids)
    assert phase.min() >= 0 and phase.max() <= 1 and np.mean(phase) == pytest.approx(0.5, abs=0.01)


def test_keyed_population_is_a_function_of_the_seed():
    a, b = keyed(10**9), keyed(10**9)
    ids = np.arange(5000) * 1_234_567
    for name in ATTRIBUTES:
        np.testing.assert_array_equal(a.attribute(name, ids), b.attribute(name, ids))
    np.testing.assert_array_equal(a.select(3, 17.0, 500), b.select(3, 17.0, 500))
    other = Population(config({**KEYED, "num_clients": 10**9}).population, seed=12)
    assert not np.array_equal(other.attribute("speed", ids), a.attribute("speed", ids))


def test_selecting_from_a_trillion_clients_is_fast_and_small():
    tracemalloc.start()
    t0 = time.perf_counter()
    pop = keyed(
        10**12,
        availability="bernoulli",
        on_fraction=1.0,
        period_s=86_400.0,
        online_probability=0.5,
    )
    ids = pop.select(1, 0.0, 10_000)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert pop.nbytes == 0
    assert len(ids) == 10_000 and len(np.unique(ids)) == 10_000
    assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < 10**12
    assert pop.is_online(ids, 1, 0.0).all()
    assert ids[-1] > 10**11  # spread over the whole range, not its start
    assert peak < 16 << 20  # bytes: what the cohort's candidates take, not the population
    assert elapsed < 5.0


def test_selection_widens_its_candidates_when_far_fewer_are_online_than_expected(monkeypatch):
    # The estimate says every client is online while about a quarter is: the first candidate
    # draw holds too few, so selection must widen.
    pop = keyed(
        10**10,
        availability="diurnal",
        on_fraction=1.0,
        period_s=86_400.0,
        online_probability=0.5,
        diurnal_ratio=100.0,
        diurnal_peak_hour=12.0,
    )
    monkeypatch.setattr(pop, "_online_fraction_estimate", lambda: 1.0)
    widened = []
    wider = pop._select_wider
    monkeypatch.setattr(pop, "_select_wider", lambda *a: widened.append(a) or wider(*a))
    t = 0.0  # midnight in zone 0; clients' zones spread the trough across the day
    ids = pop.select(2, t, 300)
    assert widened, "the first candidate draw was enough: widening was not exercised"
    assert len(ids) == 300 and len(np.unique(ids)) == 300
    assert pop.is_online(ids, 2, t).all()
    np.testing.assert_array_equal(ids, pop.select(2, t, 300))


def test_keyed_run_is_identical_on_local_and_two_ray_workers(ray_session):
    small = [
        "population.num_clients=100000000",
        "server.clients_per_round=300",
        "server.rounds=3",
        "data.samples_per_client=20",
    ]
    cfg = ROOT / "experiments" / "scalability" / "population_1b.toml"
    local = fedsim.run(cfg, overrides=[*small, "runtime.backend='local'"])
    ray = fedsim.run(cfg, overrides=[*small, "runtime.workers=2"])
    rounds_local, rounds_ray = (
        local.rounds.drop(columns=list(WALL)),
        ray.rounds.drop(columns=list(WALL)),
    )
    pd.testing.assert_frame_equal(rounds_local, rounds_ray)
    pd.testing.assert_frame_equal(local.clients, ray.clients)
    assert (local.rounds["dropped"] > 0).all() and set(local.clients["tier"]) == {
        "low",
        "mid",
        "high",
    }


def test_a_committed_run_with_stored_columns_gives_its_rounds_again(tmp_path):
    # Drawn tiers, speeds and bandwidths: the columnar draws of every committed result.
    run_dir = ROOT / "results" / "async" / "runs" / "sync_fedavg-seed0"
    fedsim.run(run_dir / "config.toml", overrides=["server.rounds=3"], out_dir=tmp_path / "run")
    again = read_rounds(tmp_path / "run" / "rounds.csv")
    committed = read_rounds(run_dir / "rounds.csv").head(3)
    columns = [c for c in committed.columns if c not in WALL]
    assert len(columns) > 20 and again["completed"].sum() == 300
    pd.testing.assert_frame_equal(again[columns], committed[columns])


def test_keyed_device_types_from_a_profiles_csv_store_nothing_per_client(tmp_path):
    csv = tmp_path / "types.csv"
    csv.write_text(
        "tier,weight,speed,download_bandwidth,upload_bandwidth\nphone,3,50,1e5,5e4\n"
        "laptop,1,500,1e6,5e5\n"
    )
    pop = keyed(10**9, profiles_csv=str(csv), speed=100.0, download_bandwidth=1.25e6)
    ids = np.arange(40_000) * 25_000
    tier = pop.tier_of(ids)
    assert pop.nbytes == 0 and pop.tier_names == ("phone", "laptop")
    assert np.mean(tier == 0) == pytest.approx(0.75, abs=0.01)
    np.testing.assert_array_equal(
        pop.attribute("speed", ids), np.array([50, 500], np.float32)[tier]
    )
    # Attributes the CSV does not give keep their own keyed draws.
    np.testing.assert_array_equal(
        pop.attribute("dropout_rate", ids),
        np.array([0.2, 0.1, 0.05], np.float32)[pop._config_tier_of(ids)],
    )


def test_config_sizes_a_keyed_billion_as_free_and_refuses_stored_columns_beyond_memory():
    population = {**KEYED, "num_clients": 10**12}
    assert config(population).population.draws == "keyed"
    with pytest.raises(ConfigError) as err:
        config({**population, "draws": "columns"})
    assert str(err.value).startswith("population.num_clients: a population of 1000000000000")
    with pytest.raises(ConfigError) as err:
        config({**population, "draws": "rows"})
    assert str(err.value).startswith("population.draws: ")
