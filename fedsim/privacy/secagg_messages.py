"""Secure aggregation's messages: their encodings, their bytes, and the time they add to a round.

:func:`run_protocol` plays the four protocol rounds in one process with real byte messages (the
server routes them; the shares the server unmasks with are the ones decoded from what survivors
sent), and counts every byte each client sends and receives. :func:`protocol_bytes` is the
closed form of those counts, cheap enough for every round of a run; the tests check that the two
agree for any dropout pattern.

Sizes are those of a deployment (:class:`MessageSizes`): X25519 public keys of 32 bytes, shares
of 256-bit secrets, AES-GCM's 12-byte nonce and 16-byte tag on each encrypted share. fedsim's own
simulated keys and shares are smaller and are carried zero-padded in those fields; encryption is
not performed (the ciphertext is the plaintext plus the overhead's bytes).

Per client u with a_u neighbours that advertised keys, s_u that sent shares and i_u that sent a
masked input, and P parameters of ``bits`` bits (Bonawitz et al. 2017, Sec. 6, with k
neighbours instead of n - 1 others):

    round             client -> server                    server -> client
    advertise_keys    2 key                               0
    share_keys        a_u (2 id + 2 share + aead)         a_u (id + 2 key)
    masked_input      ceil(P bits / 8)                    s_u (2 id + 2 share + aead)
    unmasking         s_u (id + share)                    i_u id

A client that drops before a protocol round neither receives nor sends in it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fedsim.privacy import secagg
from fedsim.privacy.secagg import (
    ADVERTISE_KEYS,
    MASKED_INPUT,
    NUM_PROTOCOL_ROUNDS,
    SECRET_KEY,
    SELF_MASK_SEED,
    SHARE_KEYS,
    UNMASKING,
    SecAggRound,
    UnmaskResult,
)


@dataclass(frozen=True)
class MessageSizes:
    """Bytes of each field of the protocol's messages."""

    client_id: int = 4
    public_key: int = 32  # X25519
    share: int = 32  # a Shamir share of a 256-bit secret
    aead_overhead: int = 28  # AES-GCM: 12-byte nonce + 16-byte tag

    @property
    def encrypted_shares(self) -> int:
        """One ciphertext of ShareKeys: (sender id, recipient id, share of sk, share of b)."""
        return 2 * self.client_id + 2 * self.share + self.aead_overhead


def masked_input_bytes(num_parameters: int, bits: int) -> int:
    """Bytes of one masked input: P values of ``bits`` bits, packed."""
    return math.ceil(num_parameters * bits / 8)


