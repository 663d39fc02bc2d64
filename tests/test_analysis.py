"""Tests of the analysis layer on run folders written by hand (the simulator is not run)."""

from __future__ import annotations

import argparse
import copy
import json
import math
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tomli_w

from fedsim.analysis import (
    compare_runs,
    config_differences,
    group_seeds,
    load_run,
    load_runs,
    plot_accuracy_loss_vs_rounds,
    plot_accuracy_vs_bytes,
    plot_accuracy_vs_time,
    plot_client_times,
    plot_label_distribution,
    plot_round_outcomes,
    plot_runs,
    rounds_to_target,
    write_comparison,
)
from fedsim.analysis.compare import byte_unit
from fedsim.analysis.figure import time_unit
from fedsim.cli import build_parser

BASE_CONFIG: dict[str, Any] = {
    "experiment": {"name": "exp", "seed": 0},
    "data": {"dataset": "synthetic", "num_classes": 3},
    "partition": {"scheme": "dirichlet", "alpha": 0.5},
    "population": {
        "num_clients": 20,
        "dropout_rate": 0.1,
        "speed": {"tiers": ["fast", "slow"], "fast": 1.0},
    },
    "model": {"name": "mlp"},
    "training": {"local_epochs": 1, "batch_size": 32, "learning_rate": 0.1},
    "strategy": {"name": "fedavg"},
    "server": {"rounds": 4, "clients_per_round": 10},
    "runtime": {"backend": "serial", "workers": 1},
}

DOWN_PER_ROUND = 1_000_000  # 10 clients x 100 kB model
UP_PER_ROUND = 700_000  # 7 completed clients x 100 kB


def make_run(
    folder: Path,
    acc: list[float],
    *,
    seed: int = 0,
    strategy: dict[str, Any] | None = None,
    runtime: dict[str, Any] | None = None,
    round_s: float = 30.0,
    loss: list[float] | None = None,
    failed_rounds: tuple[int, ...] = (),
    clients: bool = True,
    partition: bool = True,
) -> Path:
    """Write a complete run folder with ``len(acc)`` rounds; NaN accuracy = not evaluated."""
    folder.mkdir(parents=True)
    config = copy.deepcopy(BASE_CONFIG)
    config["experiment"]["seed"] = seed
    config["server"]["rounds"] = len(acc)
    if strategy is not None:
        config["strategy"] = strategy
    if runtime is not None:
        config["runtime"] = runtime
    (folder / "config.toml").write_text(tomli_w.dumps(config))

    n = len(acc)
    rnd = np.arange(1, n + 1)
    rounds = pd.DataFrame(
        {
            "round": rnd,
            "sim_time_s": rnd * round_s,
            "round_duration_s": np.full(n, round_s),
            "selected": 10,
            "completed": 7,
            "stragglers": 2,
            "dropped": 1,
            "bytes_down": DOWN_PER_ROUND,
            "bytes_up": UP_PER_ROUND,
            "cum_bytes_down": rnd * DOWN_PER_ROUND,
            "cum_bytes_up": rnd * UP_PER_ROUND,
            "cum_bytes": rnd * (DOWN_PER_ROUND + UP_PER_ROUND),
            "train_loss": loss if loss is not None else list(2.0 / rnd),
            "test_accuracy": acc,
            "test_loss": [1 - a for a in acc],
            "failed": [r in failed_rounds for r in rnd],
            "wall_time_s": 0.5,
            # A column from a later simulator version, which loading must tolerate.
            "rejected": 0,
        }
    )
    rounds.to_csv(folder / "rounds.csv", index=False)

    if clients:
        rows = []
        outcomes = ["completed"] * 7 + ["straggler"] * 2 + ["dropped"]
        for r in rnd:
            for i, outcome in enumerate(outcomes):
                rows.append(
                    {
                        "round": r,
                        "client_id": i,
                        "tier": "fast" if i % 2 == 0 else "slow",
                        "outcome": outcome,
                        "num_samples": 50,
                        "epochs_done": 1 if outcome == "completed" else 0,
                        "download_s": 1.0 + i,
                        "compute_s": 10.0 + i,
                        "upload_s": 2.0 + i,
                    }
                )
        pd.DataFrame(rows).to_csv(folder / "clients.csv", index=False)

    if partition:
        pd.DataFrame(
            {
                "client_id": [0, 1, 2, 3],
                "num_samples": [10, 20, 30, 0],
                "label_0": [10, 0, 10, 0],
                "label_1": [0, 20, 10, 0],
                "label_2": [0, 0, 10, 0],
            }
        ).to_csv(folder / "partition.csv", index=False)

    evaluated = [a for a in acc if not math.isnan(a)]
    summary = {
        "num_parameters": 25_000,
        "model_bytes": 100_000,
        "rounds": n,
        "final_test_accuracy": evaluated[-1] if evaluated else None,
        "sim_time_s": n * round_s,
        "bytes_up_total": n * UP_PER_ROUND,
        "bytes_down_total": n * DOWN_PER_ROUND,
        "wall_time_s": 12.5,
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def rounds_frame(acc: list[float], **columns: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"round": np.arange(1, len(acc) + 1), "test_accuracy": acc, **columns})


