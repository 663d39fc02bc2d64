"""Privacy accounting for DP-FedAvg with Google's ``dp-accounting`` library.

One round of DP-FedAvg is the Poisson-subsampled Gaussian mechanism: each client is in the
cohort with probability q, and the sum of clipped updates (sensitivity C for adding or removing
one client) gets Gaussian noise of std z C. T rounds compose T such mechanisms. Two accountants:

- ``"rdp"``: Renyi DP (Mironov 2017; subsampled Gaussian of Mironov, Talwar & Zhang 2019),
  converted to (epsilon, delta) with the bound of Canonne, Kamath & Steinke 2020. An upper bound
  on the true epsilon; fast.
- ``"pld"``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022 for the
  discretisation), numerically tight up to a pessimistic discretisation of 1e-4; slower.

All values are client-level (the unit of privacy is a whole client's data) for the
add-or-remove-one-client relation.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Iterator
from typing import Literal

import dp_accounting
import numpy as np
from dp_accounting import rdp
from dp_accounting.pld import privacy_loss_distribution

Accountant = Literal["rdp", "pld"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "pld")

#: Discretisation of the privacy loss for the PLD accountant (dp-accounting's default).
PLD_DISCRETIZATION = 1e-4
#: RDP orders: dp-accounting's default set.
RDP_ORDERS: tuple[float, ...] = tuple(rdp.rdp_privacy_accountant.DEFAULT_RDP_ORDERS)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # dp-accounting logs a warning for every fractional RDP order whose series does not converge
    # at large q; those orders are dropped from the minimum anyway, so the warnings are noise.
    log = logging.getLogger("absl")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _check(q: float, noise_multiplier: float, rounds: int, delta: float) -> None:
    if not 0 <= q <= 1:
        raise ValueError(f"sampling rate q must be in [0, 1], got {q!r}")
    if not noise_multiplier >= 0:
        raise ValueError(f"noise multiplier must be >= 0, got {noise_multiplier!r}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds!r}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _event(q: float, noise_multiplier: float) -> dp_accounting.DpEvent:
    return dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(noise_multiplier))


@functools.lru_cache(maxsize=256)
def _rdp_one_round(q: float, noise_multiplier: float) -> np.ndarray:
    accountant = rdp.RdpAccountant(list(RDP_ORDERS))
    with _quiet():
        accountant.compose(_event(q, noise_multiplier))
    return accountant.rdp


@functools.lru_cache(maxsize=16)
def _pld_one_round(
    q: float, noise_multiplier: float
) -> privacy_loss_distribution.PrivacyLossDistribution:
    # The same construction as dp-accounting's PLDAccountant for this event; kept so that T
    # rounds cost one self-composition instead of a rebuild.
    return privacy_loss_distribution.from_gaussian_mechanism(
        standard_deviation=noise_multiplier,
        sampling_prob=q,
        value_discretization_interval=PLD_DISCRETIZATION,
    )


def rdp_curve(q: float, noise_multiplier: float, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(orders, RDP epsilons) of ``rounds`` rounds: RDP composes by adding, so T times one round."""
    _check(q, noise_multiplier, rounds, 0.5)
    if noise_multiplier == 0:
        return np.array(RDP_ORDERS), np.full(len(RDP_ORDERS), math.inf)
    return np.array(RDP_ORDERS), rounds * _rdp_one_round(float(q), float(noise_multiplier))


def epsilon(
    q: float, noise_multiplier: float, rounds: int, delta: float, accountant: Accountant = "rdp"
) -> float:
    """Client-level epsilon after ``rounds`` rounds at ``delta``.

    ``q`` is the Poisson sampling rate, ``noise_multiplier`` the noise std over the clip norm.
    Zero rounds or q = 0 cost nothing; z = 0 is not private (infinite epsilon).
    """
    _check(q, noise_multiplier, rounds, delta)
    if rounds == 0 or q == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    if accountant == "rdp":
        orders, values = rdp_curve(q, noise_multiplier, rounds)
        with _quiet():
            return float(rdp.compute_epsilon(orders, values, delta)[0])
    if accountant == "pld":
        pld = _pld_one_round(float(q), float(noise_multiplier))
        with _quiet():
            return float(pld.self_compose(rounds).get_epsilon_for_delta(delta))
    raise ValueError(f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}")


