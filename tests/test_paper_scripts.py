"""The paper scripts on top of the sweep: their tables equal the committed ones byte for byte.

Two kinds of check. Rows re-run: a script's cheapest committed runs are run again into a
temporary folder through the script's own grid and row functions, and their CSV lines are
compared with the committed lines (columns of measured wall-clock time left out: they are the
only numbers a re-run cannot repeat). Tables rebuilt: a script is run on a copy of its committed
run folders (every run finished, so nothing runs) or CSVs, and must write the committed files
again byte for byte. The reference of mcmahan2017, whose rows take minutes each, is the output
of the script before it moved onto the sweep on a 3-round grid (tests/data/paper/README.md).
"""

from __future__ import annotations

import importlib.util
import io
import math
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest

from fedsim import config as config_mod
from fedsim.analysis.sweep import sweep

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
RESULTS = ROOT / "results"
REFERENCE = Path(__file__).resolve().parent / "data" / "paper"
#: Measured wall-clock seconds: the one kind of number a re-run cannot reproduce.
WALL = {"wall_s", "wall_time_s"}


def script(name: str) -> ModuleType:
    """experiments/<name>/run.py as a module."""
    spec = importlib.util.spec_from_file_location(
        f"paper_{name}", ROOT / "experiments" / name / "run.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(module: ModuleType, monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["run.py", *argv])
    module.main()


def rerun(module: ModuleType, config: Path, names: list[str], points: list, out: Path, **kw):
    """Run the named points of a script's grid into ``out``; their outcomes, in that order."""
    chosen = [p for p in points if p.name in names]
    assert [p.name for p in chosen] == names
    return sweep(config, points=chosen, out_dir=out, tables=False, plots=False, log=None, **kw).runs


def csv_lines(frame: pd.DataFrame, float_format: str | None = None) -> list[str]:
    return frame.to_csv(index=False, float_format=float_format).splitlines()


def committed_lines(
    path: Path, key: str, values: list[str], drop: set[str] = frozenset()
) -> list[str]:
    """The committed CSV lines whose ``key`` column is one of ``values`` (in that order),
    without the ``drop`` columns; the header first."""
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    keep = [i for i, h in enumerate(head) if h not in drop]
    column = head.index(key)
    rows = {}
    for line in lines[1:]:
        cells = next(
            iter(
                pd.read_csv(
                    io.StringIO(line), header=None, dtype=str, keep_default_na=False
                ).itertuples(index=False)
            )
        )
        rows[cells[column]] = line
    return [_pick(lines[0], keep), *(_pick(rows[v], keep) for v in values)]


def _pick(line: str, keep: list[int]) -> str:
    cells = next(
        iter(
            pd.read_csv(
                io.StringIO(line), header=None, dtype=str, keep_default_na=False
            ).itertuples(index=False)
        )
    )
    out = io.StringIO()
    pd.DataFrame([[cells[i] for i in keep]]).to_csv(out, index=False, header=False)
    return out.getvalue().rstrip("\n")


def same_files(a: Path, b: Path, names: list[str]) -> None:
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


# Plans and the McMahan table's choices -------------------------------------------------


MCMAHAN = script("mcmahan2017")
FEDPROX = script("fedprox2020")


@pytest.mark.parametrize(("table", "full"), [(1, False), (2, False), (2, True)])
def test_every_planned_mcmahan_run_is_a_valid_config(table: int, full: bool) -> None:
    points = MCMAHAN.points(table, full, 0.85, [])
    assert len(points) == sum(2 * len(r["lrs"]) for r in MCMAHAN.settings(table, full))
    for p in points:
        row = p.values
        cfg = config_mod.load(EXPERIMENTS / "mcmahan2017" / "base.toml", list(p.overrides))
        assert cfg.model.name == ("mlp" if row["model"] == "2nn" else "cnn")
        assert cfg.training.learning_rate == row["learning_rate"]
        assert cfg.training.local_epochs == row["E"]
        assert cfg.training.batch_size == (0 if row["B"] == "inf" else 10)
        assert cfg.server.clients_per_round == (10 if row["C"] == 0.1 else 1)
        assert cfg.partition.name == ("iid" if row["partition"] == "iid" else "shards")
        assert cfg.server.target_accuracy == 0.85
        iid = "iid" if row["partition"] == "iid" else "noniid"
        assert p.name == (
            f"{row['model']}_C{row['C']}_E{row['E']}_B{row['B']}_{iid}/lr{row['learning_rate']:g}"
        )


def test_mcmahan_table2_subset_is_part_of_the_full_grid() -> None:
    subset = {(r["E"], r["B"]): set(r["lrs"]) for r in MCMAHAN.settings(2)}
    full = {(r["E"], r["B"]): set(r["lrs"]) for r in MCMAHAN.settings(2, full=True)}
    assert set(subset) == {(1, "inf"), (5, "10")}
    assert set(full) == set(subset) | {(1, "10"), (20, "10")}
    for key, lrs in subset.items():
        assert lrs <= full[key], key
    assert len(MCMAHAN.settings(1)) == 4


def test_every_planned_fedprox_run_is_a_valid_config() -> None:
    points = FEDPROX.points(2, 200)
    # 2 seeds x 4 datasets x 5 straggler set-ups (0/50/90% at random, 50/90% by deadline) x 3
    assert len(points) == 2 * 4 * 5 * 3
    for p in points:
        cfg = config_mod.load(EXPERIMENTS / "fedprox2020" / "base.toml", list(p.overrides))
        assert cfg.server.rounds == 200
        assert cfg.experiment.seed == p.values["seed"]


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


# Rows re-run -------------------------------------------------------------------------------


SLOW = pytest.mark.slow


@SLOW
def test_privacy_fedavg_row_rerun_equals_committed_row(tmp_path: Path) -> None:
    m = script("privacy")
    done = rerun(m, m.HERE / "base.toml", ["FedAvg"], m.points(40), tmp_path)
    df = pd.DataFrame(m.record(o) for o in done).drop(columns=["wall_s"])
    want = committed_lines(RESULTS / "privacy" / "summary.csv", "run", ["FedAvg"], WALL)
    assert csv_lines(df, m.FLOAT) == want


@SLOW
def test_health_silo_row_rerun_equals_committed_row(tmp_path: Path) -> None:
    m = script("health")
    names = ["centralised_pooled_records-seed0", "silo_0_alone-seed0"]
    done = rerun(m, m.FEDERATED, names, m.points(1), tmp_path, models=True)
    df = pd.DataFrame(m.record(o) for o in done)
    want = committed_lines(RESULTS / "health" / "runs.csv", "run_dir", [f"runs/{n}" for n in names])
    assert csv_lines(df, m.FLOAT) == want


@SLOW
def test_traffic_local_city_rerun_equals_committed_rows(tmp_path: Path) -> None:
    m = script("traffic")
    (o,) = rerun(m, m.CONFIG, ["local_city0-seed0"], m.points(1), tmp_path, models=True)
    want = committed_lines(RESULTS / "traffic" / "runs.csv", "run_dir", ["runs/local_city0-seed0"])
    assert csv_lines(pd.DataFrame([m.run_row(o)]), m.FLOAT) == want
    scores = pd.DataFrame(m.city_rows(0, "local only", o.run.config, o.model))
    per_city = (RESULTS / "traffic" / "per_city.csv").read_text().splitlines()
    assert csv_lines(scores, m.FLOAT)[1:] == [
        line for line in per_city if line.startswith("0,local only,0,")
    ]


@SLOW
def test_fedprox_fedavg_90_percent_stragglers_rerun_equals_committed_row(tmp_path: Path) -> None:
    m = script("fedprox2020")
    name = "synthetic_iid/stragglers_90/FedAvg-seed0"
    (o,) = rerun(m, m.HERE / "base.toml", [name], m.points(1, 200), tmp_path)
    want = committed_lines(RESULTS / "fedprox2020" / "runs.csv", "run", [f"runs/{name}"])
    assert csv_lines(pd.DataFrame([m.record(o)])) == want


@SLOW
def test_robust_diverging_run_rerun_equals_committed_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = script("robust")
    argv = [
        "--attacks",
        "sign_flip",
        "--fractions",
        "0.3",
        "--aggregators",
        "mean",
        "--seeds",
        "1",
        "--rounds",
        "10",
        "--out",
        str(tmp_path),
    ]
    run_main(m, monkeypatch, *argv)
    run_main(m, monkeypatch, "--table", "--out", str(tmp_path))
    name = "sign_flip_f0.3_mean_s1_r10"
    want = committed_lines(RESULTS / "robust" / "summary.csv", "run", [name], WALL)
    got = pd.read_csv(tmp_path / "summary.csv", dtype=str, keep_default_na=False)
    assert csv_lines(got.drop(columns=["wall_time_s"])) == want
    assert got["diverged_at_round"].tolist() == ["7"]


# Tables rebuilt from the committed runs ----------------------------------------------------


@SLOW
def test_robust_tables_rebuilt_from_committed_runs_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(RESULTS / "robust" / "runs", tmp_path / "runs")
    run_main(script("robust"), monkeypatch, "--table", "--out", str(tmp_path))
    same_files(RESULTS / "robust", tmp_path, ["summary.csv", "grid_r10.md", "grid_r30.md"])


@SLOW
def test_async_tables_rebuilt_from_committed_runs_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(RESULTS / "async" / "runs", tmp_path / "runs")
    run_main(script("async"), monkeypatch, "--out", str(tmp_path))
    same_files(
        RESULTS / "async", tmp_path, ["time_to_target.csv", "summary.md", "accuracy_vs_time.csv"]
    )


@SLOW
def test_adaptive_opt_tables_rebuilt_from_committed_runs_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = "synthetic_1_1"
    shutil.copytree(RESULTS / "adaptive_opt" / task, tmp_path / task)
    run_main(script("adaptive_opt"), monkeypatch, "--only", task, "--out", str(tmp_path))
    csvs = sorted(
        str(p.relative_to(RESULTS / "adaptive_opt"))
        for p in (RESULTS / "adaptive_opt" / task).rglob("*.csv")
    )
    assert len(csvs) > 20
    same_files(RESULTS / "adaptive_opt", tmp_path, csvs)


@SLOW
def test_mcmahan_tables_equal_the_old_script_on_a_three_round_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = REFERENCE / "mcmahan2017"
    shutil.copytree(ref / "runs", tmp_path / "runs")
    argv = [
        "--table",
        "1",
        "--target",
        "0.6",
        "--set",
        "server.rounds=3",
        "--set",
        "runtime.backend='local'",
    ]
    run_main(script("mcmahan2017"), monkeypatch, *argv, "--out", str(tmp_path))
    same_files(ref, tmp_path, ["table1.csv", "table1.md", "table1_all_learning_rates.csv"])


@pytest.mark.parametrize(
    ("name", "inputs", "outputs"),
    [
        ("health", ["runs.csv"], ["runs.csv", "summary.csv", "summary.md"]),
        ("traffic", ["runs.csv", "per_city.csv"], ["summary.csv", "summary.md"]),
        ("scalability", ["runs.csv"], ["summary.csv"]),
    ],
)
def test_tables_only_rebuilds_the_committed_summary(
    name: str,
    inputs: list[str],
    outputs: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for f in inputs:
        shutil.copy(RESULTS / name / f, tmp_path / f)
    run_main(script(name), monkeypatch, "--tables-only", "--out", str(tmp_path))
    same_files(RESULTS / name, tmp_path, outputs)


def test_fedprox_tables_rebuilt_from_committed_runs_csv_are_identical(tmp_path: Path) -> None:
    m = script("fedprox2020")
    m.tables(pd.read_csv(RESULTS / "fedprox2020" / "runs.csv"), tmp_path)
    same_files(
        RESULTS / "fedprox2020", tmp_path, ["runs.csv", "summary.csv", "summary.md", "headline.md"]
    )