# --- rounds_to_target -------------------------------------------------------------------------


def test_rounds_to_target_interpolates_on_a_monotone_curve() -> None:
    df = rounds_frame([0.2, 0.4, 0.6, 0.8])
    assert rounds_to_target(df, 0.5) == pytest.approx(2.5, abs=1e-12)
    assert rounds_to_target(df, 0.8) == pytest.approx(4.0, abs=1e-12)


def test_rounds_to_target_uses_best_so_far_record_points() -> None:
    df = rounds_frame([0.5, 0.8, 0.6, 0.85])
    # Between round 2 (best so far 0.8) and round 4 (0.85); round 3 sets no record.
    assert rounds_to_target(df, 0.82) == pytest.approx(2.8, abs=1e-12)


def test_rounds_to_target_first_evaluation_already_above() -> None:
    df = rounds_frame([0.7, 0.9])
    assert rounds_to_target(df, 0.6) == 1.0
    assert rounds_to_target(df, 0.7) == 1.0


def test_rounds_to_target_never_reached_is_none() -> None:
    assert rounds_to_target(rounds_frame([0.5, 0.8, 0.6, 0.85]), 0.9) is None
    assert rounds_to_target(rounds_frame([math.nan, math.nan]), 0.1) is None


def test_rounds_to_target_in_bytes_and_time_skips_unevaluated_rounds() -> None:
    acc = [math.nan, 0.4, math.nan, 0.6, math.nan, 0.9]
    rnd = np.arange(1, 7)
    df = rounds_frame(acc, cum_bytes=list(1000.0 * rnd), sim_time_s=list(rnd**2 * 1.0))
    assert rounds_to_target(df, 0.5) == pytest.approx(3.0, abs=1e-12)
    assert rounds_to_target(df, 0.5, x="cum_bytes") == pytest.approx(3000.0, abs=1e-9)
    # Between (round 4, 16 s, 0.6) and (round 6, 36 s, 0.9).
    expected = 16 + (0.8 - 0.6) / (0.9 - 0.6) * (36 - 16)
    assert rounds_to_target(df, 0.8, x="sim_time_s") == pytest.approx(expected, abs=1e-9)


def test_rounds_to_target_rejects_a_missing_x_column() -> None:
    with pytest.raises(ValueError, match="cum_bytes"):
        rounds_to_target(rounds_frame([0.5]), 0.4, x="cum_bytes")


# --- loading ----------------------------------------------------------------------------------


def test_load_run_reads_all_files_and_flattens_config(tmp_path: Path) -> None:
    run = load_run(make_run(tmp_path / "a", [0.5, math.nan, 0.7]))
    assert run.name == "a"
    assert run.config["server.clients_per_round"] == 10
    assert run.config["server"]["clients_per_round"] == 10
    assert run.config["population.speed.tiers"] == ["fast", "slow"]
    assert "server" not in run.flat_config and run.flat_config["server.rounds"] == 3
    assert list(run.rounds["round"]) == [1, 2, 3]
    assert "rejected" in run.rounds.columns
    assert run.clients is not None and len(run.clients) == 30
    assert run.partition is not None and len(run.partition) == 4
    assert run.summary["wall_time_s"] == 12.5


def test_load_run_optional_files_may_be_absent(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "a", [0.5], clients=False, partition=False)
    (folder / "summary.json").unlink()
    run = load_run(folder)
    assert run.clients is None and run.partition is None and run.summary == {}