def noise_multiplier_for_epsilon(
    q: float,
    target_epsilon: float,
    rounds: int,
    delta: float,
    accountant: Accountant = "rdp",
    rtol: float = 1e-3,
) -> float:
    """Smallest noise multiplier (within ``rtol``) whose epsilon after ``rounds`` is <= target.

    A bracketed search on z, using that epsilon decreases in z: false position on
    log epsilon against log z (nearly linear), probing a pair of points ``rtol`` apart around
    each estimate so that a good estimate closes the bracket at once, and a bisection every
    third step. The returned z always meets the target.
    """
    if not target_epsilon > 0:
        raise ValueError(f"target epsilon must be > 0, got {target_epsilon!r}")
    _check(q, 0.0, rounds, delta)
    if rounds == 0 or q == 0:
        return 0.0

    def excess(z: float) -> float:
        # log(epsilon / target): <= 0 iff z meets the target; +inf when epsilon is infinite.
        eps = epsilon(q, z, rounds, delta, accountant)
        return (
            math.log(eps / target_epsilon)
            if 0 < eps < math.inf
            else (-math.inf if eps == 0 else math.inf)
        )

    if accountant == "pld":
        # PLD is tighter than RDP, so the RDP answer is an upper bracket and saves PLD builds.
        hi = noise_multiplier_for_epsilon(q, target_epsilon, rounds, delta, "rdp", rtol)
    else:
        hi = 1.0
        while excess(hi) > 0:
            hi *= 2.0
            if hi > 2.0**20:
                raise ValueError(f"no noise multiplier up to 2^20 reaches epsilon {target_epsilon}")
    f_hi = excess(hi)
    lo = 0.8 * hi
    f_lo = excess(lo)
    while f_lo <= 0:
        hi, f_hi, lo = lo, f_lo, 0.5 * lo
        if hi < 1e-6:
            return hi
        f_lo = excess(lo)
    step = 0
    while hi - lo > rtol * hi:
        step += 1
        # Every third step bisects, so a one-sided false position cannot stall the search.
        if step % 3 and math.isfinite(f_lo) and math.isfinite(f_hi) and f_lo > f_hi:
            x_lo, x_hi = math.log(lo), math.log(hi)
            guess = math.exp(x_hi - f_hi * (x_hi - x_lo) / (f_hi - f_lo))
        else:
            guess = 0.5 * (lo + hi)
        probes = sorted({min(max(guess * (1 + d), lo), hi) for d in (-0.5 * rtol, 0.5 * rtol)})
        probes = [z for z in probes if lo < z < hi] or [0.5 * (lo + hi)]
        for z in probes:
            f = excess(z)
            if f <= 0:
                hi, f_hi = z, f
                break
            lo, f_lo = z, f
    return hi


def rounds_within_budget(
    q: float,
    noise_multiplier: float,
    delta: float,
    target_epsilon: float,
    accountant: Accountant = "rdp",
    max_rounds: int = 10**7,
) -> int:
    """Largest number of rounds T <= ``max_rounds`` with epsilon(T) <= ``target_epsilon``."""
    _check(q, noise_multiplier, 0, delta)
    if not target_epsilon >= 0:
        raise ValueError(f"target epsilon must be >= 0, got {target_epsilon!r}")

    def fits(t: int) -> bool:
        return epsilon(q, noise_multiplier, t, delta, accountant) <= target_epsilon

    if not fits(1):
        return 0
    lo, hi = 1, 2  # fits(lo); grow hi until it does not fit
    while hi <= max_rounds and fits(hi):
        lo, hi = hi, hi * 2
    if hi > max_rounds:
        if fits(max_rounds):
            return max_rounds
        hi = max_rounds
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def local_epsilon(noise_multiplier: float, participations: int, delta: float) -> float:
    """Epsilon of local DP for one client after ``participations`` noised reports.

    Each report is the client's clipped update (L2 norm <= C) plus its own N(0, (z C)^2) noise.
    Against the server, which sees every report and knows who sent it, there is no amplification
    by sampling, and replacing the client's data moves a report by up to 2 C: each report is a
    Gaussian mechanism of noise multiplier z / 2, composed over the client's participations.
    """
    _check(1.0, noise_multiplier, participations, delta)
    if participations == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    return epsilon(1.0, noise_multiplier / 2.0, participations, delta, "rdp")


class RoundAccountant:
    """Epsilon of a DP-FedAvg run round by round, and whether the budget allows another round.

    ``epsilon(t)`` is the spend after t rounds; ``allows(t)`` says whether round t may run
    without exceeding ``target_epsilon`` (the run stops before the round that would exceed it).
    Values are cached, so asking before and after each round costs one computation per round.
    """

    def __init__(
        self,
        q: float,
        noise_multiplier: float,
        delta: float,
        accountant: Accountant = "rdp",
        target_epsilon: float = math.inf,
    ) -> None:
        _check(q, noise_multiplier, 0, delta)
        if accountant not in ACCOUNTANTS:
            raise ValueError(
                f"accountant must be one of {', '.join(ACCOUNTANTS)}, got {accountant!r}"
            )
        self.q, self.noise_multiplier, self.delta = q, noise_multiplier, delta
        self.accountant: Accountant = accountant
        self.target_epsilon = target_epsilon
        self._cache: dict[int, float] = {}

    def epsilon(self, rounds: int) -> float:
        """Epsilon after ``rounds`` rounds at the configured delta."""
        if rounds not in self._cache:
            self._cache[rounds] = epsilon(
                self.q, self.noise_multiplier, rounds, self.delta, self.accountant
            )
        return self._cache[rounds]

    def allows(self, round_: int) -> bool:
        """True if running round ``round_`` (1-based) keeps epsilon within the target."""
        if math.isinf(self.target_epsilon):
            return True
        return self.epsilon(round_) <= self.target_epsilon
