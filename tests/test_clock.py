"""The virtual clock on a hand-built population whose every time is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import small_config, write

from fedsim.clock import COMPLETED, DROPPED, STRAGGLER, plan_round
from fedsim.config import PopulationConfig
from fedsim.population import Population

# Times with model_bytes = update_bytes = 1000 and local_epochs = 2:
#   client 0: download 1000/1000 = 1 s, epoch 100/100 = 1 s, upload 1000/500 = 2 s -> 5 s
#   client 1: download 0.5 s, epoch 300/100 = 3 s, upload 1 s -> 7.5 s
#   client 2: download 1 s, epoch 50/50 = 1 s, upload 1 s -> 4 s
#   client 3: drops (dropout_rate 0.999999); its timeline would take 0.1 + 2 * 0.1 + 0.1 s
PROFILES = """\
client_id,speed,download_bandwidth,upload_bandwidth,dropout_rate
0,100,1000,500,0
1,100,2000,1000,0
2,50,1000,1000,0
3,1000,10000,10000,0.999999
"""
SIZES = np.array([100, 300, 50, 100])


@pytest.fixture
def population(tmp_path):
    csv = write(tmp_path / "profiles.csv", PROFILES)
    return Population(PopulationConfig(num_clients=4, profiles_csv=str(csv)), seed=1)


def plan(population, k, deadline, policy="drop"):
    return plan_round(
        population,
        np.arange(4),
        SIZES,
        1,
        clients_per_round=k,
        local_epochs=2,
        deadline_s=deadline,
        straggler_policy=policy,
        model_bytes=1000,
        update_bytes=1000,
    )


def test_timeline_components_follow_profiles(population):
    p = plan(population, 2, 6.0)
    np.testing.assert_allclose(p.download_s, [1.0, 0.5, 1.0, 0.1])
    np.testing.assert_allclose(p.compute_s, [2.0, 6.0, 2.0, 0.2])
    np.testing.assert_allclose(p.upload_s, [2.0, 1.0, 1.0, 0.1])


def test_first_k_by_deadline_complete_and_round_ends_at_kth(population):
    p = plan(population, 2, 6.0)
    assert p.outcome.tolist() == [COMPLETED, STRAGGLER, COMPLETED, DROPPED]
    assert p.epochs_done.tolist() == [2, 0, 2, 0]
    assert p.duration_s == pytest.approx(5.0)
    assert p.bytes_down == 4000  # every selected client downloaded, dropped ones too
    assert p.bytes_up == 2000  # only the two completers upload


def test_round_runs_to_deadline_when_fewer_than_k_finish(population):
    p = plan(population, 3, 6.0, "drop")
    assert p.outcome.tolist() == [COMPLETED, STRAGGLER, COMPLETED, DROPPED]
    assert p.duration_s == pytest.approx(6.0)
    assert p.epochs_done.tolist() == [2, 0, 2, 0]
    assert p.bytes_up == 2000


def test_partial_policy_keeps_whole_epochs_done_by_deadline(population):
    # Client 1 has (6 - 0.5 - 1) / 3 = 1.5 epochs of time: it sends 1 whole epoch.
    p = plan(population, 3, 6.0, "partial")
    assert p.outcome.tolist() == [COMPLETED, STRAGGLER, COMPLETED, DROPPED]
    assert p.epochs_done.tolist() == [2, 1, 2, 0]
    assert p.bytes_up == 3000
    assert p.duration_s == pytest.approx(6.0)


def test_partial_work_is_at_least_one_epoch(population):
    # With a 2 s deadline client 1 fits no whole epoch, yet FedProx keeps one.
    p = plan(population, 3, 2.0, "partial")
    assert p.outcome.tolist() == [STRAGGLER, STRAGGLER, STRAGGLER, DROPPED]
    assert p.epochs_done.tolist() == [1, 1, 1, 0]


def test_without_deadline_everyone_not_dropped_completes(population):
    p = plan(population, 3, math.inf)
    assert p.outcome.tolist() == [COMPLETED, COMPLETED, COMPLETED, DROPPED]
    assert p.duration_s == pytest.approx(7.5)


def test_over_selection_keeps_exactly_k():
    cfg = small_config("population.dropout_rate=0.2", "server.deadline_s=inf")
    pop = Population(cfg.population, seed=5)
    sizes = np.full(cfg.population.num_clients, 100)
    for r in range(1, 30):
        ids = pop.select(r, 0.0, 30)
        p = plan_round(
            pop,
            ids,
            sizes[ids],
            r,
            clients_per_round=20,
            local_epochs=1,
            deadline_s=math.inf,
            straggler_policy="drop",
            model_bytes=10,
            update_bytes=10,
        )
        assert len(ids) == 30
        dropped = p.count(DROPPED)
        assert p.count(COMPLETED) == min(20, 30 - dropped)
        if dropped <= 10:
            # The round ends at the 20th finisher; later finishers are discarded.
            finish = p.download_s + p.compute_s + p.upload_s
            done = p.outcome == COMPLETED
            assert p.duration_s == pytest.approx(finish[done].max())
            assert np.all(finish[p.outcome == STRAGGLER] >= p.duration_s)


def test_plan_is_a_pure_function_of_seed_round_and_ids():
    cfg = small_config()
    pop = Population(cfg.population, seed=9)
    ids = np.array([3, 17, 50, 120])
    kw = dict(
        clients_per_round=4,
        local_epochs=2,
        deadline_s=5.0,
        straggler_policy="partial",
        model_bytes=2440,
        update_bytes=2440,
    )
    a = plan_round(pop, ids, np.full(4, 80), 7, **kw)
    b = plan_round(Population(cfg.population, seed=9), ids, np.full(4, 80), 7, **kw)
    np.testing.assert_array_equal(a.compute_s, b.compute_s)
    np.testing.assert_array_equal(a.outcome, b.outcome)
    # A client's draws do not depend on who else is in the cohort.
    c = plan_round(pop, ids[1:2], np.full(1, 80), 7, **{**kw, "clients_per_round": 1})
    assert c.compute_s[0] == a.compute_s[1]
    assert (c.outcome[0] == DROPPED) == (a.outcome[1] == DROPPED)


@pytest.mark.parametrize("policy", ["drop", "partial"])
def test_fraction_stragglers_follow_li_et_al(policy):
    cfg = small_config("population.dropout_rate=0.0", "server.deadline_s=inf")
    pop = Population(cfg.population, seed=2)
    seen_epochs = []
    for r in range(1, 200):
        ids = pop.select(r, 0.0, 10)
        p = plan_round(
            pop,
            ids,
            np.full(10, 50),
            r,
            clients_per_round=10,
            local_epochs=20,
            deadline_s=math.inf,
            straggler_policy=policy,
            model_bytes=100,
            update_bytes=100,
            straggler_fraction=0.9,
        )
        stragglers = p.outcome == STRAGGLER
        assert stragglers.sum() == 9 and p.count(COMPLETED) == 1
        assert (p.epochs_done[~stragglers] == 20).all()
        if policy == "drop":
            assert (p.epochs_done[stragglers] == 0).all()
            assert p.bytes_up == 100
        else:
            e = p.epochs_done[stragglers]
            assert ((e >= 1) & (e <= 19)).all()
            seen_epochs.extend(e.tolist())
            assert p.bytes_up == 1000
            ends = p.download_s + p.compute_s / 20 * p.epochs_done + p.upload_s
            assert p.duration_s == pytest.approx(ends.max())
    if policy == "partial":
        counts = np.bincount(seen_epochs, minlength=20)[1:]
        # Uniform over 1..19: every value appears, none far from 1/19 of the draws.
        assert counts.min() > 0
        np.testing.assert_allclose(counts / counts.sum(), 1 / 19, atol=0.03)