def test_load_run_errors_name_the_folder_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere") as missing:
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty.*config.toml") as empty:
        load_run(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="file.txt"):
        load_run(tmp_path / "file.txt")
    bad = make_run(tmp_path / "bad", [0.5])
    pd.DataFrame({"round": [1]}).to_csv(bad / "rounds.csv", index=False)
    with pytest.raises(ValueError, match="test_accuracy") as columns:
        load_run(bad)
    for err in (missing, empty, columns):
        assert "\n" not in str(err.value)


def test_load_runs_disambiguates_equal_folder_names(tmp_path: Path) -> None:
    a = make_run(tmp_path / "x" / "run", [0.5])
    b = make_run(tmp_path / "y" / "run", [0.5])
    assert [r.name for r in load_runs([a, b])] == ["x/run", "y/run"]


# --- labels and groups ------------------------------------------------------------------------


def test_config_differences_labels_differing_keys(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5], runtime={"backend": "ray", "workers": 8})
    b = make_run(tmp_path / "b", [0.5], strategy={"name": "fedprox", "mu": 0.01})
    assert config_differences([a, b]) == {
        "a": "strategy.name=fedavg, strategy.mu=unset",
        "b": "strategy.name=fedprox, strategy.mu=0.01",
    }


def test_config_differences_falls_back_to_folder_names(tmp_path: Path) -> None:
    # Only runtime settings differ, and those do not change what is simulated.
    a = make_run(tmp_path / "a", [0.5])
    b = make_run(tmp_path / "b", [0.5], runtime={"backend": "ray", "workers": 4})
    assert config_differences([a, b]) == {"a": "a", "b": "b"}


def test_seeds_label_or_group(tmp_path: Path) -> None:
    a = make_run(tmp_path / "s0", [0.5], seed=0)
    b = make_run(tmp_path / "s1", [0.5], seed=1)
    c = make_run(tmp_path / "p", [0.5], strategy={"name": "fedprox", "mu": 0.1})
    assert config_differences([a, b]) == {"s0": "experiment.seed=0", "s1": "experiment.seed=1"}
    assert config_differences([a, b], ignore_seed=True) == {"s0": "s0", "s1": "s1"}
    assert [[r.name for r in g] for g in group_seeds([a, c, b])] == [["s0", "s1"], ["p"]]


# --- compare ----------------------------------------------------------------------------------


def test_compare_runs_values(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5, 0.8, 0.6, 0.85, math.nan])
    b = make_run(tmp_path / "b", [0.3, 0.4], strategy={"name": "fedprox", "mu": 0.01})
    df = compare_runs([a, b], target=0.82)
    assert list(df["run"]) == ["a", "b"]
    # Round counts differ too, so they are part of the label.
    assert list(df["label"]) == [
        "strategy.name=fedavg, server.rounds=5, strategy.mu=unset",
        "strategy.name=fedprox, server.rounds=2, strategy.mu=0.01",
    ]
    assert list(df["rounds"]) == [5, 2]
    assert list(df["final_accuracy"]) == [0.85, 0.4]
    assert list(df["best_accuracy"]) == [0.85, 0.4]
    assert list(df["total_bytes"]) == [5 * 1_700_000, 2 * 1_700_000]
    assert list(df["bytes_up"]) == [5 * UP_PER_ROUND, 2 * UP_PER_ROUND]
    assert list(df["bytes_down"]) == [5 * DOWN_PER_ROUND, 2 * DOWN_PER_ROUND]
    assert list(df["sim_time_s"]) == [150.0, 60.0]
    assert list(df["wall_time_s"]) == [12.5, 12.5]
    assert df.loc[0, "rounds_to_target"] == pytest.approx(2.8, abs=1e-12)
    assert df.loc[0, "bytes_to_target"] == pytest.approx(2.8 * 1_700_000, rel=1e-12)
    assert df.loc[0, "sim_time_to_target"] == pytest.approx(2.8 * 30, rel=1e-12)
    assert list(df["reached"]) == [True, False]
    assert df.loc[1, ["rounds_to_target", "bytes_to_target", "sim_time_to_target"]].isna().all()


def test_compare_runs_without_target_has_no_target_columns(tmp_path: Path) -> None:
    df = compare_runs([make_run(tmp_path / "a", [0.5, 0.6])])
    assert "rounds_to_target" not in df.columns and "reached" not in df.columns
    assert df.loc[0, "label"] == "a"


