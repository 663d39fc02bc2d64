"""Client timelines in simulated time: who finishes, who straggles, who drops, and when.

Everything here is decided before any training, from device profiles, workload and model size,
so only the work that reaches the server is ever computed.

For each selected client k:
    download_s = model_bytes / download_bandwidth_k
    epoch_s    = num_samples_k / speed_k * jitter      (jitter = exp(compute_jitter * N(0, 1)))
    compute_s  = local_epochs * epoch_s
    upload_s   = update_bytes / upload_bandwidth_k
    finish     = download_s + compute_s + upload_s
A client drops with probability dropout_rate_k at a uniformly random point of its timeline: it
used its download and sends nothing. Among the others, the first K (clients_per_round) to finish
by the deadline complete (over-selection keeps the first K, ties broken by client id). The
round ends when the K-th completes, or at the deadline if fewer than K finish by then (with no
deadline: when the last selected client finished or dropped). Clients that did not complete
are stragglers; under ``straggler_policy = "partial"`` and a round that ran to its deadline,
each straggler contributes the whole epochs it finished by the deadline (at least one, and at
most as many as there are free places among the K).

The alternative straggler model of Li et al. 2020 (FedProx, section 5.2), for
``straggler_fraction > 0``: in every round that fraction of the selected clients (chosen by a
keyed draw among those that did not drop) are stragglers that can run only a uniformly random
whole number of epochs in [1, E); ``"drop"`` discards them (FedAvg), ``"partial"`` keeps their
work (FedProx). The others complete; the round lasts until the slowest contributor finished
(or the last dropped client failed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsim.population import Population
from fedsim.rng import Purpose, normal, uniform

COMPLETED, STRAGGLER, DROPPED = 0, 1, 2
OUTCOME_NAMES = np.array(["completed", "straggler", "dropped"])


@dataclass(frozen=True)
class RoundPlan:
    """The simulated outcome of one round for its selected clients (arrays aligned with ids)."""

    ids: np.ndarray  # int64, sorted
    num_samples: np.ndarray  # int64
    outcome: np.ndarray  # int8: COMPLETED | STRAGGLER | DROPPED
    epochs_done: np.ndarray  # int64: epochs whose work reaches the server (0 if none)
    download_s: np.ndarray
    compute_s: np.ndarray  # the whole planned local work
    upload_s: np.ndarray
    duration_s: float
    bytes_down: int
    bytes_up: int

    @property
    def contributes(self) -> np.ndarray:
        return self.epochs_done > 0

    def count(self, outcome: int) -> int:
        return int(np.count_nonzero(self.outcome == outcome))


@dataclass(frozen=True)
class Timelines:
    """Clients' timelines from the moment they start (arrays aligned with their ids)."""

    download_s: np.ndarray
    epoch_s: np.ndarray
    upload_s: np.ndarray
    dropped: np.ndarray  # bool: fails at drop_time and sends nothing
    drop_time: np.ndarray  # seconds after the start (meaningful where dropped)

    @property
    def compute_s(self) -> np.ndarray:
        return self.local_epochs * self.epoch_s

    @property
    def finish(self) -> np.ndarray:
        return self.download_s + self.compute_s + self.upload_s

    local_epochs: int = 1


def timelines(
    population: Population,
    ids: np.ndarray,
    num_samples: np.ndarray,
    key: int,
    local_epochs: int,
    model_bytes: int,
    update_bytes: int,
) -> Timelines:
    """Every client's download, compute and upload time and whether it drops (keyed by ``key``).

    ``key`` is the round in synchronous mode and the client's start number in asynchronous mode:
    each draw is a function of (seed, key, client id) alone.
    """
    seed, attribute = population.seed, population.attribute
    download_s = model_bytes / attribute("download_bandwidth", ids).astype(np.float64)
    upload_s = update_bytes / attribute("upload_bandwidth", ids).astype(np.float64)
    epoch_s = num_samples / attribute("speed", ids).astype(np.float64)
    jitter = population.cfg.compute_jitter
    if jitter > 0:
        epoch_s = epoch_s * np.exp(jitter * normal(seed, key, Purpose.JITTER, ids))
    finish = download_s + local_epochs * epoch_s + upload_s
    dropped = uniform(seed, key, Purpose.DROPOUT, ids) < attribute("dropout_rate", ids)
    drop_time = uniform(seed, key, Purpose.DROP_POINT, ids) * finish
    return Timelines(download_s, epoch_s, upload_s, dropped, drop_time, local_epochs)


