"""Party profiles, and the bytes and simulated seconds of the vertical protocols.

Model work takes ``samples / speed`` seconds at a party (``speed`` in samples/s, as in
``[population]``). Cryptography is counted in modular multiplications: a modular
exponentiation with an e-bit exponent and an m-bit modulus costs ``e * (m / 2048)^2`` of
them (square and multiply, schoolbook multiplication), each ``mulmod_s`` seconds at
``REFERENCE_SPEED`` and proportionally longer at slower parties. ``mulmod_s``'s default was
measured: a 320-bit exponent mod a 2048-bit prime took 0.44 ms with GMP. A transfer takes
``bytes / min(bandwidth of sender, bandwidth of receiver)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsim.config import Dist
from fedsim.rng import Purpose, generator
from fedsim.vertical.config import REFERENCE_SPEED
from fedsim.vertical.psi import EXPONENT_BITS, Message


def draw(dist: Dist, rng: np.random.Generator) -> float:
    """One value of a (non-tier) distribution."""
    if dist.dist == "constant":
        return dist.value
    if dist.dist == "uniform":
        return float(rng.uniform(dist.low, dist.high))
    return float(dist.median * np.exp(dist.sigma * rng.standard_normal()))


@dataclass(frozen=True)
class Profile:
    name: str
    speed: float  # samples/s
    bandwidth: float  # bytes/s, each way


def profiles(parties: Sequence[Any], seed: int) -> list[Profile]:
    """Each party's speed and bandwidth, drawn from its distributions (keyed by its index).

    ``parties``: objects with ``name``, ``speed`` and ``bandwidth`` (party configs).
    """
    out = []
    for k, p in enumerate(parties):
        rng = generator(seed, Purpose.PARTY_PROFILE, k)
        out.append(Profile(p.name, draw(p.speed, rng), draw(p.bandwidth, rng)))
    return out


def modexp_mulmods(exponent_bits: int, modulus_bits: int) -> float:
    return exponent_bits * (modulus_bits / 2048) ** 2


@dataclass
class Ledger:
    """Bytes each party sent (up) and received (down), and the time those costs take."""

    parties: dict[str, Profile]
    mulmod_s: float
    up: dict[str, int] = field(default_factory=dict)
    down: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, profs: list[Profile], mulmod_s: float) -> Ledger:
        names = [p.name for p in profs]
        return cls(
            {p.name: p for p in profs}, mulmod_s, dict.fromkeys(names, 0), dict.fromkeys(names, 0)
        )

    def send(self, sender: str, receiver: str, nbytes: int) -> float:
        """Count a transfer; return its duration in simulated seconds."""
        self.up[sender] += int(nbytes)
        self.down[receiver] += int(nbytes)
        bw = min(self.parties[sender].bandwidth, self.parties[receiver].bandwidth)
        return nbytes / bw

    def compute_s(self, party: str, samples: float) -> float:
        return samples / self.parties[party].speed

    def crypto_s(self, party: str, mulmods: float) -> float:
        return mulmods * self.mulmod_s * REFERENCE_SPEED / self.parties[party].speed

    def take(self) -> tuple[dict[str, int], dict[str, int]]:
        """The bytes counted since the last take, and reset the counters."""
        up, down = dict(self.up), dict(self.down)
        self.up, self.down = dict.fromkeys(up, 0), dict.fromkeys(down, 0)
        return up, down


def psi_time(ledger: Ledger, messages: list[Message], sizes: dict[str, int], active: str) -> float:
    """Simulated seconds of :func:`fedsim.vertical.psi.intersect`, counting its bytes.

    The active party blinds its IDs while every passive party blinds its own; each passive
    party then re-blinds the active party's list; the active party handles the passive
    parties' lists one after another; the aligned positions go out last.
    """
    cost = modexp_mulmods(EXPONENT_BITS, 2048)
    t_active = ledger.crypto_s(active, sizes[active] * cost)
    finals = []
    for m in messages:
        dt = ledger.send(m.sender, m.receiver, m.nbytes)
        if m.what == "aligned positions":
            finals.append(dt)
    for name in sizes:
        if name == active:
            continue
        to_b = sum(m.nbytes for m in messages if m.receiver == name and m.what == "blinded ids")
        back = sum(m.nbytes for m in messages if m.sender == name)
        bw = min(ledger.parties[active].bandwidth, ledger.parties[name].bandwidth)
        ready = max(t_active + to_b / bw, ledger.crypto_s(name, sizes[name] * cost))
        done_b = ready + ledger.crypto_s(name, sizes[active] * cost) + back / bw
        t_active = max(t_active, done_b) + ledger.crypto_s(active, sizes[name] * cost)
    return t_active + max(finals, default=0.0)


def splitnn_step_s(ledger: Ledger, names: list[str], batch: int, emb: int, train: bool) -> float:
    """One split-NN minibatch (``train=False``: forward only, for evaluation).

    Bottom forward and backward are half a sample's work each; the top model's pass at the
    active party (``names[0]``) one; embeddings go up and their gradients come back as float32.
    """
    active, nbytes = names[0], batch * emb * 4
    half = 0.5 if train else 1.0
    up = [
        half * ledger.compute_s(n, batch) + (ledger.send(n, active, nbytes) if n != active else 0)
        for n in names
    ]
    t = max(up) + ledger.compute_s(active, batch)
    if not train:
        return t
    back = [
        (ledger.send(active, n, nbytes) if n != active else 0) + half * ledger.compute_s(n, batch)
        for n in names
    ]
    return t + max(back)


def hetero_lr_step_s(
    ledger: Ledger, names: list[str], dims: list[int], batch: int, key_bits: int, train: bool
) -> float:
    """One hetero-LR minibatch (see :mod:`fedsim.vertical.hetero_lr` for the steps).

    A Paillier ciphertext has ``2 * key_bits`` bits; encryption is one exponentiation with a
    ``key_bits`` exponent mod n^2; a ciphertext times a fixed-point plaintext one with an
    ``ENCODING_BITS`` exponent; decryption two with ``key_bits / 2`` exponents mod p^2, q^2.
    """
    from fedsim.vertical.hetero_lr import ENCODING_BITS, FLOAT_BYTES

    active, passive = names[0], names[1:]
    partial = max(
        ledger.compute_s(n, batch) + ledger.send(n, active, batch * FLOAT_BYTES) for n in passive
    )
    if not train:
        return partial
    ct_bytes, pt_bytes = 2 * key_bits // 8, key_bits // 8
    enc = ledger.crypto_s(active, batch * modexp_mulmods(key_bits, 2 * key_bits))
    work = []
    for n, d in zip(passive, dims[1:], strict=True):
        down = ledger.send(active, n, batch * ct_bytes)
        mult = ledger.crypto_s(n, batch * d * modexp_mulmods(ENCODING_BITS, 2 * key_bits))
        work.append(down + mult + ledger.send(n, active, d * ct_bytes))
    dec = sum(
        ledger.crypto_s(active, 2 * d * modexp_mulmods(key_bits // 2, key_bits)) for d in dims[1:]
    )
    back = max(ledger.send(active, n, d * pt_bytes) for n, d in zip(passive, dims[1:], strict=True))
    return partial + enc + max(work) + dec + back


def ftl_step_s(
    ledger: Ledger, names: list[str], n_source: int, batch: int, emb: int, train: bool
) -> float:
    """One federated-transfer minibatch, or (``train=False``) scoring ``batch`` target samples.

    ``names``: source, target. Training: the target encodes the batch and sends ``u^B`` while
    the source encodes all its ``n_source`` samples (for ``Phi_A``); the source returns
    ``dL/du^B``; both back-propagate. Scoring: the source encodes its samples and sends
    ``Phi_A`` while the target encodes its samples. A forward pass is half a sample's work,
    a backward pass the other half; vectors travel as float32.
    """
    source, target = names
    nbytes = batch * emb * 4
    fwd_a = 0.5 * ledger.compute_s(source, n_source)
    fwd_b = 0.5 * ledger.compute_s(target, batch)
    if not train:
        return max(fwd_a + ledger.send(source, target, emb * 4), fwd_b)
    t = max(fwd_b + ledger.send(target, source, nbytes), fwd_a)
    return t + ledger.send(source, target, nbytes) + max(fwd_a, fwd_b)