def test_write_comparison_files(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5, 0.9])
    b = make_run(tmp_path / "b", [0.3, 0.4], strategy={"name": "fed|prox"})
    df = compare_runs([a, b], target=0.8)
    text = write_comparison(df, tmp_path / "out")

    back = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert list(back["total_bytes"]) == [3_400_000, 3_400_000]
    lines = (tmp_path / "out" / "comparison.md").read_text().splitlines()
    assert lines[0].startswith("| run | label | rounds | final_accuracy |")
    assert "| total_bytes (MB) |" in lines[0]
    assert set(lines[1]) <= set("|-: ")
    assert len(lines) == 2 + 2
    assert lines[2].startswith("| a |") and "| 3.40 |" in lines[2]
    assert "fed\\|prox" in lines[3]  # a pipe in a label must not split the cell
    assert all(line.count(" | ") == lines[0].count(" | ") for line in lines[2:])
    # Text table: header, rule, one row per run; the unreached run shows "-" and "no".
    text_lines = text.splitlines()
    assert len(text_lines) == 4
    assert text_lines[3].startswith("b ") and text_lines[3].rstrip().endswith("no")


# --- plots ------------------------------------------------------------------------------------


def test_units() -> None:
    assert byte_unit(999) == ("B", 1.0)
    assert byte_unit(1500) == ("KB", 1e3)
    assert byte_unit(2.5e6) == ("MB", 1e6)
    assert byte_unit(3e9) == ("GB", 1e9)
    assert time_unit(90) == ("s", 1.0)
    assert time_unit(600) == ("min", 60.0)
    assert time_unit(3 * 3600) == ("h", 3600.0)


def test_plot_accuracy_vs_bytes_one_line_per_run(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5, math.nan, 0.7, 0.8])
    b = make_run(tmp_path / "b", [0.4, 0.6, 0.65, 0.9], strategy={"name": "fedprox", "mu": 0.1})
    fig, ax, data = plot_accuracy_vs_bytes([a, b])
    assert ax.get_xlabel() == "cumulative bytes communicated (MB)"
    assert ax.get_ylabel() == "test accuracy"
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 0
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1.7, 5.1, 6.8])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), [0.5, 0.7, 0.8])
    assert len(data) == 3 + 4
    assert set(data["n_runs"]) == {1}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "strategy.name=fedavg, strategy.mu=unset",
        "strategy.name=fedprox, strategy.mu=0.1",
    ]
    w, h = fig.get_size_inches()
    assert (w, h) == pytest.approx((3.4, 2.6))

    _, ax_up, data_up = plot_accuracy_vs_bytes([a], which="up", log=True)
    assert ax_up.get_xlabel() == "cumulative bytes uploaded (MB)"
    assert ax_up.get_xscale() == "log"
    np.testing.assert_allclose(data_up["cum_bytes_up"], [700_000, 2_100_000, 2_800_000])
    _, ax_down, _ = plot_accuracy_vs_bytes([a], which="down")
    assert ax_down.get_xlabel() == "cumulative bytes downloaded (MB)"
    with pytest.raises(ValueError, match="which"):
        plot_accuracy_vs_bytes([a], which="sideways")  # type: ignore[arg-type]


def test_plot_accuracy_vs_time_picks_minutes(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5, 0.6, 0.7, 0.8], round_s=60.0)
    _, ax, data = plot_accuracy_vs_time([a])
    assert ax.get_xlabel() == "simulated time (min)"
    assert len(ax.get_lines()) == 1
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1, 2, 3, 4])
    np.testing.assert_allclose(data["sim_time_s"], [60, 120, 180, 240])
    assert ax.get_legend() is None  # a single plain curve needs no legend