def plan_round(
    population: Population,
    ids: np.ndarray,
    num_samples: np.ndarray,
    round_: int,
    *,
    clients_per_round: int,
    local_epochs: int,
    deadline_s: float,
    straggler_policy: str,
    model_bytes: int,
    update_bytes: int,
    straggler_fraction: float = 0.0,
    draws: np.ndarray | None = None,
) -> RoundPlan:
    """Decide every selected client's timeline and outcome for one round.

    ``draws`` (sampling with replacement): how often each client was drawn; the straggler
    fraction then counts draws (a client drawn twice is two of the cohort's places).
    """
    seed = population.seed
    ids = np.asarray(ids, dtype=np.int64)
    n = np.asarray(num_samples, dtype=np.int64)
    tl = timelines(population, ids, n, round_, local_epochs, model_bytes, update_bytes)
    download_s, epoch_s, upload_s = tl.download_s, tl.epoch_s, tl.upload_s
    finish, dropped, drop_time = tl.finish, tl.dropped, tl.drop_time

    if straggler_fraction > 0:
        return _plan_fraction_stragglers(
            seed, round_, ids, n, tl, clients_per_round, local_epochs, straggler_policy,
            straggler_fraction, model_bytes, update_bytes, draws,
        )  # fmt: skip

    outcome = np.full(len(ids), STRAGGLER, dtype=np.int8)
    outcome[dropped] = DROPPED
    in_time = np.flatnonzero(~dropped & (finish <= deadline_s))
    order = in_time[np.lexsort((ids[in_time], finish[in_time]))]
    done = order[:clients_per_round]
    outcome[done] = COMPLETED
    epochs_done = np.zeros(len(ids), dtype=np.int64)
    epochs_done[done] = local_epochs

    if len(done) == clients_per_round:
        duration = float(finish[done[-1]]) if len(done) else 0.0
    elif math.isfinite(deadline_s):
        duration = float(deadline_s)
        if straggler_policy == "partial":
            _keep_partial_work(
                outcome,
                epochs_done,
                (deadline_s - download_s - upload_s) / epoch_s,
                ids,
                local_epochs,
                clients_per_round - len(done),
            )
    else:
        ends = np.where(dropped, drop_time, finish)
        duration = float(ends.max()) if len(ends) else 0.0

    return _plan(ids, n, tl, outcome, epochs_done, duration, (model_bytes, update_bytes))


def _keep_partial_work(
    outcome: np.ndarray,
    epochs_done: np.ndarray,
    epochs_fit: np.ndarray,
    ids: np.ndarray,
    local_epochs: int,
    places: int,
) -> None:
    """FedProx-style partial work: stragglers send the whole epochs they finished in time."""
    stragglers = np.flatnonzero(outcome == STRAGGLER)
    if places <= 0 or len(stragglers) == 0:
        return
    e = np.clip(np.floor(epochs_fit[stragglers]), 1, local_epochs).astype(np.int64)
    # Most work first, then by client id: a deterministic choice of who fills the free places.
    keep = np.lexsort((ids[stragglers], -e))[:places]
    epochs_done[stragglers[keep]] = e[keep]


