"""Options of the ``[privacy]`` section: differential privacy and secure aggregation.

Defaults leave both off. Keys that only make sense with DP on (``enabled = true``) or with secure
aggregation on are rejected otherwise, so a config never says more than the run does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from fedsim.options import check, finite, in_range, non_negative, positive


@dataclass(frozen=True)
class PrivacyOptions:
    """``[privacy]``: client-level DP-FedAvg, local DP, adaptive clipping, secure aggregation.

    With ``enabled``, cohorts are Poisson samples of rate ``sampling_rate`` (0 = clients_per_round
    / num_clients), each client's update is clipped to ``clip_norm``, Gaussian noise of std
    ``noise_multiplier * clip_norm`` is added to the sum once per round (by the server, or split
    across the clients with ``distributed_noise``), and the sum is divided by the expected cohort
    size. ``epsilon`` at ``delta`` is accounted with ``accountant``; the run stops before a round
    that would exceed ``target_epsilon``.
    """

    enabled: bool = False
    clip_norm: float = field(default=1.0, metadata=check(positive, finite))
    noise_multiplier: float = field(default=1.0, metadata=check(non_negative, finite))
    sampling_rate: float = field(default=0.0, metadata=check(in_range(0, 1)))
    delta: float = field(default=1e-5, metadata=check(in_range(0, 1, lo_open=True, hi_open=True)))
    accountant: Literal["rdp", "pld"] = "rdp"
    target_epsilon: float = field(default=math.inf, metadata=check(positive))
    # Local DP: each client adds N(0, (local_noise_multiplier * clip_norm)^2) before sending.
    local_noise_multiplier: float = field(default=0.0, metadata=check(non_negative, finite))
    # Adaptive clipping (Andrew et al. 2021): clip_norm is the initial value.
    adaptive_clipping: bool = False
    target_quantile: float = field(
        default=0.5, metadata=check(in_range(0, 1, lo_open=True, hi_open=True))
    )
    clip_learning_rate: float = field(default=0.2, metadata=check(positive, finite))
    clip_count_stddev: float = field(default=0.0, metadata=check(non_negative, finite))
    # Secure aggregation (Bonawitz et al. 2017, SecAgg+ graph of Bell et al. 2020).
    secure_aggregation: bool = False
    bits: int = field(default=32, metadata=check(in_range(2, 64)))
    clip_range: float = field(default=0.0, metadata=check(non_negative, finite))
    neighbours: int = field(default=0, metadata=check(non_negative))
    threshold_fraction: float = field(default=0.5, metadata=check(in_range(0, 1, hi_open=True)))
    distributed_noise: bool = False

    def validate(self) -> str | None:
        """The first inconsistency between keys, as ``key: message``, or None."""
        unused = self._unused_key()
        if unused:
            return unused
        if not self.enabled:
            if self.adaptive_clipping:
                return "adaptive_clipping: needs enabled = true"
            if self.distributed_noise:
                return "distributed_noise: needs enabled = true"
            if self.local_noise_multiplier > 0:
                return "local_noise_multiplier: needs enabled = true (noise scales with clip_norm)"
            if math.isfinite(self.target_epsilon):
                return "target_epsilon: needs enabled = true"
        if self.distributed_noise and not self.secure_aggregation:
            return "distributed_noise: needs secure_aggregation = true (else updates are seen)"
        if math.isfinite(self.target_epsilon) and self.noise_multiplier == 0:
            return "target_epsilon: needs noise_multiplier > 0"
        return None

    def _unused_key(self) -> str | None:
        """A key set away from its default although its feature is off (it would be ignored)."""
        default = PrivacyOptions()
        needs = {
            # DP-only keys; secure aggregation also reads clip_norm (its fixed-point range).
            "noise_multiplier": ("enabled", self.enabled),
            "sampling_rate": ("enabled", self.enabled),
            "delta": ("enabled", self.enabled),
            "accountant": ("enabled", self.enabled),
            "clip_norm": ("enabled", self.enabled or self.secure_aggregation),
            "target_quantile": ("adaptive_clipping", self.adaptive_clipping),
            "clip_learning_rate": ("adaptive_clipping", self.adaptive_clipping),
            "clip_count_stddev": ("adaptive_clipping", self.adaptive_clipping),
            "bits": ("secure_aggregation", self.secure_aggregation),
            "clip_range": ("secure_aggregation", self.secure_aggregation),
            "neighbours": ("secure_aggregation", self.secure_aggregation),
            "threshold_fraction": ("secure_aggregation", self.secure_aggregation),
        }
        for key, (switch, on) in needs.items():
            if not on and getattr(self, key) != getattr(default, key):
                return f"{key}: has no effect unless {switch} = true (it is false)"
        return None

    def rate(self, num_clients: int, clients_per_round: int) -> float:
        """Poisson sampling rate q: ``sampling_rate``, or clients_per_round / num_clients."""
        return self.sampling_rate or clients_per_round / num_clients

    def expected_cohort(self, num_clients: int, clients_per_round: int) -> float:
        """q N: the fixed denominator of DP-FedAvg's average."""
        return self.rate(num_clients, clients_per_round) * num_clients

    def count_stddev(self, num_clients: int, clients_per_round: int) -> float:
        """sigma_b of adaptive clipping: ``clip_count_stddev``, or expected cohort / 20 (Andrew
        et al. 2021's recommendation)."""
        return self.clip_count_stddev or self.expected_cohort(num_clients, clients_per_round) / 20

    def fixed_point_range(self) -> float:
        """Per-coordinate range of secure aggregation's fixed point: ``clip_range``, else
        ``clip_norm`` (an update clipped to L2 norm C has every coordinate in [-C, C])."""
        return self.clip_range or self.clip_norm

    def check_against(
        self, num_clients: int, clients_per_round: int, over_selection: float = 1.0
    ) -> str | None:
        """Checks that need the population and cohort sizes, as ``key: message``, or None."""
        if self.secure_aggregation:
            # Poisson cohorts vary; leave room for three times the expected size.
            cohort = math.ceil(over_selection * clients_per_round)
            if self.enabled:
                cohort = math.ceil(3 * self.expected_cohort(num_clients, clients_per_round))
            if ((1 << (self.bits - 1)) - 1) // max(cohort, 1) < 1:
                return f"bits: {self.bits} bits cannot hold the sum of {cohort} clients' updates"
            selected = math.ceil(over_selection * clients_per_round)
            if not self.enabled and selected < 2:
                return (
                    "secure_aggregation: a cohort of one client has nothing to hide its update "
                    "among; needs server.clients_per_round * server.over_selection >= 2"
                )
            if self.neighbours > max(selected - 1, 1):
                return (
                    f"neighbours: {self.neighbours} is more than the other clients of a cohort "
                    f"of {selected}"
                )
        if self.enabled and self.adaptive_clipping and self.noise_multiplier > 0:
            sigma_b = self.count_stddev(num_clients, clients_per_round)
            if not 2 * sigma_b > self.noise_multiplier:
                return (
                    f"clip_count_stddev: adaptive clipping needs 2 * clip_count_stddev "
                    f"({2 * sigma_b:g}) > noise_multiplier ({self.noise_multiplier:g})"
                )
        return self._budget_error(num_clients, clients_per_round)

    def _budget_error(self, num_clients: int, clients_per_round: int) -> str | None:
        """target_epsilon below what a single round spends: the run could do nothing."""
        if not (self.enabled and math.isfinite(self.target_epsilon) and self.noise_multiplier):
            return None
        # Imported here: dp-accounting's scipy stack takes a second to load.
        from fedsim.privacy.accounting import epsilon

        q = self.rate(num_clients, clients_per_round)
        one = epsilon(q, self.noise_multiplier, 1, self.delta, self.accountant)
        if one > self.target_epsilon:
            return (
                f"target_epsilon: {self.target_epsilon:g} is less than what one round spends "
                f"({one:.4g}); no round could run"
            )
        return None
