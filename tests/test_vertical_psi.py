"""Diffie-Hellman PSI: the exact intersection, aligned orders, no raw IDs on the wire."""

from __future__ import annotations

import numpy as np

from fedsim.vertical import psi


def test_rfc3526_group_is_a_safe_prime_and_hashes_land_in_the_order_q_subgroup():
    assert psi.P.bit_length() == 2048 and psi.P == 2 * psi.Q + 1
    assert pow(3, psi.P - 1, psi.P) == 1 and pow(5, psi.Q * 2, psi.P) == 1
    for item in ("C00000001", "C00000002", ""):
        h = psi.hash_to_group(item)
        assert 1 < h < psi.P and pow(h, psi.Q, psi.P) == 1
    assert psi.hash_to_group("a") != psi.hash_to_group("b")


def test_two_parties_get_exactly_the_intersection_in_the_same_order():
    rng = np.random.default_rng(3)
    universe = [f"C{k:08d}" for k in rng.choice(10**6, 120, replace=False)]
    x, y = universe[:80], universe[50:]
    rng.shuffle(y)
    (ia, ib), transcript = psi.intersect(("bank", x), [("shop", y)])
    got_a, got_b = [x[i] for i in ia], [y[i] for i in ib]
    assert got_a == got_b
    assert set(got_a) == set(x) & set(y) and len(got_a) == 30
    assert transcript.exponentiations == {"bank": 80 + 70, "shop": 70 + 80}


def test_three_parties_align_on_ids_all_of_them_hold():
    a = [f"id{k}" for k in range(40)]
    b = [f"id{k}" for k in range(20, 70)]
    c = [f"id{k}" for k in range(0, 60, 2)]
    idx, _ = psi.intersect(("a", a), [("b", b), ("c", c)])
    lists = [[ids[i] for i in ix] for ids, ix in zip((a, b, c), idx, strict=True)]
    assert lists[0] == lists[1] == lists[2]
    assert set(lists[0]) == {f"id{k}" for k in range(20, 40, 2)}


def test_messages_never_carry_raw_or_merely_hashed_ids():
    x = [f"C{k:08d}" for k in range(30)]
    y = [f"C{k:08d}" for k in range(15, 45)]
    _, transcript = psi.intersect(("bank", x), [("shop", y)])
    forbidden = set()
    for item in x + y:
        forbidden |= {int.from_bytes(item.encode(), "big"), psi.hash_to_group(item)}
        forbidden |= {int(item[1:])}
    blinded = [m for m in transcript.messages if m.what != "aligned positions"]
    sent = [v for m in blinded for v in m.payload]
    assert len(sent) == 30 + 30 + 30 and not forbidden & set(sent)
    assert all(1 < v < psi.P for v in sent)
    text = repr([m.payload for m in transcript.messages])
    assert not any(item in text for item in x + y)
    # Only positions travel back, one 4-byte index per aligned person.
    (last,) = [m for m in transcript.messages if m.what == "aligned positions"]
    assert last.nbytes == 15 * psi.INDEX_BYTES


def test_bytes_count_every_group_element_at_256_bytes():
    x, y = [str(k) for k in range(10)], [str(k) for k in range(5, 25)]
    _, t = psi.intersect(("a", x), [("b", y)])
    sizes = {(m.sender, m.what): m.nbytes for m in t.messages}
    assert sizes[("a", "blinded ids")] == 10 * 256
    assert sizes[("b", "blinded ids")] == 20 * 256
    assert sizes[("b", "re-blinded ids")] == 10 * 256
