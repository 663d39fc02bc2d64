"""Privacy in the round loop: the client-side step a worker applies and the server's side.

The order within a round is: clip (worker), local or distributed noise (worker), quantise and
mask (worker, with secure aggregation), sum (worker per chunk, then server in chunk order),
unmask and decode (server), central noise and division by the expected cohort q N (server).

:class:`ClientStep` is one small object per round from which the worker-side stages of the
update pipeline are built (:func:`fedsim.pipeline.privacy.privacy_pipeline`).
:class:`ServerPrivacy` holds what carries from round to round (the adaptive clip norm) and the
accountant, and does the server's part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsim.privacy.config import PrivacyOptions
from fedsim.privacy.dp import (
    AdaptiveClip,
    distributed_noise_stddev,
    noisy_average,
    poisson_sample,
    update_noise_multiplier,
)
from fedsim.privacy.secagg import (
    MASKED_INPUT,
    NUM_PROTOCOL_ROUNDS,
    SHARE_KEYS,
    SecAggRound,
    dequantize,
    modular_sum,
    setup_round,
    unmask,
)
from fedsim.privacy.secagg_messages import (
    extra_round_trip_s,
    masked_input_bytes,
    protocol_bytes,
    protocol_round_times,
)


@dataclass(frozen=True, eq=False)
class ClientStep:
    """What every worker needs to privatise one round's updates (one object per round).

    ``clip_norm`` is 0 when DP is off (secure aggregation alone): clients then send
    ``n_k * delta_k`` so the server can form FedAvg's sample-weighted mean from the sum.
    """

    seed: int
    round: int
    clip_norm: float
    local_stddev: float = 0.0
    distributed_stddev: float = 0.0
    secagg: SecAggRound | None = None
    clip_range: float = 0.0  # fixed-point coordinate range under secure aggregation

    @property
    def accumulator_dtype(self) -> type:
        """uint64 for masked fixed-point inputs (summed mod 2^bits), float64 otherwise."""
        return np.uint64 if self.secagg is not None else np.float64


@dataclass
class SecAggCosts:
    """Secure aggregation's per-client bytes beyond the plain transfers, and its extra time."""

    up: np.ndarray  # int64 per cohort member: protocol messages sent, besides the masked input
    down: np.ndarray  # int64: protocol messages received
    extra_s: float  # the three extra round trips


@dataclass
class PrivateMean:
    """The server's outcome of a private round: the mean update, or why there is none."""

    delta: np.ndarray | None  # float64 mean update (noised with DP); None if aborted
    aborted: bool = False
    reason: str = ""


def round_accountant(opts: PrivacyOptions, num_clients: int, clients_per_round: int) -> Any:
    """The run's :class:`~fedsim.privacy.accounting.RoundAccountant`, or None without DP."""
    if not opts.enabled:
        return None
    # Imported here: dp-accounting's scipy stack takes a second to load.
    from fedsim.privacy.accounting import RoundAccountant

    q = opts.rate(num_clients, clients_per_round)
    return RoundAccountant(
        q, opts.noise_multiplier, opts.delta, opts.accountant, opts.target_epsilon
    )


