"""The health and traffic scenarios: every planned run is a valid config that trains, and the
committed tables are the means of the committed runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_paper_scripts import script

from fedsim import config as config_mod
from fedsim.runner import prepare, run

ROOT = Path(__file__).resolve().parents[1]
HEALTH = script("health")
TRAFFIC = script("traffic")


def test_every_planned_health_run_builds_with_the_silos_of_the_federated_run() -> None:
    fed = prepare(config_mod.load(HEALTH.FEDERATED), HEALTH.HERE).dataset
    points = HEALTH.points(1)
    for p in points:
        name, group = p.values["run"], p.values["group"]
        exp = prepare(config_mod.load(p.config, list(p.overrides)), HEALTH.HERE)
        if group == "silo alone":
            k = int(name.split()[1])
            np.testing.assert_array_equal(exp.dataset.client_train(0)[1], fed.client_train(k)[1])
        elif group == "centralised":
            assert exp.dataset.client_sizes().tolist() == [fed.client_sizes().sum()]
    assert len(points) == 8 + 1 + HEALTH.SILOS


def test_every_planned_traffic_run_builds_and_local_runs_cover_every_city() -> None:
    cities = []
    for p in TRAFFIC.points(1):
        exp = prepare(config_mod.load(TRAFFIC.CONFIG, list(p.overrides)), TRAFFIC.HERE)
        assert exp.model.task == "regression"
        if exp.dataset.num_clients == 1 and not exp.dataset.pooled:
            cities += exp.dataset.cities.tolist()
    assert cities == list(range(TRAFFIC.CITIES))


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "experiments" / "health").glob("*.toml"))
    + sorted((ROOT / "experiments" / "traffic").glob("*.toml")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_scenario_configs_run_end_to_end(path: Path, tmp_path: Path) -> None:
    result = run(path, overrides=["server.rounds=2"], out_dir=tmp_path / "run")
    last = result.rounds.iloc[-1]
    if result.config.model.options.task == "regression":
        assert math.isfinite(last["test_rmse"]) and math.isnan(last["test_accuracy"])
    else:
        assert 0.5 < last["test_accuracy"] <= 1.0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rounds"] == 2


def test_committed_health_table_is_the_mean_of_the_committed_runs() -> None:
    out = ROOT / "results" / "health"
    runs = pd.read_csv(out / "runs.csv")
    table = pd.read_csv(out / "summary.csv").set_index("run")
    for name, group in runs.groupby("run"):
        assert table.loc[name, "accuracy"] == pytest.approx(group["accuracy"].mean(), rel=1e-5)
    for row in runs.itertuples():
        summary = json.loads((out / row.run_dir / "summary.json").read_text())
        assert summary["final_test_accuracy"] == pytest.approx(row.accuracy, rel=1e-5)


def test_committed_traffic_table_is_the_mean_of_the_per_city_scores() -> None:
    out = ROOT / "results" / "traffic"
    per_city = pd.read_csv(out / "per_city.csv")
    table = pd.read_csv(out / "summary.csv").set_index("method")
    means = per_city.groupby(["method", "seed"])["mae"].mean().groupby("method").mean()
    for method, value in means.items():
        assert table.loc[method, "mae"] == pytest.approx(value, rel=1e-5)
    # A federated run's own rounds.csv scores its model on all cities' test weeks at once.
    fed = pd.read_csv(out / "runs" / "FedAvg-seed0" / "rounds.csv").iloc[-1]
    assert 0 < fed["test_mae"] < fed["test_rmse"]
