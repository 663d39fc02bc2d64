"""The paper-reproduction scripts: every run they plan is a valid config, and the McMahan table
picks the best learning rate and computes speedups the paper's way."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from fedsim import config as config_mod

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def load_script(name: str) -> ModuleType:
    path = EXPERIMENTS / name / "run.py"
    spec = importlib.util.spec_from_file_location(f"{name}_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MCMAHAN = load_script("mcmahan2017")
FEDPROX = load_script("fedprox2020")


@pytest.mark.parametrize(("table", "full"), [(1, False), (2, False), (2, True)])
def test_every_planned_mcmahan_run_is_a_valid_config(table: int, full: bool) -> None:
    rows = MCMAHAN.settings(table, full)
    for row in rows:
        for iid in (True, False):
            for lr in row["lrs"]:
                over = MCMAHAN.overrides(row, iid, lr, 0.85)
                cfg = config_mod.load(EXPERIMENTS / "mcmahan2017" / "base.toml", over)
                assert cfg.model.name == ("mlp" if row["model"] == "2nn" else "cnn")
                assert cfg.training.learning_rate == lr
                assert cfg.training.local_epochs == row["E"]
                assert cfg.training.batch_size == (0 if row["B"] == "inf" else 10)
                assert cfg.server.clients_per_round == (10 if row["C"] == 0.1 else 1)
                assert cfg.partition.name == ("iid" if iid else "shards")
                assert cfg.server.target_accuracy == 0.85


def test_mcmahan_table2_subset_is_part_of_the_full_grid() -> None:
    subset = {(r["E"], r["B"]): set(r["lrs"]) for r in MCMAHAN.settings(2)}
    full = {(r["E"], r["B"]): set(r["lrs"]) for r in MCMAHAN.settings(2, full=True)}
    assert set(subset) == {(1, "inf"), (5, "10")}
    assert set(full) == set(subset) | {(1, "10"), (20, "10")}
    for key, lrs in subset.items():
        assert lrs <= full[key], key
    assert len(MCMAHAN.settings(1)) == 4


def test_every_planned_fedprox_run_is_a_valid_config() -> None:
    runs = FEDPROX.grid(2, 200)
    # 2 seeds x 4 datasets x 5 straggler set-ups (0/50/90% at random, 50/90% by deadline) x 3
    assert len(runs) == 2 * 4 * 5 * 3
    for _, over in runs:
        cfg = config_mod.load(EXPERIMENTS / "fedprox2020" / "base.toml", over)
        assert cfg.server.rounds == 200


def run_row(
    partition: str, B: str, lr: float, rounds: float, best: float, lower: float, **kw
) -> dict:
    return {
        "model": "cnn",
        "C": 0.1,
        "E": 1 if B == "inf" else 5,
        "B": B,
        "partition": partition,
        "learning_rate": lr,
        "rounds_run": kw.get("rounds_run", 100),
        "run": f"runs/{partition}{B}{lr}",
        "diverged": kw.get("diverged", False),
        "rounds_to_target": rounds,
        "rounds_to_lower": lower,
        "best_accuracy": best,
    }


def test_mcmahan_best_rate_and_speedup() -> None:
    runs = pd.DataFrame(
        [
            run_row("iid", "inf", 0.1, 300.0, 0.86, 100.0),
            run_row("iid", "inf", 0.2, 250.0, 0.87, 120.0),
            run_row("iid", "10", 0.05, 20.0, 0.90, 4.0),
            run_row("iid", "10", 0.1, 12.5, 0.91, 5.0),
            # Diverged: never the best, however few rounds it ran.
            run_row("iid", "10", 0.2, math.nan, math.nan, math.nan, diverged=True),
            # FedSGD misses the first target in its 200 rounds but reaches the second.
            run_row("non-iid", "inf", 0.1, math.nan, 0.82, 150.0, rounds_run=200),
            # Not reached: ranked by best accuracy.
            run_row("non-iid", "10", 0.05, math.nan, 0.83, 40.0),
            run_row("non-iid", "10", 0.1, 50.0, 0.86, 30.0),
        ]
    )
    best = MCMAHAN.best_per_setting(runs).set_index(["partition", "B"])
    assert best.loc[("iid", "inf"), "learning_rate"] == 0.2
    assert best.loc[("iid", "10"), "learning_rate"] == 0.1
    assert best.loc[("iid", "10"), "speedup"] == pytest.approx(250.0 / 12.5)
    assert best.loc[("iid", "inf"), "speedup"] == pytest.approx(1.0)
    assert best.loc[("non-iid", "10"), "learning_rate"] == 0.1
    # Speedups at the second target use the rate chosen by the first.
    assert best.loc[("iid", "10"), "speedup_lower"] == pytest.approx(120.0 / 5.0)
    assert not best.loc[("iid", "10"), "speedup_is_bound"]
    # FedSGD missed 85% within 200 rounds: the speedup is at least 200 / 50.
    assert best.loc[("non-iid", "10"), "speedup"] == pytest.approx(200 / 50.0)
    assert best.loc[("non-iid", "10"), "speedup_is_bound"]
    assert best.loc[("non-iid", "10"), "speedup_lower"] == pytest.approx(150.0 / 30.0)
    assert not best.loc[("non-iid", "10"), "speedup_lower_is_bound"]
    assert math.isnan(best.loc[("non-iid", "inf"), "speedup"])
    # The paper's MNIST numbers beside ours: FedSGD 626 / 483, E=5 B=10 20 / 229.
    assert best.loc[("iid", "inf"), "paper_mnist_rounds"] == 626
    assert best.loc[("non-iid", "inf"), "paper_mnist_rounds"] == 483
    assert best.loc[("iid", "10"), "paper_mnist_rounds"] == 20
    assert best.loc[("non-iid", "10"), "paper_mnist_rounds"] == 229


@pytest.mark.parametrize(
    ("accuracies", "cap", "diverged", "extend"),
    [
        ([0.5, 0.7, 0.8], 5, False, True),  # stopped at a lower cap, target not reached
        ([0.5, 0.7, 0.8], 3, False, False),  # already at the cap
        ([0.5, 0.9], 5, False, False),  # reached the target: stopped on purpose
        ([0.5, 0.7], 5, True, False),  # diverged: more rounds would not help
    ],
)
def test_raising_a_cap_extends_only_runs_that_stopped_short(
    tmp_path: Path, accuracies: list[float], cap: int, diverged: bool, extend: bool
) -> None:
    rounds = pd.DataFrame({"round": range(1, len(accuracies) + 1), "test_accuracy": accuracies})
    rounds.to_csv(tmp_path / "rounds.csv", index=False)
    (tmp_path / "summary.json").write_text("{}")
    if diverged:
        (tmp_path / "DIVERGED").write_text("diverged\n")
    assert MCMAHAN.short_of_cap(tmp_path, cap, 0.85) is extend
    assert not MCMAHAN.short_of_cap(tmp_path / "missing", cap, 0.85)