class ServerPrivacy:
    """The server's side of ``[privacy]``: sampling, secure aggregation, noise, accounting."""

    def __init__(
        self,
        opts: PrivacyOptions,
        num_clients: int,
        clients_per_round: int,
        min_completed: int,
        seed: int,
    ) -> None:
        self.opts, self.seed = opts, seed
        self.dp = opts.enabled
        self.q = opts.rate(num_clients, clients_per_round)
        self.expected_cohort = opts.expected_cohort(num_clients, clients_per_round)
        sigma_b = opts.count_stddev(num_clients, clients_per_round)
        # Adaptive clipping spends part of the budget on the count; the update gets the rest.
        self.z_update = (
            update_noise_multiplier(opts.noise_multiplier, sigma_b)
            if opts.adaptive_clipping
            else opts.noise_multiplier
        )
        self.clip = AdaptiveClip(
            opts.clip_norm, opts.target_quantile, opts.clip_learning_rate, sigma_b
        )
        # The least number of masked inputs a round may unmask; distributed noise is
        # calibrated to it, so every released sum carries at least z C of noise.
        self.min_inputs = min_completed
        self.accountant = round_accountant(opts, num_clients, clients_per_round)

    @property
    def clip_norm(self) -> float:
        return self.clip.clip_norm

    def select(self, population: Any, round_: int, t: float) -> np.ndarray:
        """The round's Poisson sample among the online clients (O(N): only used with DP)."""
        everyone = np.arange(population.num_clients, dtype=np.int64)
        if population.cfg.availability != "always":
            everyone = everyone[population.is_online(everyone, round_, t)]
        return poisson_sample(everyone, self.q, self.seed, round_)

    def allows(self, round_: int) -> bool:
        """Whether round ``round_`` keeps epsilon within ``target_epsilon``."""
        return self.accountant is None or self.accountant.allows(round_)

    def epsilon(self, round_: int) -> float:
        return self.accountant.epsilon(round_) if self.accountant is not None else math.nan

    def update_bytes(self, num_parameters: int, plain_bytes: int) -> int:
        """Bytes of one client's upload: the masked input under secure aggregation."""
        if not self.opts.secure_aggregation:
            return plain_bytes
        return masked_input_bytes(num_parameters, self.opts.bits)

    def client_step(
        self, round_: int, ids: np.ndarray, reporting: np.ndarray, num_samples: np.ndarray
    ) -> ClientStep:
        """The round's :class:`ClientStep`; sets up secure aggregation over the cohort ``ids``.

        In the protocol, clients that drop or are discarded as stragglers finished
        AdvertiseKeys and ShareKeys (2 protocol rounds); reporting clients finish all 4.
        """
        o = self.opts
        c = self.clip_norm if self.dp else 0.0
        local = o.local_noise_multiplier * c
        dist = (
            distributed_noise_stddev(self.z_update, c, self.min_inputs)
            if o.distributed_noise
            else 0.0
        )
        rnd, clip_range = None, 0.0
        if o.secure_aggregation and len(ids):
            completed = np.where(reporting, NUM_PROTOCOL_ROUNDS, SHARE_KEYS + 1).astype(np.int8)
            rnd = setup_round(
                ids,
                self.seed,
                round_,
                bits=o.bits,
                neighbours=o.neighbours,
                threshold_fraction=o.threshold_fraction,
                completed=completed,
            )
            if self.dp:
                # Room for the distributed noise beyond the clipped coordinates (|x_i| <= C).
                clip_range = o.clip_range or c + 4 * (dist + local)
            else:
                n_max = int(num_samples[reporting].max()) if reporting.any() else 1
                clip_range = (o.clip_range or o.clip_norm) * n_max
        return ClientStep(self.seed, round_, c, local, dist, rnd, clip_range)

    def secagg_costs(
        self, step: ClientStep, num_parameters: int, population: Any
    ) -> SecAggCosts | None:
        """Protocol bytes per client and the extra round trips, or None without secagg."""
        rnd = step.secagg
        if rnd is None:
            return None
        up, down = protocol_bytes(rnd, num_parameters)
        times = protocol_round_times(
            rnd,
            up,
            down,
            population.attribute("upload_bandwidth", rnd.ids),
            population.attribute("download_bandwidth", rnd.ids),
        )
        # The masked input replaces the plain upload, which the clock already counts.
        extra_up = up.sum(axis=1) - up[:, MASKED_INPUT]
        return SecAggCosts(extra_up, down.sum(axis=1), extra_round_trip_s(times))

    def aggregate(
        self,
        w: np.ndarray,
        step: ClientStep,
        sums: list[np.ndarray],
        total_samples: float,
    ) -> PrivateMean:
        """The round's mean update from the chunks' partial sums (in chunk order)."""
        o = self.opts
        if step.secagg is not None:
            rnd = step.secagg
            masked = modular_sum(np.stack(sums), rnd.bits) if sums else np.zeros(w.size, np.uint64)
            res = unmask(rnd, masked, min_inputs=self.min_inputs)
            if res.aborted:
                return PrivateMean(None, True, res.reason)
            total = dequantize(res.total, rnd.bits, step.clip_range, rnd.num_clients)
        else:
            total = np.zeros(w.size, dtype=np.float64)
            for s in sums:
                total += s
        if not self.dp:
            return PrivateMean(total / total_samples)
        z = 0.0 if o.distributed_noise else self.z_update
        avg = noisy_average(
            total,
            noise_multiplier=z,
            clip_norm=self.clip_norm,
            expected_cohort=self.expected_cohort,
            seed=self.seed,
            round_=step.round,
        )
        return PrivateMean(avg)

    def after_round(self, round_: int, unclipped: int) -> None:
        """Adaptive clipping's step from the round's count of unclipped updates."""
        if self.dp and self.opts.adaptive_clipping:
            self.clip = self.clip.update(unclipped, self.expected_cohort, self.seed, round_)

    def state_dict(self) -> dict[str, Any]:
        return {"clip_norm": self.clip.clip_norm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        from dataclasses import replace

        self.clip = replace(self.clip, clip_norm=float(state["clip_norm"]))
