"""Secure aggregation: the server learns the sum of the cohort's updates and nothing else.

The protocol of Bonawitz et al. 2017 ("Practical Secure Aggregation for Privacy-Preserving
Machine Learning", semi-honest variant) with the sparse neighbour graph of SecAgg+ (Bell et al.
2020, "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead"): each client pairs
with k = O(log n) neighbours instead of all n - 1 others, so its cost is O(log n + P).

Per round, over a cohort of n clients and updates of P parameters:

0. AdvertiseKeys: client u sends its key-agreement public key pk_u (and an encryption key).
1. ShareKeys: u Shamir-shares, t-of-k among its neighbours, its key-agreement secret key sk_u
   and the seed b_u of its self mask, and sends the shares encrypted to each neighbour.
2. MaskedInputCollection: u sends y_u = x_u + PRG(b_u) + sum_{v neighbour, u < v} PRG(s_uv)
   - sum_{v neighbour, u > v} PRG(s_uv) mod 2^bits, where s_uv = KA(sk_u, pk_v) = KA(sk_v, pk_u)
   and x_u is the update in fixed point. Pair masks cancel in the sum.
3. Unmasking: for every neighbour v, a surviving client reveals its share of b_v if v sent a
   masked input, else its share of sk_v. The server rebuilds the self masks of the clients whose
   inputs it summed and the pair masks of those that dropped after ShareKeys, and removes them.
   If fewer than t shares of a secret it needs are revealed, the round aborts.

What fedsim simulates and what it does not: key agreement is Diffie-Hellman in the *additive*
group of GF(2^127 - 1) (pk = g sk, s_uv = sk_u pk_v = sk_v pk_u) and the PRG is numpy's PCG64
seeded by the agreed value. Both are exact and used exactly where the protocol uses them (a client
agrees from its own secret key and the other's public key; the server only from a secret key it
rebuilt from shares), so masks cancel bit for bit; neither is secure (anyone can divide pk by g).
A deployment uses elliptic-curve Diffie-Hellman (e.g. X25519) and a cryptographic PRG (e.g. AES
in counter mode). Encryption
and authentication of the shares are not performed; their messages are counted at the sizes a
deployment would send (:mod:`fedsim.privacy.secagg_messages`). Secrets are drawn from keys of
(seed, round, client id) so runs are reproducible; the server's unmasking uses only the shares
it is sent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from fedsim.privacy import shamir
from fedsim.privacy.purpose import PrivacyPurpose
from fedsim.rng import generator

#: Generator of the simulated Diffie-Hellman group, the additive group of GF(2^127 - 1).
DH_GENERATOR = 0x5DEECE66D

#: The protocol's rounds; ``completed[u]`` counts how many of them client u finished.
ADVERTISE_KEYS, SHARE_KEYS, MASKED_INPUT, UNMASKING = 0, 1, 2, 3
NUM_PROTOCOL_ROUNDS = 4
ROUND_NAMES = ("advertise_keys", "share_keys", "masked_input", "unmasking")

#: The two secrets a client shares: its key-agreement secret key and its self-mask seed.
SECRET_KEY, SELF_MASK_SEED = 0, 1


# --- parameters -------------------------------------------------------------------------------


def neighbour_count(num_clients: int, neighbours: int = 0) -> int:
    """The degree k of the neighbour graph for a cohort of ``num_clients``.

    ``neighbours = 0`` picks k = 2 ceil(5 log2 n): O(log n) as in Bell et al. 2020, with a
    constant large enough that, at a threshold of half the neighbours, a round with 30% dropout
    aborts rarely. k is even (the graph is a Harary graph) and at most n - 1 (then every client
    neighbours every other, which is Bonawitz et al.'s original protocol).
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients!r}")
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours!r}")
    k = neighbours or 2 * math.ceil(5 * math.log2(max(num_clients, 2)))
    k += k % 2
    return min(k, num_clients - 1)


def threshold_count(degree: int, fraction: float) -> int:
    """Shares needed to rebuild a secret: the least integer above ``fraction`` * k, at most k."""
    if not 0 <= fraction < 1:
        raise ValueError(f"threshold fraction must be in [0, 1), got {fraction!r}")
    return max(1, min(degree, math.floor(fraction * degree) + 1))


# --- fixed point ------------------------------------------------------------------------------


def _modulus_mask(bits: int) -> np.uint64:
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits!r}")
    return np.uint64((1 << bits) - 1)


