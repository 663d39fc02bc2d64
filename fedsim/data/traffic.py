"""``traffic``: generated road-sensor flow series of several cities, one client per city.

No public traffic-flow data set can be read offline here (PeMS, METR-LA and the like must be
downloaded), so the series are generated, with the structure such data show: a daily cycle
with a morning and an evening rush hour, a weekly cycle (weekends lower, with one midday
hump), city-specific patterns and sensor-level scale, and autocorrelated noise.

City c (every draw keyed by (seed, c)): a recording of ``days`` drawn uniformly from
[min_days, max_days] (the last ``test_days`` held out); a morning peak at N(8, 0.75) h and an
evening peak at N(17.5, 0.75) h of widths U(0.8, 2) h and heights U(0.5, 1.5) and U(0.5, 1.5)
above a night floor of U(0.1, 0.3) and a daytime plateau of U(0.3, 0.6) (06:00-20:00,
smoothed); weekend traffic U(0.4, 0.8) times the weekday plateau, peaking at 13:00; noise
AR(1) with coefficient 0.7 and a city-specific relative standard deviation U(0.03, 0.12).
Sensor s of the city scales that shape by lognormal(0, 0.3) and shifts it by N(0, 0.25) h.

Samples: at every interval t, the features are the last ``window`` flows of one sensor
(divided by that sensor's mean training flow, so cities of different size share a scale),
sin and cos of the time of day, and a weekend flag; the target is the next interval's flow on
the same scale. MAE and RMSE are therefore fractions of a sensor's mean flow. A sample belongs
to the test set when its target lies in the city's last ``test_days`` days.

``cities`` keeps only the listed cities (local-only training on one city: ``cities = [c]``);
``pooled = true`` puts every kept city's samples into one client (centralised training).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, FederatedDataset
from fedsim.data.partition.common import partition_from_owner
from fedsim.options import ConfigError, at_least, check, each, non_negative, positive
from fedsim.registry import DATASETS
from fedsim.rng import Purpose, generator

__all__ = ["TrafficDataset", "TrafficOptions", "city_series", "make_traffic_dataset"]

# Sub-key under Purpose.DATA, apart from the synthetic set's device keys and the tabular split.
_TRAFFIC_STREAM = 2**42
_AR = 0.7


@dataclass(frozen=True)
class TrafficOptions:
    """Options of the ``traffic`` dataset (see the module docstring)."""

    num_cities: int = field(default=8, metadata=check(positive))
    sensors_per_city: int = field(default=4, metadata=check(positive))
    interval_min: int = field(default=30, metadata=check(positive))
    min_days: int = field(default=14, metadata=check(positive))
    max_days: int = field(default=42, metadata=check(positive))
    test_days: int = field(default=7, metadata=check(positive))
    window: int = field(default=12, metadata=check(positive))
    cities: tuple[int, ...] = field(default=(), metadata=check(each(non_negative)))
    pooled: bool = False
    mean_flow: float = field(default=300.0, metadata=check(at_least(1.0)))

    def validate(self) -> str | None:
        if self.max_days < self.min_days:
            return f"max_days: must be >= min_days ({self.min_days}), got {self.max_days}"
        if self.min_days <= self.test_days:
            return f"min_days: must be > test_days ({self.test_days}), got {self.min_days}"
        if (24 * 60) % self.interval_min:
            return f"interval_min: must divide a day (1440 min), got {self.interval_min}"
        for c in self.cities:
            if c >= self.num_cities:
                return f"cities: city {c} does not exist (num_cities = {self.num_cities})"
        if len(set(self.cities)) != len(self.cities):
            return "cities: lists a city twice"
        return None


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump on the 24 h circle."""
    d = (hours - centre + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / width) ** 2)