def _plan_fraction_stragglers(
    seed: int,
    round_: int,
    ids: np.ndarray,
    n: np.ndarray,
    tl: Timelines,
    clients_per_round: int,
    local_epochs: int,
    straggler_policy: str,
    straggler_fraction: float,
    model_bytes: int,
    update_bytes: int,
    draws: np.ndarray | None = None,
) -> RoundPlan:
    """Li et al. 2020's systems heterogeneity: a fixed fraction of the cohort straggles."""
    download_s, epoch_s, upload_s = tl.download_s, tl.epoch_s, tl.upload_s
    dropped, drop_time = tl.dropped, tl.drop_time
    alive = np.flatnonzero(~dropped)
    pick = uniform(seed, round_, Purpose.STRAGGLER, ids[alive])
    order = alive[np.lexsort((ids[alive], pick))]
    if draws is None:
        num_stragglers = min(len(alive), int(round(straggler_fraction * len(ids))))
        straggling = order[:num_stragglers]
    else:
        straggling = _straggling_draws(order, draws, straggler_fraction)
    u = uniform(seed, round_, Purpose.STRAGGLER_EPOCHS, ids)
    partial_epochs = 1 + np.floor(u * max(local_epochs - 1, 1)).astype(np.int64)
    partial_epochs = np.minimum(partial_epochs, max(local_epochs - 1, 1))

    outcome = np.full(len(ids), COMPLETED, dtype=np.int8)
    outcome[dropped] = DROPPED
    outcome[straggling] = STRAGGLER
    finish = download_s + local_epochs * epoch_s + upload_s
    # Over-selection still keeps only the first K finishers among the clients that complete.
    finishers = np.flatnonzero(outcome == COMPLETED)
    order = finishers[np.lexsort((ids[finishers], finish[finishers]))]
    outcome[order[clients_per_round:]] = STRAGGLER
    done = order[:clients_per_round]
    epochs_done = np.zeros(len(ids), dtype=np.int64)
    epochs_done[done] = local_epochs
    ends = [finish[done]]
    if straggler_policy == "partial":
        places = clients_per_round - len(done)
        keep = straggling[np.argsort(ids[straggling], kind="stable")][: max(places, 0)]
        epochs_done[keep] = partial_epochs[keep]
        ends.append(download_s[keep] + partial_epochs[keep] * epoch_s[keep] + upload_s[keep])
    ends.append(drop_time[dropped])
    all_ends = np.concatenate(ends)
    duration = float(all_ends.max()) if len(all_ends) else 0.0
    return _plan(ids, n, tl, outcome, epochs_done, duration, (model_bytes, update_bytes))


def _straggling_draws(order: np.ndarray, draws: np.ndarray, fraction: float) -> np.ndarray:
    """Whole clients, in ``order``, that straggle while their draws fit in the fraction.

    A client drawn m times takes m of the cohort's places. At least ``len - target`` draws
    complete: with 90% of 10 draws, the completing clients hold one draw or a few more.
    """
    target = int(round(fraction * int(draws.sum())))
    taken, chosen = 0, []
    for k in order:
        if taken + int(draws[k]) <= target:
            chosen.append(k)
            taken += int(draws[k])
    return np.asarray(chosen, dtype=np.int64)


def _plan(
    ids: np.ndarray,
    n: np.ndarray,
    tl: Timelines,
    outcome: np.ndarray,
    epochs_done: np.ndarray,
    duration_s: float,
    sizes: tuple[int, int],
) -> RoundPlan:
    """A RoundPlan with its bytes: every selected client downloads, every contributor uploads.

    ``sizes`` is (model bytes, update bytes); compute is the whole planned local work.
    """
    model_bytes, update_bytes = sizes
    download_s, upload_s = tl.download_s, tl.upload_s
    return RoundPlan(
        ids=ids,
        num_samples=n,
        outcome=outcome,
        epochs_done=epochs_done,
        download_s=download_s,
        compute_s=tl.compute_s,
        upload_s=upload_s,
        duration_s=duration_s,
        bytes_down=int(model_bytes) * len(ids),
        bytes_up=int(update_bytes) * int(np.count_nonzero(epochs_done)),
    )
