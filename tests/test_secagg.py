"""Secure aggregation: exact sums under dropout, aborts, uniform masks, bytes, graph, Shamir."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from fedsim.privacy import dp, secagg, shamir
from fedsim.privacy.secagg import (
    ADVERTISE_KEYS,
    MASKED_INPUT,
    NUM_PROTOCOL_ROUNDS,
    SHARE_KEYS,
    UNMASKING,
)
from fedsim.privacy.secagg_messages import (
    MessageSizes,
    extra_round_trip_s,
    pack,
    protocol_bytes,
    protocol_round_times,
    run_protocol,
    unpack,
)

N, P, BITS = 100, 1000, 32
IDS = np.arange(5000, 5000 + 3 * N, 3)  # cohort ids need not be contiguous


def _inputs(seed: int = 0, n: int = N, p: int = P, bits: int = BITS) -> np.ndarray:
    x = np.random.default_rng(seed).uniform(-1.2, 1.2, (n, p))  # some beyond the clip range
    return secagg.quantize(x, bits, 1.0, n)


def _dropout(fraction: float, seed: int = 0, n: int = N) -> np.ndarray:
    """Drop ``fraction`` of the clients, each after a random protocol round (0-3 finished)."""
    rng = np.random.default_rng(seed)
    completed = np.full(n, NUM_PROTOCOL_ROUNDS, dtype=np.int8)
    dropped = rng.choice(n, round(fraction * n), replace=False)
    completed[dropped] = rng.integers(0, NUM_PROTOCOL_ROUNDS, len(dropped))
    return completed


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3])
def test_unmasked_sum_equals_plain_fixed_point_sum(fraction):
    completed = _dropout(fraction, seed=1)
    rnd = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    x = _inputs()
    run = run_protocol(rnd, x)
    sent = completed > MASKED_INPUT
    assert not run.result.aborted
    np.testing.assert_array_equal(run.result.included, sent)
    np.testing.assert_array_equal(run.result.total, secagg.modular_sum(x[sent], BITS))
    # Clients that dropped after sending their masked input are in the sum; those that dropped
    # after ShareKeys are not, but their pair masks had to be removed.
    if fraction:
        assert (completed == UNMASKING).any() and (completed == MASKED_INPUT).any()


def test_masked_partial_sums_combine_in_any_grouping():
    completed = _dropout(0.3, seed=2)
    rnd = secagg.setup_round(IDS, seed=4, round_=3, bits=BITS, completed=completed)
    x = _inputs(2)
    senders = np.flatnonzero(completed > MASKED_INPUT)
    # Workers mask their chunks' clients and return partial sums; the server adds them.
    chunks = np.array_split(senders[::-1], 7)
    partial = [secagg.masked_sum(rnd, rnd.ids[c], x[c]) for c in chunks]
    total = secagg.modular_sum(np.stack(partial), BITS)
    result = secagg.unmask(rnd, total)
    assert not result.aborted
    np.testing.assert_array_equal(result.total, secagg.modular_sum(x[senders], BITS))
    np.testing.assert_array_equal(result.total, run_protocol(rnd, x).result.total)


@pytest.mark.parametrize("bits", [13, 20, 64])
def test_exact_sum_for_other_word_sizes_and_the_complete_graph(bits):
    n = 12
    completed = _dropout(0.25, seed=3, n=n)
    completed[completed <= SHARE_KEYS] = UNMASKING  # keep enough survivors for a small cohort
    rnd = secagg.setup_round(
        np.arange(n), seed=1, round_=1, bits=bits, neighbours=n, completed=completed
    )
    assert rnd.degree == n - 1
    x = _inputs(3, n=n, p=257, bits=bits)
    run = run_protocol(rnd, x)
    assert not run.result.aborted
    np.testing.assert_array_equal(run.result.total, secagg.modular_sum(x[completed > 2], bits))


def test_round_aborts_when_too_few_neighbours_reveal_shares():
    # 60% of the clients vanish after sending their masked inputs: each survivor's self-mask seed
    # needs t = 35 of its 68 neighbours' shares, and about 27 are left.
    completed = np.full(N, NUM_PROTOCOL_ROUNDS, dtype=np.int8)
    completed[np.random.default_rng(0).choice(N, 60, replace=False)] = UNMASKING
    rnd = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    assert (rnd.degree, rnd.threshold) == (68, 35)
    run = run_protocol(rnd, _inputs())
    assert run.result.aborted and run.result.total is None
    assert "neighbours revealed shares" in run.result.reason
    assert "threshold 35" in run.result.reason


def test_round_aborts_when_fewer_than_t_masked_inputs_arrive():
    completed = np.full(N, MASKED_INPUT, dtype=np.int8)
    completed[:20] = NUM_PROTOCOL_ROUNDS
    rnd = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    result = secagg.unmask(rnd, secagg.masked_sum(rnd, rnd.ids[:20], _inputs()[:20]))
    assert result.aborted
    assert result.reason == "20 masked inputs received, threshold 35"
    # A stricter minimum (e.g. the cohort distributed noise was calibrated to) aborts above t.
    completed[:85] = NUM_PROTOCOL_ROUNDS
    rnd = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    total = secagg.masked_sum(rnd, rnd.ids[:85], _inputs()[:85])
    assert not secagg.unmask(rnd, total).aborted
    result = secagg.unmask(rnd, total, min_inputs=90)
    assert result.aborted and result.reason == "85 masked inputs received, threshold 90"


def test_threshold_boundary_exactly_t_survivors_suffice():
    # Complete graph over 10 clients, t = 5 of 9 neighbours. With the first 6 clients answering
    # the unmasking round, client 0's self-mask seed has exactly 5 holders left; with 5, only 4.
    n = 10
    for answering, aborted in [(6, False), (5, True)]:
        completed = np.full(n, UNMASKING, dtype=np.int8)
        completed[:answering] = NUM_PROTOCOL_ROUNDS
        rnd = secagg.setup_round(
            np.arange(n), seed=0, round_=1, bits=16, neighbours=9, completed=completed
        )
        assert rnd.threshold == 5
        x = _inputs(4, n=n, p=50, bits=16)
        result = run_protocol(rnd, x).result
        assert result.aborted is aborted
        if not aborted:
            np.testing.assert_array_equal(result.total, secagg.modular_sum(x, 16))


@pytest.mark.parametrize("value", ["zeros", "max", "random"])
def test_a_masked_vector_is_uniform_whatever_the_input(value):
    bits, p = 8, 256 * 400
    rnd = secagg.setup_round(IDS, seed=8, round_=5, bits=bits)
    x = {
        "zeros": np.zeros(p, dtype=np.uint64),
        "max": secagg.quantize(np.ones(p), bits, 1.0, 1),
        "random": np.random.default_rng(1).integers(0, 256, p).astype(np.uint64),
    }[value]
    y = secagg.mask_input(rnd, 17, x)
    counts = np.bincount(y.astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    # ... and uncorrelated with the input, coordinate by coordinate.
    if value == "random":
        assert abs(np.corrcoef(x.astype(float), y.astype(float))[0, 1]) < 5 / math.sqrt(p)


def test_the_self_mask_alone_hides_an_input():
    # A client whose neighbours all dropped before ShareKeys has no pair masks: x + PRG(b) alone
    # is uniform.
    n = 3
    completed = np.array([4, 1, 1], dtype=np.int8)
    rnd = secagg.setup_round(np.arange(n), 0, 1, bits=16, neighbours=2, completed=completed)
    y = secagg.mask_input(rnd, 0, np.zeros(65536, dtype=np.uint64))
    assert stats.chisquare(np.bincount(y.astype(np.int64) >> 8, minlength=256)).pvalue > 1e-3


def test_measured_bytes_follow_the_protocol_formula():
    sizes = MessageSizes()
    rnd = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS)
    run = run_protocol(rnd, _inputs())
    k = rnd.degree
    assert k == 68
    ct = 2 * 4 + 2 * 32 + 28
    per_round_up = [2 * 32, k * ct, P * BITS // 8, k * (4 + 32)]
    per_round_down = [0, k * (4 + 2 * 32), k * ct, k * 4]
    assert sizes.encrypted_shares == ct == 100
    assert (run.bytes_up == per_round_up).all()
    assert (run.bytes_down == per_round_down).all()
    assert run.bytes_up.sum(axis=1)[0] == 64 + 6800 + 4000 + 2448
    assert run.bytes_down.sum(axis=1)[0] == 4624 + 6800 + 272


@pytest.mark.parametrize(("fraction", "bits"), [(0.1, 32), (0.3, 20), (0.5, 7)])
def test_measured_bytes_equal_formula_under_dropout(fraction, bits):
    completed = _dropout(fraction, seed=5)
    rnd = secagg.setup_round(IDS, seed=4, round_=9, bits=bits, neighbours=20, completed=completed)
    x = np.random.default_rng(5).integers(0, 2**bits, (N, P), dtype=np.uint64, endpoint=False)
    run = run_protocol(rnd, x)
    up, down = protocol_bytes(rnd, P)
    np.testing.assert_array_equal(run.bytes_up, up)
    np.testing.assert_array_equal(run.bytes_down, down)
    # A client that dropped before a round sends and receives nothing in it.
    for r in range(NUM_PROTOCOL_ROUNDS):
        assert (up[completed <= r, r] == 0).all() and (down[completed <= r, r] == 0).all()
    assert (up[completed > MASKED_INPUT, MASKED_INPUT] == math.ceil(P * bits / 8)).all()


def test_round_times_are_the_slowest_participants_transfers():
    n = 5
    completed = np.array([4, 4, 4, 3, 1], dtype=np.int8)
    rnd = secagg.setup_round(np.arange(n), 0, 1, bits=16, neighbours=4, completed=completed)
    up, down = protocol_bytes(rnd, 100)
    up_bw = np.array([100.0, 200.0, 50.0, 1000.0, 1.0])
    down_bw = np.array([1000.0, 100.0, 100.0, 1000.0, 1.0])
    times = protocol_round_times(rnd, up, down, up_bw, down_bw)
    # advertise_keys: 64 bytes up; everyone took part, the slowest is client 4 (1 byte/s).
    assert times[ADVERTISE_KEYS] == pytest.approx(64.0)
    # share_keys: clients 0-3; 4 neighbours advertised: 400 up and 4 * 68 = 272 down.
    expected = max(272 / down_bw[i] + 400 / up_bw[i] for i in range(4))
    assert times[SHARE_KEYS] == pytest.approx(expected)
    # unmasking: clients 0-2 upload a share (36 bytes with the id) for each of the 3 others that
    # sent shares (not client 4) and get the ids of the 3 others that sent masked inputs.
    expected = max(3 * 4 / down_bw[i] + 3 * 36 / up_bw[i] for i in range(3))
    assert times[UNMASKING] == pytest.approx(expected)
    assert extra_round_trip_s(times) == pytest.approx(
        times[ADVERTISE_KEYS] + times[SHARE_KEYS] + times[UNMASKING]
    )


@pytest.mark.parametrize(("n", "k"), [(10, 4), (100, 20), (1001, 30), (7, 6), (8, 10)])
def test_neighbour_graph_is_symmetric_with_requested_degree(n, k):
    degree = secagg.neighbour_count(n, k)
    assert degree == min(k, n - 1)
    g = secagg.neighbour_graph(n, degree, seed=3, round_=4)
    assert g.shape == (n, degree)
    adjacency = np.zeros((n, n), dtype=bool)
    adjacency[np.repeat(np.arange(n), degree), g.ravel()] = True
    assert (adjacency == adjacency.T).all()
    assert not adjacency.diagonal().any()
    assert (adjacency.sum(axis=1) == degree).all()  # no repeated neighbour
    np.testing.assert_array_equal(g, secagg.neighbour_graph(n, degree, seed=3, round_=4))
    if degree < n - 1:
        assert not np.array_equal(g, secagg.neighbour_graph(n, degree, seed=3, round_=5))


def test_automatic_degree_is_logarithmic():
    assert [secagg.neighbour_count(n) for n in (2, 10, 100, 1000, 10_000, 10**6)] == [
        1,
        9,
        68,
        100,
        134,
        200,
    ]
    assert secagg.neighbour_count(100, 7) == 8  # rounded up to even
    assert secagg.threshold_count(68, 0.5) == 35
    assert secagg.threshold_count(9, 2 / 3) == 7
    assert secagg.threshold_count(4, 0.0) == 1


def test_any_t_shares_reconstruct_the_secret():
    rng = np.random.default_rng(0)
    secret = shamir.random_element(rng)
    t, xs = 5, list(range(1, 13))
    shares = shamir.split(secret, t, xs, rng)
    for _ in range(30):
        pick = sorted(rng.choice(len(xs), size=t + int(rng.integers(0, 3)), replace=False))
        assert shamir.reconstruct([xs[i] for i in pick], [shares[i] for i in pick]) == secret


def test_t_minus_one_shares_are_consistent_with_every_secret():
    rng = np.random.default_rng(1)
    t, xs = 4, [3, 8, 11, 20]
    shares = shamir.split(12345, t, xs, rng)
    known_x, known_y = xs[: t - 1], shares[: t - 1]
    # For any candidate secret s there is exactly one value of the missing share making the
    # t shares decode to s: t - 1 shares rule out nothing.
    base = shamir.reconstruct([*known_x, xs[-1]], [*known_y, 0])
    slope = (shamir.reconstruct([*known_x, xs[-1]], [*known_y, 1]) - base) % shamir.PRIME
    assert slope != 0
    for candidate in [0, 1, 12345, shamir.PRIME - 1, shamir.random_element(rng)]:
        y = (candidate - base) * pow(slope, -1, shamir.PRIME) % shamir.PRIME
        assert shamir.reconstruct([*known_x, xs[-1]], [*known_y, y]) == candidate
    # With t - 1 shares of a degree t - 1 polynomial, interpolation does not give the secret.
    assert shamir.reconstruct(known_x, known_y) != 12345


def test_fixed_point_round_trip_and_no_wrap_at_the_extremes():
    for bits, n in [(16, 10), (32, 100), (64, 1000), (13, 3)]:
        levels = secagg.fixed_point_levels(bits, n)
        x = np.random.default_rng(bits).uniform(-2, 2, (n, 300))
        q = secagg.quantize(x, bits, 1.5, n)
        decoded = secagg.dequantize(secagg.modular_sum(q, bits), bits, 1.5, n)
        # Half a level of rounding per client, plus float64 summation error of the reference.
        bound = n * 0.5 * 1.5 / levels + 1e-12
        np.testing.assert_array_less(np.abs(decoded - np.clip(x, -1.5, 1.5).sum(axis=0)), bound)
        for extreme in (1.5, -1.5):
            full = secagg.quantize(np.full((n, 4), extreme), bits, 1.5, n)
            total = secagg.dequantize(secagg.modular_sum(full, bits), bits, 1.5, n)
            np.testing.assert_allclose(total, n * extreme, rtol=1e-12)
    with pytest.raises(ValueError):
        secagg.fixed_point_levels(8, 200)


@pytest.mark.parametrize("bits", [7, 13, 16, 32, 33, 64])
def test_pack_round_trips_and_has_formula_size(bits):
    v = np.random.default_rng(bits).integers(0, 2**bits, 1001, dtype=np.uint64, endpoint=False)
    data = pack(v, bits)
    assert len(data) == math.ceil(1001 * bits / 8)
    np.testing.assert_array_equal(unpack(data, bits, 1001), v)


def test_protocol_is_deterministic():
    completed = _dropout(0.2, seed=6)
    a = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    b = secagg.setup_round(IDS, seed=4, round_=2, bits=BITS, completed=completed)
    assert a.public_keys == b.public_keys
    x = _inputs(6)
    np.testing.assert_array_equal(secagg.mask_input(a, 3, x[3]), secagg.mask_input(b, 3, x[3]))
    other = secagg.setup_round(IDS, seed=4, round_=3, bits=BITS, completed=completed)
    assert not np.array_equal(secagg.mask_input(a, 3, x[3]), secagg.mask_input(other, 3, x[3]))


def test_dp_and_secure_aggregation_compose():
    # clip -> distributed noise -> quantise -> mask -> sum -> unmask -> decode -> average.
    seed, round_, clip, z, n, p = 7, 3, 0.5, 1.0, 40, 300
    ids = np.arange(n)
    completed = _dropout(0.1, seed=7, n=n)
    rnd = secagg.setup_round(ids, seed, round_, bits=32, completed=completed)
    deltas = np.random.default_rng(7).standard_normal((n, p)) * 0.1
    clipped, _ = dp.clip_updates(deltas, clip)
    sigma = dp.distributed_noise_stddev(z, clip, rnd.threshold)
    noisy = clipped + dp.client_noise(
        ids, p, sigma, seed, round_, dp.PrivacyPurpose.DISTRIBUTED_NOISE
    )
    c = 6 * clip  # coordinates of clipped + noise stay far inside +-c
    result = run_protocol(rnd, secagg.quantize(noisy, 32, c, n)).result
    assert not result.aborted
    average = secagg.dequantize(result.total, 32, c, n) / n
    sent = result.included
    expected = noisy[sent].sum(axis=0) / n
    np.testing.assert_allclose(average, expected, atol=n * c / secagg.fixed_point_levels(32, n))