def city_series(options: TrafficOptions, seed: int, city: int) -> np.ndarray:
    """Flows of every sensor of one city, float64 of shape (sensors, days * intervals per day)."""
    rng = generator(seed, Purpose.DATA, _TRAFFIC_STREAM, city)
    per_day = 24 * 60 // options.interval_min
    days = int(rng.integers(options.min_days, options.max_days + 1))
    am, pm = rng.normal(8.0, 0.75), rng.normal(17.5, 0.75)
    am_w, pm_w = rng.uniform(0.8, 2.0, 2)
    am_h, pm_h = rng.uniform(0.5, 1.5, 2)
    floor, plateau = rng.uniform(0.1, 0.3), rng.uniform(0.3, 0.6)
    weekend = rng.uniform(0.4, 0.8)
    noise_sd = rng.uniform(0.03, 0.12)
    s = options.sensors_per_city
    scale = rng.lognormal(0.0, 0.3, s)
    shift = rng.normal(0.0, 0.25, s)
    t = np.arange(days * per_day)
    hours = (t % per_day) * (24.0 / per_day)
    weekday = (t // per_day) % 7 < 5
    flows = np.empty((s, len(t)))
    for k in range(s):
        h = hours - shift[k]
        day_plateau = plateau * (_bump(h, 13.0, 4.5) ** 0.5)
        workday = floor + day_plateau + am_h * _bump(h, am, am_w) + pm_h * _bump(h, pm, pm_w)
        rest = floor + weekend * (plateau + 0.5) * _bump(h, 13.0, 3.5)
        shape = np.where(weekday, workday, rest)
        eps = rng.normal(0.0, noise_sd * np.sqrt(1 - _AR**2), len(t))
        noise = np.empty(len(t))
        noise[0] = rng.normal(0.0, noise_sd)
        for i in range(1, len(t)):
            noise[i] = _AR * noise[i - 1] + eps[i]
        flows[k] = options.mean_flow * scale[k] * shape * np.maximum(1.0 + noise, 0.0)
    return flows


def _city_samples(
    options: TrafficOptions, seed: int, city: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, is_test) of every sensor's windows in one city, sensors one after the other."""
    flows = city_series(options, seed, city)
    per_day = 24 * 60 // options.interval_min
    n_t = flows.shape[1]
    first_test = n_t - options.test_days * per_day
    w = options.window
    targets = np.arange(w, n_t)
    hours = (targets % per_day) * (2 * np.pi / per_day)
    weekend = ((targets // per_day) % 7 >= 5).astype(np.float64)
    calendar = np.stack([np.sin(hours), np.cos(hours), weekend], axis=1)
    lags = targets[:, None] - np.arange(w, 0, -1)[None, :]
    xs, ys = [], []
    for series in flows:
        scaled = series / series[:first_test].mean()
        xs.append(np.concatenate([scaled[lags], calendar], axis=1))
        ys.append(scaled[targets])
    is_test = np.tile(targets >= first_test, len(flows))
    return np.concatenate(xs), np.concatenate(ys), is_test


class TrafficDataset(ArrayDataset):
    """One client per kept city (or one pooled client), with each city's held-out days.

    The test set holds the kept cities' held-out samples one city after the other:
    ``city_offsets[i]:city_offsets[i + 1]`` are those of ``cities[i]``.
    """

    def __init__(
        self, central: CentralData, train_sizes: np.ndarray, test_sizes: np.ndarray,
        cities: list[int], pooled: bool,
    ) -> None:  # fmt: skip
        clients = 1 if pooled else len(cities)
        owner = np.repeat(np.arange(len(cities)) if not pooled else np.zeros(len(cities), int),
                          train_sizes)  # fmt: skip
        super().__init__(central, partition_from_owner(owner, clients))
        self.cities = np.asarray(cities, dtype=np.int64)
        self.pooled = pooled
        self.city_offsets = np.concatenate([[0], np.cumsum(test_sizes)]).astype(np.int64)

    def city_test(self, position: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out days of the ``position``-th kept city (``cities[position]``)."""
        lo, hi = self.city_offsets[position], self.city_offsets[position + 1]
        return self.x_test[lo:hi], self.y_test[lo:hi]

    def client_test(self, client_id: int) -> tuple[np.ndarray, np.ndarray]:
        """The held-out days of a client: its city's, or every kept city's when pooled."""
        if self.pooled:
            return self.test_set()
        return self.city_test(client_id)


def make_traffic_dataset(options: TrafficOptions, num_clients: int, seed: int) -> TrafficDataset:
    """Generate the kept cities and split them into one client per city (or one pooled)."""
    cities = list(options.cities) or list(range(options.num_cities))
    want = 1 if options.pooled else len(cities)
    if num_clients != want:
        how = "pooled into one client" if options.pooled else "one client per kept city"
        raise ConfigError(
            f"population.num_clients: the traffic set has {want} clients ({how}), got {num_clients}"
        )
    parts = [_city_samples(options, seed, c) for c in cities]
    central = CentralData(
        np.concatenate([x[~m] for x, _, m in parts]),
        np.concatenate([y[~m] for _, y, m in parts]).astype(np.float32),
        np.concatenate([x[m] for x, _, m in parts]),
        np.concatenate([y[m] for _, y, m in parts]).astype(np.float32),
    )
    train_sizes = np.array([int((~m).sum()) for *_, m in parts])
    test_sizes = np.array([int(m.sum()) for *_, m in parts])
    return TrafficDataset(central, train_sizes, test_sizes, cities, options.pooled)


@DATASETS.register("traffic", TrafficOptions)
def make_traffic(options: TrafficOptions, *, num_clients: int, seed: int) -> FederatedDataset:
    """Generated per-city traffic-flow forecasting, a regression (see the module docstring)."""
    return make_traffic_dataset(options, num_clients, seed)
