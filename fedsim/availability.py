"""Time-varying client availability: a diurnal curve per time zone, or a trace of intervals.

Diurnal (``population.availability = "diurnal"``): client k lives in one of 24 time zones (a
keyed draw on its id, made only when asked). The day (``population.period_s``) is cut into 24
hourly slots; in slot j the client is online with probability

    p_k(h) = p_k * (c + (1 - c) (1 + cos(2 pi (h - peak) / 24)) / 2),   c = 1 / ratio

at its local hour h, p_k = ``online_probability`` (the peak), ratio = ``diurnal_ratio`` (peak
over trough: about 4 in Bonawitz et al. 2019, Fig. 2), peak = ``diurnal_peak_hour``. Each
(slot, client) draw is keyed, so asking about a client costs O(1) and any cohort O(cohort).
A client online in a slot goes offline at the first later slot whose draw says offline.

Trace (``population.availability = "trace"``): ``availability_csv`` lists online intervals
(``client_id,start_s,end_s``, the shape of FedScale's device traces); a client is online inside
one of its intervals, offline elsewhere, and the trace repeats with its span (largest end_s).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.options import ConfigError, read_csv_input
from fedsim.rng import Purpose, uniform

HOURS = 24


class Diurnal:
    """Online probability following a day curve in each client's time zone."""

    def __init__(
        self,
        seed: int,
        peak_of: Callable[[np.ndarray], np.ndarray],
        period_s: float,
        ratio: float,
        peak: float,
    ) -> None:
        # peak_of(ids): the clients' peak online probability, asked only for the clients needed.
        self.seed, self.peak_of = seed, peak_of
        self.slot_s = period_s / HOURS
        self.trough, self.peak = 1.0 / ratio, peak

    def zone(self, ids: np.ndarray) -> np.ndarray:
        return np.floor(uniform(self.seed, 0, Purpose.ZONE, ids) * HOURS)

    def probability(self, ids: np.ndarray, slot: np.ndarray) -> np.ndarray:
        hour = np.mod(slot + self.zone(ids), HOURS)
        wave = (1.0 + np.cos(2 * np.pi * (hour - self.peak) / HOURS)) / 2
        return self.peak_of(ids) * (self.trough + (1.0 - self.trough) * wave)

    def _online_in(self, ids: np.ndarray, slot: np.ndarray) -> np.ndarray:
        u = np.empty(len(ids))
        for s in np.unique(slot):  # one keyed draw per (slot, client)
            m = slot == s
            u[m] = uniform(self.seed, int(s), Purpose.ONLINE, ids[m])
        return u < self.probability(ids, slot)

    def is_online(self, ids: np.ndarray, t: float) -> np.ndarray:
        slot = np.full(len(ids), int(t // self.slot_s), dtype=np.int64)
        return self._online_in(ids, slot)

    def offline_after(self, ids: np.ndarray, t0: float, t1: np.ndarray) -> np.ndarray:
        """First time in (t0, t1] each client is offline (inf if never), online at t0."""
        out = np.full(len(ids), np.inf)
        first = int(t0 // self.slot_s) + 1
        last = np.floor(t1 / self.slot_s).astype(np.int64)
        for s in range(first, int(last.max(initial=first - 1)) + 1):
            ask = np.flatnonzero(np.isinf(out) & (last >= s))
            off = ~self._online_in(ids[ask], np.full(len(ask), s))
            out[ask[off]] = s * self.slot_s
        return out

    def online_fraction(self, num_clients: int) -> float:
        sample = self.peak_of(np.arange(min(num_clients, 10_000)))
        return float(np.mean(sample)) * (1.0 + self.trough) / 2


class Trace:
    """Online intervals per client from a CSV, repeated with the trace's span."""

    def __init__(self, path: Path, num_clients: int) -> None:
        key = "population.availability_csv"
        df = read_csv_input(path, key)
        cols = ("client_id", "start_s", "end_s")
        if list(df.columns) != list(cols):
            raise ConfigError(f"{key}: {path}: columns must be {', '.join(cols)}")
        v = {c: pd.to_numeric(df[c], errors="coerce").to_numpy(np.float64) for c in cols}
        if not all(np.isfinite(x).all() for x in v.values()) or len(df) == 0:
            raise ConfigError(f"{key}: {path}: needs rows of finite numbers")
        ids = v["client_id"].astype(np.int64)
        if np.any(ids != v["client_id"]) or np.any((ids < 0) | (ids >= num_clients)):
            raise ConfigError(f"{key}: {path}: client_id must be integers in [0, {num_clients})")
        if np.any(v["start_s"] < 0) or np.any(v["end_s"] <= v["start_s"]):
            raise ConfigError(f"{key}: {path}: each row needs 0 <= start_s < end_s")
        order = np.lexsort((v["start_s"], ids))
        self.ids, self.start, self.end = ids[order], v["start_s"][order], v["end_s"][order]
        self.span = float(self.end.max())
        self.num_clients = num_clients

    def _interval_end(self, ids: np.ndarray, t: float) -> np.ndarray:
        """End (in trace time) of the interval holding trace time ``t``, or NaN if offline."""
        lo = np.searchsorted(self.ids, ids, side="left")
        hi = np.searchsorted(self.ids, ids, side="right")
        out = np.full(len(ids), np.nan)
        for i, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
            j = a + int(np.searchsorted(self.start[a:b], t, side="right")) - 1
            if j >= a and self.end[j] > t:
                out[i] = self.end[j]
        return out

    def is_online(self, ids: np.ndarray, t: float) -> np.ndarray:
        return ~np.isnan(self._interval_end(ids, t % self.span))

    def offline_after(self, ids: np.ndarray, t0: float, t1: np.ndarray) -> np.ndarray:
        """When each client's current interval ends (inf if it lasts past t1)."""
        base = t0 - t0 % self.span
        end = base + self._interval_end(ids, t0 % self.span)
        return np.where(np.isnan(end) | (end >= t1), np.inf, end)

    def online_fraction(self, num_clients: int) -> float:
        return max(float((self.end - self.start).sum()) / (self.span * self.num_clients), 1e-3)