def fixed_point_levels(bits: int, num_clients: int) -> int:
    """M: a value in [-clip_range, clip_range] maps to an integer in [-M, M].

    M = floor((2^(bits-1) - 1) / n), so the sum of any n inputs lies in the signed range of
    ``bits`` bits and decodes without wrapping; capped at 2^53, where float64 stops being exact.
    """
    _modulus_mask(bits)
    levels = min(((1 << (bits - 1)) - 1) // num_clients, 1 << 53)
    if levels < 1:
        raise ValueError(f"{bits} bits cannot hold the sum of {num_clients} clients' inputs")
    return levels


def quantize(x: np.ndarray, bits: int, clip_range: float, num_clients: int) -> np.ndarray:
    """Fixed-point encoding mod 2^bits (uint64): clip to [-c, c], scale to [-M, M], round."""
    if not clip_range > 0:
        raise ValueError(f"clip_range must be > 0, got {clip_range!r}")
    levels = fixed_point_levels(bits, num_clients)
    scaled = np.rint(
        np.clip(np.asarray(x, dtype=np.float64), -clip_range, clip_range) * (levels / clip_range)
    )
    # |scaled| <= M <= 2^53 exactly; two's complement then reduction mod 2^bits.
    return scaled.astype(np.int64).astype(np.uint64) & _modulus_mask(bits)


def dequantize(total: np.ndarray, bits: int, clip_range: float, num_clients: int) -> np.ndarray:
    """Decode a sum of fixed-point inputs (mod 2^bits) to float64: the inverse of the scaling."""
    levels = fixed_point_levels(bits, num_clients)
    shift = np.uint64(64 - bits)
    # Sign-extend from ``bits`` bits: move the sign bit to bit 63, then shift back arithmetically.
    signed = ((np.asarray(total, dtype=np.uint64) << shift).view(np.int64)) >> shift.astype(
        np.int64
    )
    return signed.astype(np.float64) * (clip_range / levels)


def modular_sum(vectors: np.ndarray, bits: int) -> np.ndarray:
    """Sum of fixed-point vectors (rows) mod 2^bits; uint64 addition wraps mod 2^64 first."""
    v = np.asarray(vectors, dtype=np.uint64)
    return v.sum(axis=0, dtype=np.uint64) & _modulus_mask(bits)


def prg(seed: int, size: int, bits: int) -> np.ndarray:
    """``size`` values uniform mod 2^bits expanded from ``seed`` (PCG64; a stand-in for AES-CTR)."""
    return np.random.PCG64(seed).random_raw(size) & _modulus_mask(bits)


# --- the neighbour graph ----------------------------------------------------------------------


def neighbour_graph(num_clients: int, degree: int, seed: int, round_: int) -> np.ndarray:
    """Neighbours of each cohort member, (n, k) indices into the cohort, each row sorted.

    A Harary graph H(n, k) over a random relabelling of the cohort (Bell et al. 2020): place the
    clients on a circle in a random order keyed by (seed, round) and join each to the k/2 nearest
    on either side. Symmetric, exactly k-regular; the complete graph when k = n - 1.
    """
    n = num_clients
    if degree >= n - 1:
        full = np.broadcast_to(np.arange(n), (n, n))
        return full[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    if degree % 2:
        raise ValueError(f"degree must be even below n - 1, got {degree}")
    order = generator(seed, PrivacyPurpose.SECAGG_GRAPH, round_).permutation(n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    half = degree // 2
    offsets = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    return np.sort(order[(position[:, None] + offsets) % n], axis=1)


# --- keys and the round's public state --------------------------------------------------------


@dataclass(frozen=True)
class ClientSecrets:
    secret_key: int  # sk_u, the key-agreement secret
    self_mask_seed: int  # b_u


def client_secrets(seed: int, round_: int, client_id: int) -> ClientSecrets:
    """A client's two secrets for a round, drawn from its own key (only the client uses this)."""
    rng = generator(seed, PrivacyPurpose.SECAGG_KEYS, round_, client_id)
    return ClientSecrets(shamir.random_element(rng) or 1, shamir.random_element(rng))


def public_key(secret_key: int) -> int:
    """pk = g sk mod 2^127 - 1 (simulated Diffie-Hellman; a real one computes g^sk)."""
    return DH_GENERATOR * secret_key % shamir.PRIME


def agree(secret_key: int, other_public_key: int) -> int:
    """The pair seed s_uv = sk_u pk_v = sk_v pk_u (simulated Diffie-Hellman key agreement)."""
    return secret_key * other_public_key % shamir.PRIME


@dataclass(frozen=True, eq=False)
class SecAggRound:
    """What every party of one round may know: cohort, graph, public keys, who got how far.

    ``completed[u]`` is how many protocol rounds client u finished (0-4; see ROUND_NAMES): the
    dropout pattern. A client that drops before a protocol round neither receives nor sends in
    it. Indices are positions in ``ids`` (the cohort, sorted).
    """

    seed: int
    round: int
    ids: np.ndarray  # int64, sorted
    neighbours: np.ndarray  # (n, k) int64 cohort indices
    threshold: int
    bits: int
    public_keys: tuple[int, ...]
    completed: np.ndarray  # int8 (n,)

    @property
    def num_clients(self) -> int:
        return len(self.ids)

    @property
    def degree(self) -> int:
        return self.neighbours.shape[1]

    def index(self, client_id: int) -> int:
        """Position of ``client_id`` in the cohort."""
        i = int(np.searchsorted(self.ids, client_id))
        if i >= len(self.ids) or self.ids[i] != client_id:
            raise KeyError(f"client {client_id} is not in this round's cohort")
        return i

    def reached(self, protocol_round: int) -> np.ndarray:
        """Clients that finished ``protocol_round`` (U1..U4 of Bonawitz et al. for 0..3)."""
        return self.completed > protocol_round


def setup_round(
    ids: np.ndarray,
    seed: int,
    round_: int,
    *,
    bits: int,
    neighbours: int = 0,
    threshold_fraction: float = 0.5,
    completed: np.ndarray | None = None,
) -> SecAggRound:
    """The public state of a round of secure aggregation over the cohort ``ids``.

    ``completed`` (default: everyone finishes) gives, per client in the order of sorted ``ids``,
    how many protocol rounds it finished before dropping.
    """
    ids = np.unique(np.asarray(ids, dtype=np.int64))
    n = len(ids)
    k = neighbour_count(n, neighbours)
    done = np.full(n, NUM_PROTOCOL_ROUNDS, np.int8) if completed is None else np.asarray(completed)
    if done.shape != (n,) or done.min(initial=0) < 0 or done.max(initial=0) > NUM_PROTOCOL_ROUNDS:
        raise ValueError(f"completed must be {n} values in [0, {NUM_PROTOCOL_ROUNDS}]")
    keys = tuple(public_key(client_secrets(seed, round_, int(c)).secret_key) for c in ids)
    _modulus_mask(bits)
    return SecAggRound(
        seed=seed,
        round=round_,
        ids=ids,
        neighbours=neighbour_graph(n, k, seed, round_),
        threshold=threshold_count(k, threshold_fraction),
        bits=bits,
        public_keys=keys,
        completed=done.astype(np.int8),
    )


# --- shares -----------------------------------------------------------------------------------


def share_point(client_id: int) -> int:
    """The Shamir evaluation point of a share holder: its client id + 1 (never 0)."""
    return int(client_id) + 1


def _secret_polynomial(rnd: SecAggRound, owner: int, kind: int) -> list[int]:
    cid = int(rnd.ids[owner])
    secrets = client_secrets(rnd.seed, rnd.round, cid)
    value = secrets.secret_key if kind == SECRET_KEY else secrets.self_mask_seed
    rng = generator(rnd.seed, PrivacyPurpose.SECAGG_SHARES, rnd.round, cid, kind)
    return shamir.polynomial(value, rnd.threshold, rng)


def shares_for(rnd: SecAggRound, owner: int, holders: Sequence[int], kind: int) -> list[int]:
    """The shares of the owner's secret ``kind`` that it sent to ``holders`` in ShareKeys."""
    poly = _secret_polynomial(rnd, owner, kind)
    return [shamir.evaluate(poly, share_point(rnd.ids[h])) for h in holders]


#: How the server obtains shares: (owner, holders, kind) -> the holders' shares.
RevealShares = Callable[[int, Sequence[int], int], Sequence[int]]


# --- client side ------------------------------------------------------------------------------


def mask_input(rnd: SecAggRound, index: int, x: np.ndarray) -> np.ndarray:
    """Client ``index``'s masked input y_u (uint64 mod 2^bits) for its fixed-point update ``x``.

    Pair masks are taken with the neighbours that finished ShareKeys (the server tells each
    client which), as in Bonawitz et al.'s MaskedInputCollection.
    """
    mask = _modulus_mask(rnd.bits)
    secrets = client_secrets(rnd.seed, rnd.round, int(rnd.ids[index]))
    y = np.asarray(x, dtype=np.uint64) + prg(secrets.self_mask_seed, len(x), rnd.bits)
    me = rnd.ids[index]
    for v in rnd.neighbours[index]:
        if rnd.completed[v] <= SHARE_KEYS:
            continue
        m = prg(agree(secrets.secret_key, rnd.public_keys[v]), len(x), rnd.bits)
        # uint64 arithmetic wraps mod 2^64, a multiple of 2^bits: the mask below is exact.
        y = y + m if me < rnd.ids[v] else y - m
    return y & mask


def masked_sum(rnd: SecAggRound, client_ids: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """Sum mod 2^bits of the masked inputs of ``client_ids`` (rows of ``inputs``): a partial
    sum the server can add to others in any grouping, since addition mod 2^bits is exact."""
    total = np.zeros(inputs.shape[1], dtype=np.uint64)
    for cid, x in zip(client_ids, inputs, strict=True):
        total += mask_input(rnd, rnd.index(int(cid)), x)
    return total & _modulus_mask(rnd.bits)


# --- server side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnmaskResult:
    """The outcome of a round of secure aggregation at the server."""

    total: np.ndarray | None  # uint64 sum mod 2^bits of the included inputs; None if aborted
    included: np.ndarray  # bool (n,): clients whose input is in the sum (sent a masked input)
    aborted: bool
    reason: str  # why the round aborted, "" otherwise
    reconstructed: int  # secrets rebuilt from shares (self-mask seeds and secret keys)


def unmask(
    rnd: SecAggRound,
    masked_total: np.ndarray,
    reveal: RevealShares | None = None,
    min_inputs: int = 0,
) -> UnmaskResult:
    """Remove every mask left in the sum of the masked inputs the server received.

    ``masked_total`` is the sum mod 2^bits of y_u over the clients with ``completed >= 3``.
    ``reveal`` supplies the shares that surviving neighbours send in the Unmasking round (by
    default, computed from the ShareKeys polynomials). Aborts when fewer than max(t,
    ``min_inputs``) clients sent masked inputs, or when some secret that must be rebuilt has
    fewer than t surviving holders. With distributed DP noise calibrated to m clients, pass
    ``min_inputs = m`` so that no released sum carries less than the accounted noise.
    """
    reveal = reveal or (lambda owner, holders, kind: shares_for(rnd, owner, holders, kind))
    mask = _modulus_mask(rnd.bits)
    shared, sent, answering = (
        rnd.reached(SHARE_KEYS),
        rnd.reached(MASKED_INPUT),
        rnd.reached(UNMASKING),
    )
    t = rnd.threshold

    def abort(reason: str) -> UnmaskResult:
        return UnmaskResult(None, sent, True, reason, 0)

    if np.count_nonzero(sent) < max(t, min_inputs):
        return abort(
            f"{np.count_nonzero(sent)} masked inputs received, threshold {max(t, min_inputs)}"
        )
    # The server asks each survivor for one share per neighbour: of b_v if v's input is in the
    # sum, of sk_v otherwise, never both, so it can rebuild nothing beyond the sum.
    needed: list[tuple[int, int]] = [(u, SELF_MASK_SEED) for u in np.flatnonzero(sent)]
    needed += [
        (u, SECRET_KEY) for u in np.flatnonzero(shared & ~sent) if sent[rnd.neighbours[u]].any()
    ]
    total = np.asarray(masked_total, dtype=np.uint64).copy()
    size = len(total)
    for u, kind in needed:
        holders = [int(h) for h in rnd.neighbours[u] if answering[h]]
        if len(holders) < t:
            return abort(
                f"client {rnd.ids[u]}: {len(holders)} neighbours revealed shares of its "
                f"{'self-mask seed' if kind == SELF_MASK_SEED else 'secret key'}, threshold {t}"
            )
        holders = holders[:t]
        points = [share_point(rnd.ids[h]) for h in holders]
        secret = shamir.reconstruct(points, list(reveal(int(u), holders, kind)))
        if kind == SELF_MASK_SEED:
            total -= prg(secret, size, rnd.bits)
            continue
        for v in rnd.neighbours[u]:
            if not sent[v]:
                continue
            m = prg(agree(secret, rnd.public_keys[v]), size, rnd.bits)
            # v added +m if it precedes u, -m otherwise; undo that.
            total = total - m if rnd.ids[v] < rnd.ids[u] else total + m
    return UnmaskResult(total & mask, sent, False, "", len(needed))