def test_seed_group_plots_mean_with_band(tmp_path: Path) -> None:
    accs = [[0.5, 0.6, 0.7], [0.4, 0.7, 0.9], [0.6, 0.5, 0.8]]
    seeds = [make_run(tmp_path / f"s{i}", acc, seed=i) for i, acc in enumerate(accs)]
    other = make_run(tmp_path / "p", [0.3, 0.4, 0.5], strategy={"name": "fedprox", "mu": 0.1})
    fig, axes, data = plot_accuracy_loss_vs_rounds([*seeds, other])
    ax = axes[0]
    assert len(ax.get_lines()) == 2 and len(ax.collections) == 1
    mean = np.mean(accs, axis=0)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), mean, atol=1e-12)
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), [1, 2, 3])
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() == pytest.approx(0.4) and band[:, 1].max() == pytest.approx(0.9)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["strategy.name=fedavg, strategy.mu=unset (3 seeds)", legend[1]]
    group = data[(data["metric"] == "test_accuracy") & (data["n_runs"] == 3)]
    np.testing.assert_allclose(group["mean"], mean, atol=1e-12)
    np.testing.assert_allclose(group["min"], np.min(accs, axis=0))
    np.testing.assert_allclose(group["max"], np.max(accs, axis=0))
    # Loss panel: same grouping, labelled axes.
    assert len(axes[1].get_lines()) == 2 and len(axes[1].collections) == 1
    assert axes[1].get_xlabel() == "round" and axes[1].get_ylabel() == "train loss"
    np.testing.assert_allclose(axes[1].get_lines()[0].get_ydata(), [2.0, 1.0, 2 / 3])


def test_seed_group_interpolates_on_time(tmp_path: Path) -> None:
    # Seeds with different round lengths: averaged on the union of their times, within overlap.
    a = make_run(tmp_path / "s0", [0.2, 0.4, 0.6], seed=0, round_s=10.0)
    b = make_run(tmp_path / "s1", [0.3, 0.5, 0.7], seed=1, round_s=15.0)
    _, ax, data = plot_accuracy_vs_time([a, b])
    assert ax.get_xlabel() == "simulated time (s)"
    assert len(ax.get_lines()) == 1 and len(ax.collections) == 1
    grid = np.array([15.0, 20.0, 30.0])
    expected = (
        np.interp(grid, [10, 20, 30], [0.2, 0.4, 0.6]) + np.interp(grid, [15, 30], [0.3, 0.5])
    ) / 2
    np.testing.assert_allclose(ax.get_lines()[0].get_xdata(), grid)
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), expected, atol=1e-12)
    np.testing.assert_allclose(data["mean"], expected, atol=1e-12)


