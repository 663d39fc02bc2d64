"""The client population: device profiles and availability, looked up for the clients asked.

Two ways to hold it, one interface (:meth:`Population.attribute`, :meth:`Population.tier_of`):
``population.draws = "columns"`` draws every attribute once for all N clients as a columnar
numpy array (constants are zero-stride views, so they cost nothing; every drawn attribute costs
4 bytes a client, the tier 1); ``"keyed"`` stores nothing per client and computes a client's
attributes from (seed, client id) when a round asks (:mod:`fedsim.keyed_profiles`), so a
population of a billion costs what its cohort costs. Explicit per-client inputs (a profiles CSV
with a ``client_id`` column, an availability trace) are columns either way.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim import keyed_profiles as keyed
from fedsim.availability import Diurnal, Trace
from fedsim.config import F32_MAX, F32_TINY, MAX_TIERS, Dist, PopulationConfig
from fedsim.options import ConfigError, read_csv_input
from fedsim.rng import Purpose, generator, uniform

# Attribute name -> column index of its draws (the key of its random stream).
_ATTRIBUTES = {
    "speed": 0,
    "download_bandwidth": 1,
    "upload_bandwidth": 2,
    "dropout_rate": 3,
    "online_probability": 4,
    "on_fraction": 5,
}
_REQUIRED_CSV = ("speed", "download_bandwidth", "upload_bandwidth")
#: Up to this many clients, a selection short of online candidates scans the population (as
#: it always did); above it, it draws larger candidate sets, up to :data:`MAX_CANDIDATES`.
SCAN_LIMIT = 1 << 24
MAX_CANDIDATES = 1 << 24


class Population:
    """N clients' device profiles: speed (samples/s), bandwidth (bytes/s), dropout, availability."""

    def __init__(self, cfg: PopulationConfig, seed: int, base_dir: Path | None = None) -> None:
        self.cfg = cfg
        self.seed = seed
        self.num_clients = n = cfg.num_clients
        self.keyed = cfg.draws == "keyed"
        self.tier_names: tuple[str, ...] = tuple(t.name for t in cfg.tiers)
        self._tier_weights = np.array([t.weight for t in cfg.tiers], dtype=np.float64)
        # A profiles CSV of device types (a weight column): the weights and each type's values.
        self._type_weights: np.ndarray | None = None
        self._type_values: dict[str, np.ndarray] = {}
        # Stored per-client arrays by name (attributes, "tier", "phase"); absent = keyed draw.
        self.columns: dict[str, np.ndarray] = {}
        if not self.keyed:
            self._draw_columns()
        if cfg.profiles_csv:
            self._load_csv(_resolve(cfg.profiles_csv, base_dir))
        self.curve: Diurnal | Trace | None = None
        if cfg.availability == "diurnal":
            self.curve = Diurnal(
                seed,
                self.online_probability_of,
                cfg.period_s,
                cfg.diurnal_ratio,
                cfg.diurnal_peak_hour,
            )
        elif cfg.availability == "trace":
            self.curve = Trace(_resolve(cfg.availability_csv, base_dir), n)

    def __getattr__(self, name: str) -> np.ndarray:
        # The stored columns read as attributes (pop.speed, pop.tier) in the columnar mode.
        columns = self.__dict__.get("columns", {})
        if name in columns:
            return columns[name]
        raise AttributeError(
            f"{type(self).__name__!r} has no attribute {name!r}"
            + (" (a keyed population stores no columns: use attribute(name, ids))"
               if name in (*_ATTRIBUTES, "tier", "phase") else "")
        )  # fmt: skip

    def _draw_columns(self) -> None:
        """Every attribute for all N clients, one vectorised draw each (``draws = "columns"``)."""
        n, cfg = self.num_clients, self.cfg
        if cfg.tiers:
            w = self._tier_weights
            rng = generator(self.seed, Purpose.PROFILE, keyed.TIER_KEY)
            self.columns["tier"] = rng.choice(len(w), size=n, p=w / w.sum()).astype(np.uint8)
        else:
            self.columns["tier"] = np.broadcast_to(np.uint8(0), (n,))
        for name, index in _ATTRIBUTES.items():
            self.columns[name] = self._draw(getattr(cfg, name), index)
        self.columns["phase"] = (
            generator(self.seed, Purpose.PHASE).random(n, dtype=np.float32)
            if cfg.availability == "periodic"
            else np.broadcast_to(np.float32(0), (n,))
        )

    def _draw(self, dist: Dist, index: int) -> np.ndarray:
        n = self.num_clients
        if dist.dist == "constant":
            return np.broadcast_to(np.float32(dist.value), (n,))
        rng = generator(self.seed, Purpose.PROFILE, index)
        if dist.dist == "uniform":
            return rng.uniform(dist.low, dist.high, n).astype(np.float32)
        if dist.dist == "lognormal":
            z = rng.standard_normal(n, dtype=np.float32)
            return (dist.median * np.exp(dist.sigma * z)).astype(np.float32)
        values = np.asarray(dist.values, dtype=np.float32)
        return values[self.columns["tier"]]

    def tier_of(self, ids: np.ndarray) -> np.ndarray:
        """Each client's device tier (uint8 index into ``tier_names``)."""
        ids = np.asarray(ids, dtype=np.int64)
        if "tier" in self.columns:
            return self.columns["tier"][ids]
        if self._type_weights is not None:
            return keyed.categorical(self.seed, keyed.DEVICE_TYPE_KEY, self._type_weights, ids)
        return self._config_tier_of(ids)

    def _config_tier_of(self, ids: np.ndarray) -> np.ndarray:
        if not len(self._tier_weights):
            return np.zeros(len(ids), dtype=np.uint8)
        return keyed.categorical(self.seed, keyed.TIER_KEY, self._tier_weights, ids)

    def attribute(self, name: str, ids: np.ndarray) -> np.ndarray:
        """Attribute ``name`` (a key of ``[population]``, float32) of the clients ``ids``."""
        ids = np.asarray(ids, dtype=np.int64)
        column = self.columns.get(name)
        if column is not None:
            return column[ids]
        if name in self._type_values:
            return self._type_values[name][self.tier_of(ids)]
        dist = getattr(self.cfg, name)
        return keyed.draw(dist, self.seed, _ATTRIBUTES[name], ids, self._config_tier_of)

    def online_probability_of(self, ids: np.ndarray) -> np.ndarray:
        """The clients' online probability (the diurnal curve's peak)."""
        return self.attribute("online_probability", ids)

    def phase_of(self, ids: np.ndarray) -> np.ndarray:
        """The clients' phase in the periodic availability cycle, in [0, 1)."""
        column = self.columns.get("phase")
        if column is not None:
            return column[np.asarray(ids, dtype=np.int64)]
        return keyed.phase(self.seed, ids)

    def _load_csv(self, path: Path) -> None:
        key = "population.profiles_csv"
        df = read_csv_input(path, key)
        missing = [c for c in _REQUIRED_CSV if c not in df.columns]
        if missing:
            raise ConfigError(
                f"{key}: {path}: missing column {missing[0]!r} (needs {', '.join(_REQUIRED_CSV)}"
                ", plus client_id for one row per client or weight for one row per device type)"
            )
        allowed = {*_ATTRIBUTES, "client_id", "weight", "tier"}
        unknown = [c for c in df.columns if c not in allowed]
        if unknown:
            raise ConfigError(f"{key}: {path}: unknown column {unknown[0]!r}")
        if ("client_id" in df.columns) == ("weight" in df.columns):
            raise ConfigError(
                f"{key}: {path}: needs exactly one of the columns client_id (one row per client)"
                " or weight (one row per device type)"
            )
        values = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in df}
        for col, v in values.items():
            if col != "tier" and not np.all(np.isfinite(v)):
                raise ConfigError(f"{key}: {path}: column {col!r} has a non-numeric or empty value")
        for col in _ATTRIBUTES:
            if col in values:
                bad = _out_of_range(col, values[col])
                if bad is not None:
                    raise ConfigError(f"{key}: {path}: column {col!r}: {bad}")
        n = self.num_clients
        if "client_id" in df.columns:
            ids = values["client_id"].astype(np.int64)
            if len(ids) != n or not np.array_equal(np.sort(ids), np.arange(n)):
                raise ConfigError(
                    f"{key}: {path}: client_id must list each of the {n} clients exactly once"
                )
            row_of_client = np.empty(n, dtype=np.int64)
            row_of_client[ids] = np.arange(n)
            if "tier" in df.columns:
                names, codes = np.unique(df["tier"].astype(str).to_numpy(), return_inverse=True)
                if len(names) > MAX_TIERS:
                    raise ConfigError(f"{key}: {path}: at most {MAX_TIERS} tier names")
                self.tier_names = tuple(names)
                self.columns["tier"] = codes[row_of_client].astype(np.uint8)
        else:
            w = values["weight"]
            with np.errstate(over="ignore"):
                total = w.sum()
            if np.any(w <= 0) or not np.isfinite(total):
                raise ConfigError(f"{key}: {path}: column 'weight' must be > 0, with a finite sum")
            if len(w) > MAX_TIERS:
                raise ConfigError(f"{key}: {path}: at most {MAX_TIERS} device types (rows)")
            names = df["tier"].astype(str) if "tier" in df.columns else df.index.astype(str)
            self.tier_names = tuple(names)
            if self.keyed:
                self._type_weights = w
                self._type_values = {
                    c: values[c].astype(np.float32) for c in _ATTRIBUTES if c in values
                }
                return
            rng = generator(self.seed, Purpose.PROFILE, keyed.DEVICE_TYPE_KEY)
            row_of_client = rng.choice(len(w), size=n, p=w / w.sum())
            self.columns["tier"] = row_of_client.astype(np.uint8)
        for col in _ATTRIBUTES:
            if col in values:
                self.columns[col] = values[col].astype(np.float32)[row_of_client]

    @property
    def nbytes(self) -> int:
        """Memory actually held per client (zero-stride constants cost nothing)."""
        cols = self.columns.values()
        return sum(c.nbytes if c.strides != (0,) else c.itemsize for c in cols)

    def is_online(self, ids: np.ndarray, round_: int, t: float) -> np.ndarray:
        """Which of the clients ``ids`` are available at round ``round_``, simulated time ``t``."""
        mode = self.cfg.availability
        if mode == "always":
            return np.ones(len(ids), dtype=bool)
        if mode == "bernoulli":
            u = uniform(self.seed, round_, Purpose.ONLINE, ids)
            return u < self.attribute("online_probability", ids)
        if self.curve is not None:
            return self.curve.is_online(np.asarray(ids, dtype=np.int64), t)
        pos = np.mod(t / self.cfg.period_s + self.phase_of(ids), 1.0)
        return pos < self.attribute("on_fraction", ids)

    def offline_after(self, ids: np.ndarray, t0: float, t1: np.ndarray) -> np.ndarray:
        """When each client, online at ``t0``, first goes offline before ``t1`` (inf if not).

        Bernoulli availability is drawn per round, with no time inside it: never.
        """
        ids = np.asarray(ids, dtype=np.int64)
        if self.curve is not None:
            return self.curve.offline_after(ids, t0, t1)
        if self.cfg.availability != "periodic":
            return np.full(len(ids), np.inf)
        period = self.cfg.period_s
        pos = np.mod(t0 / period + self.phase_of(ids), 1.0)
        off = t0 + (self.attribute("on_fraction", ids) - pos) * period
        return np.where(off < t1, off, np.inf)

    def select(self, round_: int, t: float, count: int) -> np.ndarray:
        """Up to ``count`` distinct online clients, uniformly at random, sorted by id.

        Costs O(count / online fraction): candidate ids are drawn without replacement (Floyd's
        algorithm inside numpy for a small sample of a large range) and the first online ones
        kept; no array of the population's size is made above :data:`SCAN_LIMIT` clients.
        """
        n = self.num_clients
        count = min(count, n)
        rng = generator(self.seed, Purpose.SELECT, round_)
        if self.cfg.availability == "always":
            return np.sort(rng.choice(n, size=count, replace=False))
        p = self._online_fraction_estimate()
        want = min(n, int(math.ceil(count / max(p, 1e-3) * 1.25)) + 64)
        cand = rng.choice(n, size=want, replace=False)
        online = cand[self.is_online(cand, round_, t)]
        if len(online) < count and want < n:
            if n <= SCAN_LIMIT:
                everyone = np.arange(n)
                online = rng.permutation(everyone[self.is_online(everyone, round_, t)])
            else:
                online = self._select_wider(round_, t, count, want)
        return np.sort(online[:count])

    def _select_wider(self, round_: int, t: float, count: int, want: int) -> np.ndarray:
        """Online clients among ever larger fresh candidate sets (each uniform and distinct).

        Fewer than ``count`` only when :data:`MAX_CANDIDATES` random clients hold fewer online.
        """
        attempt, online = 0, np.empty(0, dtype=np.int64)
        while len(online) < count and want < MAX_CANDIDATES:
            attempt += 1
            want = min(4 * want, MAX_CANDIDATES)
            rng = generator(self.seed, Purpose.SELECT, round_, attempt)
            cand = rng.choice(self.num_clients, size=want, replace=False)
            online = cand[self.is_online(cand, round_, t)]
        return online

    def select_by_samples(
        self, round_: int, t: float, count: int, sizes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``count`` draws with replacement among online clients, probability n_k / n.

        Returns the distinct clients drawn, sorted by id, and how often each was drawn. The
        probabilities need every client's sample count, so this costs the population's size.
        """
        n = self.num_clients
        everyone = np.arange(n)
        if self.cfg.availability != "always":
            everyone = everyone[self.is_online(everyone, round_, t)]
        weight = np.asarray(sizes, dtype=np.float64)[everyone]
        if len(everyone) == 0 or weight.sum() <= 0:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        rng = generator(self.seed, Purpose.SELECT_BY_SAMPLES, round_)
        drawn = rng.choice(everyone, size=count, replace=True, p=weight / weight.sum())
        ids, draws = np.unique(drawn, return_counts=True)
        return ids.astype(np.int64), draws.astype(np.int64)

    def _online_fraction_estimate(self) -> float:
        first = np.arange(min(self.num_clients, 10_000))
        if self.cfg.availability == "bernoulli":
            return float(np.mean(self.attribute("online_probability", first)))
        if self.curve is not None:
            return self.curve.online_fraction(self.num_clients)
        return float(np.mean(self.attribute("on_fraction", first)))


def _out_of_range(col: str, v: np.ndarray) -> str | None:
    positive_cols = ("speed", "download_bandwidth", "upload_bandwidth", "on_fraction")
    if col in positive_cols and np.any(v <= 0):
        return "values must be > 0"
    if np.any(np.abs(v) > F32_MAX):
        return f"values must be at most {F32_MAX:.4g} (stored as float32)"
    if col in positive_cols and np.any(v < F32_TINY):
        return f"values must be >= {F32_TINY:.4g} (stored as float32, smaller is 0)"
    if col == "dropout_rate" and np.any((v < 0) | (v >= 1)):
        return "values must be in [0, 1)"
    if col in ("online_probability", "on_fraction") and np.any((v <= 0) | (v > 1)):
        return "values must be in (0, 1]"
    return None


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and base_dir is not None and not p.exists():
        p = base_dir / p
    return p
