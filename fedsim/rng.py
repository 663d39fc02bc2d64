"""Keyed randomness: every draw is a pure function of (seed, round, client id, purpose).

Two tools. :func:`generator` gives a numpy Generator for a key tuple (through SeedSequence),
for draws whose size is known up front (a client's shuffles, a round's selection).
:func:`uniform` hashes (seed, round, purpose, client ids) to uniforms in [0, 1) without any
state, vectorised over client ids, for per-client-per-round draws (dropout, jitter,
availability): the value a client gets never depends on which other clients were drawn, in
which order, or on which worker.
"""

from __future__ import annotations

from enum import IntEnum, unique

import numpy as np


# unique: two purposes sharing a value would silently share their random streams.
@unique
class Purpose(IntEnum):
    SELECT = 1
    DROPOUT = 2
    DROP_POINT = 3
    JITTER = 4
    SHUFFLE = 5
    ONLINE = 6
    PROFILE = 7
    PHASE = 8
    INIT = 9
    EVAL_CLIENTS = 10
    DATA = 11
    SIZES = 12
    STRAGGLER = 13
    PARTITION = 14
    FAULT_NAN = 15
    BYZANTINE = 16
    NOISY_CLIENT = 17
    LABEL_NOISE = 18
    ATTACK_NOISE = 19
    ASYNC_PICK = 21
    ZONE = 22
    QSGD = 23  # stochastic rounding of QSGD levels
    RANDK = 24  # a random-k mask seed
    PARTY_PROFILE = 25
    VERTICAL_DATA = 26
    VERTICAL_SPLIT = 27
    VERTICAL_INIT = 28
    VERTICAL_SHUFFLE = 29
    TRANSFER_DATA = 30  # the generated two-party task of a transfer run
    TRANSFER_INIT = 31
    TRANSFER_SHUFFLE = 32
    SELECT_BY_SAMPLES = 50  # server.sampling = 'by_samples': draws with replacement
    # How many epochs a partially working straggler completes. Its value, STRAGGLER + 1000, is
    # the stream it has always drawn from (committed results depend on it); normal() refuses
    # STRAGGLER, whose second uniform this stream would be.
    STRAGGLER_EPOCHS = 1013
    # Async fallback: the order in which busy-filtered candidates are picked. Its value,
    # ASYNC_PICK + 1000, is the stream it has always drawn from (as STRAGGLER_EPOCHS above).
    ASYNC_PICK_ORDER = 1021


# normal() keys its second uniform by purpose + this offset: a purpose whose offset stream is
# another purpose's cannot draw normals (normal() raises), so no two draws share a stream.
NORMAL_OFFSET = 1000
_VALUES = frozenset(int(p) for p in Purpose)


def generator(seed: int, *keys: int) -> np.random.Generator:
    """A Generator determined by ``(seed, *keys)`` alone."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *map(int, keys)])))


_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _mix(z: np.ndarray) -> np.ndarray:
    # splitmix64 finaliser: a bijection on uint64 with full avalanche.
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _mix_int(z: int) -> int:
    # _mix on one Python int (64-bit wrap-around by masking): the same bits, without arrays.
    m = 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


def _key(seed: int, round_: int, purpose: int) -> np.uint64:
    m = 0xFFFFFFFFFFFFFFFF
    k = _mix_int(seed & m)
    k = _mix_int(k ^ (round_ & m))
    return np.uint64(_mix_int(k ^ int(purpose)))


def uniform(seed: int, round_: int, purpose: int, ids: np.ndarray) -> np.ndarray:
    """Uniform float64 in [0, 1), one per client id, keyed by (seed, round, purpose, id)."""
    ids = np.asarray(ids, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = _mix(ids * np.uint64(0x9E3779B97F4A7C15) + _key(seed, round_, purpose))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normal(seed: int, round_: int, purpose: int, ids: np.ndarray) -> np.ndarray:
    """Standard normal float64, one per client id, keyed like :func:`uniform` (Box-Muller)."""
    if int(purpose) + NORMAL_OFFSET in _VALUES:
        taken = Purpose(int(purpose) + NORMAL_OFFSET).name
        raise ValueError(f"purpose {int(purpose)} cannot draw normals: {taken} uses its stream")
    u1 = uniform(seed, round_, purpose, ids)
    u2 = uniform(seed, round_, purpose + NORMAL_OFFSET, ids)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
