"""Device profiles and availability: columnar, seeded, small."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from helpers import write

from fedsim.config import ConfigError, from_dict
from fedsim.population import Population

TIERED = {
    "num_clients": 1_000_000,
    "dropout_rate": 0.1,
    "tiers": [
        {"name": "low", "weight": 0.5},
        {"name": "mid", "weight": 0.3},
        {"name": "high", "weight": 0.2},
    ],
    "speed": {"dist": "tiers", "values": [100.0, 400.0, 1500.0]},
    "download_bandwidth": {"dist": "lognormal", "median": 1e6, "sigma": 0.5},
    "upload_bandwidth": {"dist": "uniform", "low": 1e5, "high": 1e6},
    "availability": "bernoulli",
    "online_probability": {"dist": "uniform", "low": 0.2, "high": 1.0},
}


def pop_config(**population):
    return from_dict({"population": population, "server": {"clients_per_round": 1}}).population


def test_million_clients_cost_tens_of_bytes_each():
    tracemalloc.start()
    pop = Population(pop_config(**TIERED), seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert pop.num_clients == 1_000_000
    assert pop.nbytes <= 30 * pop.num_clients
    assert peak <= 40 * pop.num_clients  # including temporaries while drawing


def test_constant_attributes_cost_nothing():
    pop = Population(pop_config(num_clients=1_000_000), seed=0)
    assert pop.nbytes < 100


def test_tier_weights_and_values():
    pop = Population(pop_config(**TIERED), seed=1)
    frac = np.bincount(pop.tier, minlength=3) / pop.num_clients
    np.testing.assert_allclose(frac, [0.5, 0.3, 0.2], atol=0.003)
    np.testing.assert_array_equal(pop.speed, np.array([100, 400, 1500], np.float32)[pop.tier])
    med = np.median(pop.download_bandwidth)
    assert med == pytest.approx(1e6, rel=0.01)
    assert pop.upload_bandwidth.min() >= 1e5 and pop.upload_bandwidth.max() <= 1e6


def test_population_is_a_function_of_the_seed():
    a = Population(pop_config(**{**TIERED, "num_clients": 1000}), seed=4)
    b = Population(pop_config(**{**TIERED, "num_clients": 1000}), seed=4)
    c = Population(pop_config(**{**TIERED, "num_clients": 1000}), seed=5)
    np.testing.assert_array_equal(a.download_bandwidth, b.download_bandwidth)
    assert not np.array_equal(a.download_bandwidth, c.download_bandwidth)


def test_selection_is_distinct_online_and_sized():
    pop = Population(pop_config(**{**TIERED, "num_clients": 100_000}), seed=2)
    for r in (1, 2, 3):
        ids = pop.select(r, 0.0, 1000)
        assert len(ids) == 1000 == len(np.unique(ids))
        assert pop.is_online(ids, r, 0.0).all()
    # Bernoulli availability follows each client's probability.
    ids = np.arange(100_000)
    online = pop.is_online(ids, 7, 0.0)
    p = pop.online_probability
    assert online[p < 0.3].mean() == pytest.approx(p[p < 0.3].mean(), abs=0.01)
    assert online[p > 0.9].mean() == pytest.approx(p[p > 0.9].mean(), abs=0.01)


def test_periodic_availability_follows_on_fraction():
    pop = Population(
        pop_config(num_clients=10_000, availability="periodic", period_s=100.0, on_fraction=0.25),
        seed=0,
    )
    ids = np.arange(10_000)
    for t in (0.0, 13.0, 250.0):
        assert pop.is_online(ids, 1, t).mean() == pytest.approx(0.25, abs=0.02)
    # A client online at t is offline half a period later when on_fraction < 0.5.
    on = pop.is_online(ids, 1, 0.0)
    assert not np.any(on & pop.is_online(ids, 1, 50.0))


def test_profiles_csv_per_device_type(tmp_path):
    csv = write(
        tmp_path / "types.csv",
        "tier,weight,speed,download_bandwidth,upload_bandwidth\n"
        "phone,3,50,1e5,5e4\nlaptop,1,500,1e6,5e5\n",
    )
    pop = Population(pop_config(num_clients=40_000, profiles_csv=str(csv)), seed=0)
    assert pop.tier_names == ("phone", "laptop")
    assert np.mean(pop.tier == 0) == pytest.approx(0.75, abs=0.01)
    np.testing.assert_array_equal(pop.speed, np.array([50, 500], np.float32)[pop.tier])


@pytest.mark.parametrize(
    "text, message",
    [
        ("client_id,speed,download_bandwidth\n0,1,1\n", "missing column 'upload_bandwidth'"),
        (
            "weight,speed,download_bandwidth,upload_bandwidth,colour\n1,1,1,1,red\n",
            "unknown column",
        ),
        (
            "weight,speed,download_bandwidth,upload_bandwidth\n1,-1,1,1\n",
            "'speed': values must be > 0",
        ),
        ("weight,speed,download_bandwidth,upload_bandwidth\n1,x,1,1\n", "non-numeric"),
        ("client_id,speed,download_bandwidth,upload_bandwidth\n0,1,1,1\n", "exactly once"),
    ],
)
def test_bad_profiles_csv_names_the_file_and_problem(tmp_path, text, message):
    csv = write(tmp_path / "p.csv", text)
    with pytest.raises(ConfigError) as err:
        Population(pop_config(num_clients=3, profiles_csv=str(csv)), seed=0)
    assert str(err.value).startswith("population.profiles_csv: ")
    assert "p.csv" in str(err.value) and message in str(err.value)