def pack(values: np.ndarray, bits: int) -> bytes:
    """P values < 2^bits as ceil(P bits / 8) little-endian bytes."""
    v = np.asarray(values, dtype=np.uint64)
    if bits in (8, 16, 32, 64):
        return v.astype(f"<u{bits // 8}").tobytes()
    planes = np.unpackbits(v.astype("<u8").view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    return np.packbits(planes[:, :bits].reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`: ``count`` uint64 values."""
    if bits in (8, 16, 32, 64):
        return np.frombuffer(data, dtype=f"<u{bits // 8}", count=count).astype(np.uint64)
    planes = np.unpackbits(np.frombuffer(data, dtype=np.uint8), bitorder="little")
    full = np.zeros((count, 64), dtype=np.uint8)
    full[:, :bits] = planes[: count * bits].reshape(count, bits)
    return np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(count).astype(np.uint64)


def protocol_bytes(
    rnd: SecAggRound, num_parameters: int, sizes: MessageSizes = MessageSizes()
) -> tuple[np.ndarray, np.ndarray]:
    """Bytes each client sends and receives in each protocol round: (up, down), each (n, 4).

    The closed form of what :func:`run_protocol` measures (see the module's table).
    """
    n, nb = rnd.num_clients, rnd.neighbours
    advertised = rnd.reached(ADVERTISE_KEYS)[nb].sum(axis=1)
    shared = rnd.reached(SHARE_KEYS)[nb].sum(axis=1)
    sent = rnd.reached(MASKED_INPUT)[nb].sum(axis=1)
    up = np.zeros((n, NUM_PROTOCOL_ROUNDS), dtype=np.int64)
    down = np.zeros_like(up)
    up[:, ADVERTISE_KEYS] = 2 * sizes.public_key
    up[:, SHARE_KEYS] = advertised * sizes.encrypted_shares
    up[:, MASKED_INPUT] = masked_input_bytes(num_parameters, rnd.bits)
    up[:, UNMASKING] = shared * (sizes.client_id + sizes.share)
    down[:, SHARE_KEYS] = advertised * (sizes.client_id + 2 * sizes.public_key)
    down[:, MASKED_INPUT] = shared * sizes.encrypted_shares
    down[:, UNMASKING] = sent * sizes.client_id
    took_part = np.arange(NUM_PROTOCOL_ROUNDS)[None, :] < rnd.completed[:, None]
    return up * took_part, down * took_part


def protocol_round_times(
    rnd: SecAggRound,
    up: np.ndarray,
    down: np.ndarray,
    upload_bandwidth: np.ndarray,
    download_bandwidth: np.ndarray,
) -> np.ndarray:
    """Simulated seconds of each protocol round: its slowest participant's transfer time.

    Bandwidths are bytes/s per cohort member. Secure aggregation adds three round trips to a
    plain round (advertise_keys, share_keys, unmasking); the masked_input round is the plain
    round's upload (and its download rides with the model's), so its time belongs to the
    client's own timeline rather than to :func:`extra_round_trip_s`.
    """
    per_client = (
        down / np.asarray(download_bandwidth, dtype=np.float64)[:, None]
        + up / np.asarray(upload_bandwidth, dtype=np.float64)[:, None]
    )
    times = np.zeros(NUM_PROTOCOL_ROUNDS)
    for r in range(NUM_PROTOCOL_ROUNDS):
        active = rnd.completed > r
        if active.any():
            times[r] = per_client[active, r].max()
    return times


def extra_round_trip_s(round_times: np.ndarray) -> float:
    """Time secure aggregation adds to a round: its three extra round trips."""
    return float(round_times[ADVERTISE_KEYS] + round_times[SHARE_KEYS] + round_times[UNMASKING])


# --- the protocol with real messages ----------------------------------------------------------


def _field(value: int, sizes: MessageSizes) -> bytes:
    return int(value).to_bytes(sizes.share, "little")


def _client_id(index: int, sizes: MessageSizes) -> bytes:
    return int(index).to_bytes(sizes.client_id, "little")


@dataclass(frozen=True)
class ProtocolRun:
    """A protocol run with its measured traffic, per client (cohort order) and protocol round."""

    result: UnmaskResult
    bytes_up: np.ndarray  # (n, 4) int64
    bytes_down: np.ndarray  # (n, 4) int64


def run_protocol(
    rnd: SecAggRound, inputs: np.ndarray, sizes: MessageSizes = MessageSizes()
) -> ProtocolRun:
    """Play the four protocol rounds with byte messages routed by the server; count the bytes.

    ``inputs`` are the clients' fixed-point updates (n, P), uint64 < 2^bits, in cohort order;
    those of clients that never send a masked input are ignored.
    """
    n, num_parameters = inputs.shape
    nb = rnd.neighbours
    up = np.zeros((n, NUM_PROTOCOL_ROUNDS), dtype=np.int64)
    down = np.zeros_like(up)
    reached = [rnd.reached(r) for r in range(NUM_PROTOCOL_ROUNDS)]
    # The encryption key pair is simulated by its size only.
    encryption_key = bytes(sizes.public_key)

    adverts: dict[int, bytes] = {}
    for u in np.flatnonzero(reached[ADVERTISE_KEYS]):
        adverts[u] = encryption_key + int(rnd.public_keys[u]).to_bytes(sizes.public_key, "little")
        up[u, ADVERTISE_KEYS] += len(adverts[u])

    inbox: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    overhead = bytes(sizes.aead_overhead)
    for u in np.flatnonzero(reached[SHARE_KEYS]):
        recipients = [int(v) for v in nb[u] if v in adverts]
        for v in recipients:
            down[u, SHARE_KEYS] += len(_client_id(v, sizes) + adverts[v])
        sk_shares = secagg.shares_for(rnd, u, recipients, SECRET_KEY)
        b_shares = secagg.shares_for(rnd, u, recipients, SELF_MASK_SEED)
        for v, s_sk, s_b in zip(recipients, sk_shares, b_shares, strict=True):
            plaintext = _client_id(u, sizes) + _client_id(v, sizes)
            ciphertext = plaintext + _field(s_sk, sizes) + _field(s_b, sizes) + overhead
            up[u, SHARE_KEYS] += len(ciphertext)
            inbox[v].append((int(u), ciphertext))

    masked_total = np.zeros(num_parameters, dtype=np.uint64)
    for u in np.flatnonzero(reached[MASKED_INPUT]):
        down[u, MASKED_INPUT] += sum(len(c) for _, c in inbox[u])
        message = pack(secagg.mask_input(rnd, u, inputs[u]), rnd.bits)
        up[u, MASKED_INPUT] += len(message)
        masked_total += unpack(message, rnd.bits, num_parameters)

    revealed: dict[tuple[int, int, int], int] = {}
    start = 2 * sizes.client_id
    for u in np.flatnonzero(reached[UNMASKING]):
        survivors = [w for w, _ in inbox[u] if reached[MASKED_INPUT][w]]
        down[u, UNMASKING] += len(b"".join(_client_id(w, sizes) for w in survivors))
        for w, ciphertext in inbox[u]:
            kind = SELF_MASK_SEED if reached[MASKED_INPUT][w] else SECRET_KEY
            offset = start + (sizes.share if kind == SELF_MASK_SEED else 0)
            message = _client_id(w, sizes) + ciphertext[offset : offset + sizes.share]
            up[u, UNMASKING] += len(message)
            revealed[(w, int(u), kind)] = int.from_bytes(message[sizes.client_id :], "little")

    result = secagg.unmask(
        rnd,
        masked_total & np.uint64((1 << rnd.bits) - 1),
        reveal=lambda owner, holders, kind: [revealed[(owner, h, kind)] for h in holders],
    )
    return ProtocolRun(result, up, down)
