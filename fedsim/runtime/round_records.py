"""What one synchronous round hands between its stages, what it costs and what it records.

The stages of :class:`fedsim.runtime.synchronous.Server` pass a :class:`RoundData`; the
functions here turn it into the round's row of rounds.csv and its rows of clients.csv.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.clock import COMPLETED, DROPPED, OUTCOME_NAMES, STRAGGLER, RoundPlan
from fedsim.faults import ClientFaults
from fedsim.population import Population
from fedsim.privacy.rounds import ClientStep, SecAggCosts, ServerPrivacy


@dataclass
class RoundResult:
    """One round's row of rounds.csv and its rows of clients.csv (columnar).

    ``phases`` holds the server's wall time per phase of the round (s) when
    ``runtime.profile`` is on: it reaches the driver with the records, in the same call.
    """

    record: dict[str, Any]
    clients: dict[str, np.ndarray]
    phases: dict[str, float] | None = None


#: The phases of a round the server times (``runtime.profile``), in the order they run.
SERVER_PHASES = ("select_plan", "broadcast", "train", "aggregate", "evaluate", "record")


class PhaseTimer:
    """Adds the wall time since the previous mark to a phase; does nothing when off."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.times: dict[str, float] = dict.fromkeys(SERVER_PHASES, 0.0) if on else {}
        self._last = time.perf_counter() if on else 0.0

    def mark(self, phase: str) -> None:
        """The time since the previous mark (or the start) was spent in ``phase``."""
        if self.on:
            now = time.perf_counter()
            self.times[phase] += now - self._last
            self._last = now

    def result(self) -> dict[str, float] | None:
        return self.times if self.on else None


@dataclass
class RoundData:
    """What the stages of one round hand each other."""

    r: int
    ids: np.ndarray
    plan: RoundPlan
    draws: np.ndarray | None = None  # times each client was drawn (sampling with replacement)
    step: ClientStep | None = None
    costs: SecAggCosts | None = None
    client_loss: np.ndarray = field(default_factory=lambda: np.empty(0))
    rejected: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    train_loss: float = math.nan
    failed: bool = False
    aborted: bool = False
    abort_reason: str = ""
    unclipped: int = 0
    clip_norm: float = math.nan  # the DP clipping norm the round's clients used
    w_sent: np.ndarray | None = None  # the model as the clients received it
    times: dict[str, float] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)  # RoundContext fields overridden


def round_costs(rnd: RoundData) -> tuple[float, int, int]:
    """(duration, bytes down, bytes up): the clock's plan plus secure aggregation's extra.

    The clock plans the plain round; secure aggregation's three extra round trips and
    protocol messages are added after planning (who finishes is decided without them).
    """
    plan, c = rnd.plan, rnd.costs
    if c is None:
        return plan.duration_s, plan.bytes_down, plan.bytes_up
    return (
        plan.duration_s + c.extra_s,
        plan.bytes_down + int(c.down.sum()),
        plan.bytes_up + int(c.up.sum()),
    )


def round_record(
    rnd: RoundData,
    totals: dict[str, float],
    duration_s: float,
    down: int,
    up: int,
    evals: dict[str, float],
    privacy: ServerPrivacy | None,
) -> dict[str, Any]:
    """The round's row of rounds.csv.

    ``totals`` holds the server's running ``sim_time_s``, ``cum_bytes_down`` and
    ``cum_bytes_up`` after the round.
    """
    plan = rnd.plan
    dp = privacy is not None and privacy.dp
    return {
        "round": rnd.r,
        "sim_time_s": totals["sim_time_s"],
        "round_duration_s": duration_s,
        "selected": len(rnd.ids),
        "completed": plan.count(COMPLETED),
        "stragglers": plan.count(STRAGGLER),
        "dropped": plan.count(DROPPED),
        "reporting": int(np.count_nonzero(plan.contributes)),
        "rejected": int(np.count_nonzero(rnd.rejected)),
        "bytes_down": down,
        "bytes_up": up,
        "cum_bytes_down": totals["cum_bytes_down"],
        "cum_bytes_up": totals["cum_bytes_up"],
        "cum_bytes": totals["cum_bytes_down"] + totals["cum_bytes_up"],
        "train_loss": rnd.train_loss,
        **evals,
        "failed": rnd.failed,
        "aborted": rnd.aborted,
        "abort_reason": rnd.abort_reason,
        "epsilon": privacy.epsilon(rnd.r) if dp else math.nan,
        "clip_norm": rnd.clip_norm,
        **rnd.times,
    }


def tier_names(population: Population, ids: np.ndarray) -> np.ndarray:
    """Each client's device tier name (clients.csv's ``tier``)."""
    names = np.asarray(population.tier_names or ("all",), dtype=object)
    return names[np.minimum(population.tier_of(ids), len(names) - 1)]


def client_records(
    rnd: RoundData,
    population: Population,
    faults: ClientFaults,
    upload_bytes: int,
    secure_aggregation: bool,
) -> dict[str, np.ndarray]:
    """The round's rows of clients.csv (columnar), one per selected client."""
    plan, ids = rnd.plan, rnd.ids
    clients = {
        "round": np.full(len(ids), rnd.r, dtype=np.int64),
        "client_id": ids,
        "tier": tier_names(population, ids),
        "outcome": OUTCOME_NAMES[plan.outcome],
        "num_samples": plan.num_samples,
        "epochs_done": plan.epochs_done,
        "download_s": plan.download_s,
        "compute_s": plan.compute_s,
        "upload_s": plan.upload_s,
        "train_loss": rnd.client_loss,
        "rejected": rnd.rejected,
        "bytes_up": np.where(plan.epochs_done > 0, upload_bytes, 0).astype(np.int64),
        "byzantine": faults.byzantine[ids],
        "noisy": faults.noisy[ids],
    }
    if secure_aggregation:
        none = np.zeros(len(ids), dtype=np.int64)
        clients["protocol_bytes_up"] = rnd.costs.up if rnd.costs is not None else none
        clients["protocol_bytes_down"] = rnd.costs.down if rnd.costs is not None else none
    return clients