def test_plot_round_outcomes(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", [0.5, 0.6, 0.7], failed_rounds=(2,))
    _, ax, data = plot_round_outcomes(run)
    assert len(ax.containers) == 3
    tops = [bar.get_y() + bar.get_height() for bar in ax.containers[-1]]
    assert tops == [10.0, 10.0, 10.0]
    selected, failed = ax.get_lines()
    np.testing.assert_allclose(selected.get_ydata(), [10, 10, 10])
    np.testing.assert_allclose(failed.get_xdata(), [2])
    assert list(data.columns) == [
        "round",
        "completed",
        "stragglers",
        "dropped",
        "selected",
        "failed",
    ]
    assert ax.get_xlabel() == "round" and ax.get_ylabel() == "clients per round"


def test_plot_client_times(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", [0.5, 0.6])
    _, (ax_times, ax_tiers), data = plot_client_times(run)
    assert "(s)" in ax_times.get_ylabel()
    assert [t.get_text() for t in ax_times.get_xticklabels()] == ["download", "compute", "upload"]
    times = data[data["panel"] == "times"].set_index(["group", "key"])["value"]
    # 9 non-dropped clients (ids 0-8) per round over 2 rounds; compute_s = 10 + id.
    assert times[("compute", "n")] == 18
    assert times[("compute", "median")] == 14.0
    assert times[("download", "max")] == 9.0
    counts = data[data["panel"] == "outcomes"].set_index(["group", "key"])["value"]
    # Per round, even ids (fast): 4 completed, 1 straggler; odd (slow): 3 completed, 1 straggler,
    # 1 dropped.
    assert counts[("fast", "completed")] == 8 and counts[("fast", "straggler")] == 2
    assert counts[("slow", "completed")] == 6 and counts[("slow", "dropped")] == 2
    assert [t.get_text() for t in ax_tiers.get_xticklabels()] == ["fast", "slow"]
    assert len(ax_tiers.containers) == 3
    assert ax_tiers.get_xlabel() == "device tier"


def test_tiers_are_plotted_in_configured_order_not_alphabetical(tmp_path: Path) -> None:
    folder = make_run(tmp_path / "a", [0.5, 0.6])
    config = tomllib.loads((folder / "config.toml").read_text())
    config["population"]["tiers"] = [
        {"name": "slow", "weight": 0.5},
        {"name": "fast", "weight": 0.5},
    ]
    (folder / "config.toml").write_text(tomli_w.dumps(config))
    _, (_, ax_tiers), data = plot_client_times(folder)
    assert [t.get_text() for t in ax_tiers.get_xticklabels()] == ["slow", "fast"]
    outcomes = data[data["panel"] == "outcomes"]
    assert list(dict.fromkeys(outcomes["group"])) == ["slow", "fast"]

    with pytest.raises(FileNotFoundError, match="clients.csv"):
        plot_client_times(make_run(tmp_path / "b", [0.5], clients=False))


def test_plot_label_distribution(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", [0.5])
    fig, (ax_map, ax_hist), data = plot_label_distribution(run)
    assert len(ax_map.images) == 1
    image = np.asarray(ax_map.images[0].get_array())
    np.testing.assert_allclose(image[2], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(image.sum(axis=1), [1, 1, 1, 0])  # the empty client stays 0
    assert len(data) == 4 * 3
    assert data.groupby("client_id")["count"].sum().tolist() == [10, 20, 30, 0]
    assert sum(p.get_height() for p in ax_hist.patches) == 4
    assert ax_hist.get_xlabel() == "samples per client"
    assert ax_map.get_xlabel() == "label" and ax_map.get_ylabel() == "client id"


def test_plot_runs_writes_png_and_svg(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", [0.5, 0.6])
    written = plot_runs([run], tmp_path / "plots")
    stems = [
        "accuracy_vs_bytes",
        "accuracy_vs_time",
        "accuracy_loss_vs_rounds",
        "round_outcomes",
        "client_times",
        "label_distribution",
    ]
    for stem in stems:
        for ext in ("png", "svg", "csv"):
            path = tmp_path / "plots" / f"{stem}.{ext}"
            assert path in written and path.stat().st_size > 0
    assert len(written) == 3 * len(stems)
    assert (tmp_path / "plots" / "accuracy_vs_bytes.png").read_bytes()[:4] == b"\x89PNG"


def test_plotting_the_same_runs_twice_gives_identical_svg(tmp_path: Path) -> None:
    run = make_run(tmp_path / "a", [0.5, 0.6])
    plot_runs([run], tmp_path / "one", formats=("svg",))
    plot_runs([run], tmp_path / "two", formats=("svg",))
    names = sorted(p.name for p in (tmp_path / "one").glob("*.svg"))
    assert len(names) == 6
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_plot_runs_several_runs_prefix_and_skip(tmp_path: Path) -> None:
    a = make_run(tmp_path / "a", [0.5, 0.6])
    b = make_run(tmp_path / "b", [0.4, 0.7], seed=3, clients=False, partition=False)
    written = {p.name for p in plot_runs([a, b], tmp_path / "out", formats=("png",))}
    assert "accuracy_vs_bytes.png" in written
    assert {"a_round_outcomes.png", "a_client_times.png", "a_label_distribution.png"} <= written
    assert "b_round_outcomes.png" in written
    assert "b_client_times.png" not in written and "b_label_distribution.png" not in written
    assert not any(name.endswith(".svg") for name in written)
    with pytest.raises(ValueError, match="format"):
        plot_runs([a], tmp_path / "bad", formats=("nope",))


# --- commands ---------------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


@pytest.mark.slow
def test_plot_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_run(tmp_path / "a", [0.5, 0.6])
    args = parse(["plot", str(run), "--format", "png"])
    assert args.func(args) == 0
    assert (run / "plots" / "accuracy_vs_bytes.png").stat().st_size > 0
    assert not (run / "plots" / "accuracy_vs_bytes.svg").exists()

    out = tmp_path / "figs"
    args = parse(["plot", str(run), str(run), "--out", str(out), "--log-bytes"])
    assert args.func(args) == 0
    assert (out / "accuracy_vs_bytes.svg").stat().st_size > 0
    assert str(out / "accuracy_vs_bytes.svg") in capsys.readouterr().out


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = make_run(tmp_path / "a", [0.5, 0.7])
    b = make_run(tmp_path / "b", [0.6, 0.9], strategy={"name": "fedprox", "mu": 0.1})
    out = tmp_path / "cmp"
    args = parse(["compare", str(a), str(b), "--target", "0.65", "--x", "cum_bytes"])
    args.out = str(out)
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].startswith("run")
    table = pd.read_csv(out / "comparison.csv")
    # b reaches 0.65 first, so it is listed first.
    assert list(table["run"]) == ["b", "a"]
    assert table.loc[0, "rounds_to_target"] == pytest.approx(1 + 0.05 / 0.3)
    assert (out / "comparison.md").read_text().count("\n") == 4


def test_commands_fail_with_one_line_for_a_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "missing")
    for argv in (["plot", missing], ["compare", missing, "--out", str(tmp_path)]):
        args = parse(argv)
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "missing" in err and err.startswith("error:")
    args = parse(["compare", str(make_run(tmp_path / "a", [0.5])), "--target", "82"])
    assert args.func(args) == 2
    assert "--target" in capsys.readouterr().err


# --- Pareto figure --------------------------------------------------------------------------


def _scaled_bytes(folder: Path, factor: float) -> Path:
    """Scale a run's byte columns, as if its updates were compressed."""
    rounds = pd.read_csv(folder / "rounds.csv")
    for col in ("bytes_down", "bytes_up", "cum_bytes_down", "cum_bytes_up", "cum_bytes"):
        rounds[col] = (rounds[col] * factor).round().astype(np.int64)
    rounds.to_csv(folder / "rounds.csv", index=False)
    return folder


@pytest.mark.slow
def test_pareto_plots_one_point_per_configuration_and_marks_the_frontier(tmp_path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from fedsim.analysis.pareto import plot_pareto

    def run(name: str, acc: list[float], factor: float, seed: int = 0, mu: float = 0.0) -> Path:
        strategy = {"name": "fedprox", "mu": mu}
        return _scaled_bytes(make_run(tmp_path / name, acc, seed=seed, strategy=strategy), factor)

    runs = [
        run("full-0", [0.5, 0.80], 1.0),  # 1.7 MB per round, the best accuracy
        run("full-1", [0.5, 0.84], 1.0, seed=1),  # same configuration: mean 0.82
        run("small", [0.5, 0.75], 0.25, mu=0.1),  # cheaper, less accurate: on the frontier
        run("bad", [0.78, 0.70], 0.5, mu=0.2),  # dearer, finally worse than "small": dominated
        run("tiny", [0.5, 0.60], 0.03, mu=0.3),  # cheapest: on the frontier
    ]
    fig, ax, points = plot_pareto(runs)
    FigureCanvasAgg(fig).draw()
    assert points["seeds"].tolist() == [1, 1, 1, 2]
    total = 2 * 1_700_000
    np.testing.assert_allclose(
        points["total_bytes"], [0.03 * total, 0.25 * total, 0.5 * total, total]
    )
    np.testing.assert_allclose(points["accuracy"], [0.60, 0.75, 0.70, 0.82])
    assert points["accuracy_min"].iloc[-1] == 0.80 and points["accuracy_max"].iloc[-1] == 0.84
    assert points["on_frontier"].tolist() == [True, True, False, True]
    # Drawn: one marker per configuration and a step line through the frontier only.
    assert len(ax.collections) - 1 == 4  # the error bars are one more collection
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == "Pareto frontier"]
    np.testing.assert_allclose(line.get_ydata(), [0.60, 0.75, 0.82])
    assert ax.get_xscale() == "log"
    best = plot_pareto(runs, "best")[2]  # by its best round, "bad" beats "small"
    np.testing.assert_allclose(best["accuracy"], [0.60, 0.75, 0.78, 0.82])
    assert best["on_frontier"].all()
    written = {p.name for p in plot_runs(runs, tmp_path / "out", formats=("png",))}
    assert {"pareto.png", "pareto.csv"} <= written


def test_frontier_keeps_only_undominated_points() -> None:
    from fedsim.analysis.pareto import frontier

    cost = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    value = np.array([0.5, 0.4, 0.7, 0.7, 0.9])
    assert frontier(cost, value).tolist() == [True, False, True, False, True]


def test_pareto_counts_upload_bytes_alone_when_asked(tmp_path: Path) -> None:
    from fedsim.analysis.pareto import pareto_points

    run = make_run(tmp_path / "a", [0.5, 0.6])
    up = pareto_points([run], which="up")
    assert up["total_bytes"].tolist() == [2 * UP_PER_ROUND]
    total = pareto_points([run])
    assert total["total_bytes"].tolist() == [2 * (UP_PER_ROUND + DOWN_PER_ROUND)]
