"""The generated traffic-flow set: cycles, keyed cities, windows, and the city/pooled splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedsim.data.traffic import TrafficOptions, city_series, make_traffic_dataset
from fedsim.options import ConfigError, build

OPTS = TrafficOptions(num_cities=4, sensors_per_city=2, min_days=14, max_days=21, test_days=7)
PER_DAY = 48


def test_series_have_rush_hours_a_daily_cycle_and_quiet_weekends() -> None:
    flows = city_series(OPTS, seed=0, city=1)
    days = flows.shape[1] // PER_DAY
    assert 14 <= days <= 21 and flows.min() >= 0
    by_day = flows[:, : days * PER_DAY].reshape(2, days, PER_DAY)
    weekday = by_day[:, [d for d in range(days) if d % 7 < 5]].mean(axis=(0, 1))
    weekend = by_day[:, [d for d in range(days) if d % 7 >= 5]].mean(axis=(0, 1))
    assert weekday.sum() > 1.1 * weekend.sum()
    night, morning = weekday[4:8].mean(), weekday[14:20].mean()  # 02-04 h against 07-10 h
    assert morning > 2 * night
    # One day apart the same weekday looks alike; half a day apart it does not.
    s = flows[0] - flows[0].mean()
    day_lag = np.corrcoef(s[:-PER_DAY], s[PER_DAY:])[0, 1]
    half_lag = np.corrcoef(s[: -PER_DAY // 2], s[PER_DAY // 2 :])[0, 1]
    assert day_lag > 0.5 > half_lag


def test_a_city_depends_only_on_the_seed_and_its_index() -> None:
    np.testing.assert_array_equal(city_series(OPTS, 3, 2), city_series(OPTS, 3, 2))
    bigger = TrafficOptions(num_cities=9, sensors_per_city=2, min_days=14, max_days=21)
    np.testing.assert_array_equal(city_series(OPTS, 3, 2), city_series(bigger, 3, 2))
    a, b = city_series(OPTS, 3, 2), city_series(OPTS, 3, 1)
    assert a.shape != b.shape or not np.allclose(a, b)


def test_windows_hold_the_previous_flows_and_the_last_days_are_held_out() -> None:
    ds = make_traffic_dataset(OPTS, 4, seed=0)
    assert ds.task == "regression" and ds.num_clients == 4 and ds.input_shape == (15,)
    x, y = ds.client_train(2)
    # Consecutive samples of one sensor: the newest lag of the next is this target.
    np.testing.assert_allclose(x[1:40, 11], y[:39], rtol=1e-6)
    # Flows are divided by the sensor's mean training flow.
    assert np.mean(y) == pytest.approx(1.0, abs=0.05)
    for k in range(4):
        assert len(ds.client_test(k)[1]) == 2 * 7 * PER_DAY
    days = city_series(OPTS, 0, 2).shape[1] // PER_DAY
    assert ds.client_sizes()[2] == 2 * ((days - 7) * PER_DAY - OPTS.window)


def test_kept_cities_and_pooling_reuse_the_same_samples() -> None:
    full = make_traffic_dataset(OPTS, 4, seed=0)
    one = make_traffic_dataset(TrafficOptions(**{**OPTS.__dict__, "cities": (2,)}), 1, seed=0)
    np.testing.assert_array_equal(one.client_train(0)[1], full.client_train(2)[1])
    np.testing.assert_array_equal(one.client_test(0)[1], full.client_test(2)[1])
    pooled = make_traffic_dataset(TrafficOptions(**{**OPTS.__dict__, "pooled": True}), 1, 0)
    assert pooled.client_sizes()[0] == full.client_sizes().sum()
    np.testing.assert_array_equal(pooled.city_test(3)[1], full.client_test(3)[1])
    with pytest.raises(ConfigError, match=r"^population\.num_clients: the traffic set has 4"):
        make_traffic_dataset(OPTS, 3, seed=0)


def test_traffic_options_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^data\.cities: city 5 does not exist"):
        build(TrafficOptions, {"num_cities": 3, "cities": [5]}, "data")
    with pytest.raises(ConfigError, match=r"^data\.min_days: must be > test_days"):
        build(TrafficOptions, {"min_days": 7, "test_days": 7}, "data")
    with pytest.raises(ConfigError, match=r"^data\.interval_min: must divide a day"):
        build(TrafficOptions, {"interval_min": 7}, "data")


def test_partition_summary_of_a_regression_set_has_sizes_and_no_labels(tmp_path) -> None:
    from fedsim.cli.data import write_partition_summary
    from fedsim.data.summary import summarize_partition

    ds = make_traffic_dataset(OPTS, 4, seed=0)
    summary = summarize_partition(ds)
    assert "4 clients, regression targets" in summary.text()
    assert "labels per client" not in summary.text()
    written = write_partition_summary(summary, tmp_path)
    assert [p.name for p in written] == ["partition.csv"]
    frame = pd.read_csv(tmp_path / "partition.csv")
    assert frame["num_samples"].tolist() == ds.client_sizes().tolist()
