"""Shamir secret sharing over the prime field GF(2^127 - 1), in exact integer arithmetic.

A secret s is the constant term of a random polynomial f of degree t - 1; the share of the
party at x (x != 0) is f(x). Any t shares determine f, hence s = f(0) by Lagrange interpolation;
any t - 1 shares are consistent with every secret (Shamir 1979), which is what secure
aggregation relies on to let the server unmask only what the protocol allows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The Mersenne prime 2^127 - 1: the field of secrets, shares and (simulated) key agreement.
PRIME = (1 << 127) - 1


def random_element(rng: np.random.Generator) -> int:
    """A uniform element of GF(PRIME) from two 64-bit draws (rejecting the one value 2^127 - 1)."""
    while True:
        hi, lo = (int(w) for w in rng.bit_generator.random_raw(2))
        value = ((hi >> 1) << 64) | lo
        if value < PRIME:
            return value


def evaluate(coefficients: Sequence[int], x: int) -> int:
    """f(x) mod PRIME for f = coefficients[0] + coefficients[1] x + ... (Horner)."""
    acc = 0
    for c in reversed(coefficients):
        acc = (acc * x + c) % PRIME
    return acc


def split(secret: int, threshold: int, xs: Sequence[int], rng: np.random.Generator) -> list[int]:
    """Shares of ``secret`` at the points ``xs`` (distinct, non-zero mod PRIME), t-of-len(xs)."""
    coefficients = polynomial(secret, threshold, rng)
    return [evaluate(coefficients, x) for x in xs]


def polynomial(secret: int, threshold: int, rng: np.random.Generator) -> list[int]:
    """Coefficients of a uniformly random polynomial of degree ``threshold - 1`` with f(0) = s."""
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1, got {threshold!r}")
    if not 0 <= secret < PRIME:
        raise ValueError("secret must be an element of GF(2^127 - 1)")
    return [secret, *(random_element(rng) for _ in range(threshold - 1))]


def reconstruct(xs: Sequence[int], ys: Sequence[int]) -> int:
    """f(0) from the shares (xs[i], ys[i]) by Lagrange interpolation, exact mod PRIME.

    With at least t shares of a degree t - 1 polynomial this is the secret; with fewer it is
    some field element that says nothing about the secret.
    """
    if len(xs) != len(ys) or not xs:
        raise ValueError("need as many share values as points, and at least one")
    if len({x % PRIME for x in xs}) != len(xs) or any(x % PRIME == 0 for x in xs):
        raise ValueError("share points must be distinct and non-zero")
    secret = 0
    for j, (xj, yj) in enumerate(zip(xs, ys, strict=True)):
        num, den = 1, 1
        for m, xm in enumerate(xs):
            if m != j:
                num = num * xm % PRIME
                den = den * (xm - xj) % PRIME
        secret = (secret + yj * num * pow(den, -1, PRIME)) % PRIME
    return secret
