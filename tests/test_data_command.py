"""``fedsim data``: partition summaries, partition.csv and the label figure, without training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fedsim
from fedsim.analysis import plot_label_distribution
from fedsim.cli import main
from fedsim.data.arrays import ArrayDataset
from fedsim.data.base import CentralData, Partition
from fedsim.data.summary import partition_frame, sample_client_ids, summarize_partition
from fedsim.data.synthetic import SyntheticDataset, SyntheticOptions

CONFIG = """
[experiment]
name = "parts"
seed = 1

[data]
dataset = "synthetic"
max_samples = 300
eval_clients = 5

[population]
num_clients = 40

[server]
rounds = 1
clients_per_round = 4

[runtime]
backend = "local"
progress = false
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "parts.toml"
    path.write_text(CONFIG)
    return path


def array_dataset(sizes: list[int], num_classes: int = 3, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    y = rng.integers(0, num_classes, n)
    y[:num_classes] = np.arange(num_classes)  # every class present
    central = CentralData(np.zeros((n, 2), np.float32), y, np.zeros((1, 2), np.float32), y[:1])
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    parts = [np.arange(bounds[k], bounds[k + 1]) for k in range(len(sizes))]
    return ArrayDataset(central, Partition.from_lists(parts))


def test_partition_frame_counts_each_clients_labels() -> None:
    ds = array_dataset([5, 0, 12, 3])
    frame = partition_frame(ds)
    assert list(frame.columns) == ["client_id", "num_samples", "label_0", "label_1", "label_2"]
    assert frame["num_samples"].tolist() == [5, 0, 12, 3]
    labels = frame[["label_0", "label_1", "label_2"]].to_numpy()
    np.testing.assert_array_equal(labels.sum(axis=1), [5, 0, 12, 3])
    for k in range(4):
        _, y = ds.client_train(k)
        np.testing.assert_array_equal(labels[k], np.bincount(y, minlength=3))
    part = partition_frame(ds, np.array([2, 0]))
    assert part["client_id"].tolist() == [2, 0] and part["num_samples"].tolist() == [12, 5]


def test_summary_statistics(tmp_path: Path) -> None:
    ds = array_dataset([5, 0, 12, 3])
    summary = summarize_partition(ds, sample_above=2)  # held in memory: never sampled
    assert not summary.sampled and len(summary.frame) == 4
    assert summary.size_stats() == {"min": 0, "median": 4.0, "mean": 5.0, "max": 12, "total": 20}
    labels = summary.labels_per_client()
    assert labels[1] == 0 and labels.max() <= 3
    text = summary.text(rows=2)
    assert "4 clients, 3 labels" in text
    assert "min 0, median 4.0, mean 5.0, max 12; total 20" in text
    assert "... 2 more rows" in text


def test_data_file_matches_what_a_run_writes(config: Path, tmp_path: Path) -> None:
    fedsim.run(config, out_dir=tmp_path / "run")
    assert main(["data", str(config), "--out", str(tmp_path / "data")]) == 0
    pd.testing.assert_frame_equal(
        pd.read_csv(tmp_path / "data" / "partition.csv"),
        pd.read_csv(tmp_path / "run" / "partition.csv"),
    )


def test_data_command_prints_summary_and_writes_figure(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["data", str(config), "--out", str(out), "--set", "population.num_clients=30"]) == 0
    text = capsys.readouterr().out
    ds = SyntheticDataset(SyntheticOptions(max_samples=300, eval_clients=5), 30, seed=1)
    sizes = ds.client_sizes()
    assert "30 clients, 10 labels" in text
    assert (
        f"min {sizes.min()}, median {np.median(sizes):.1f}, mean {sizes.mean():.1f}, "
        f"max {sizes.max()}; total {sizes.sum():,}" in text
    )
    assert "labels per client (all 30 clients)" in text
    frame = pd.read_csv(out / "partition.csv")
    assert len(frame) == 30 and frame["num_samples"].tolist() == sizes.tolist()
    for name in ("label_distribution.png", "label_distribution.svg", "label_distribution.csv"):
        assert (out / name).is_file(), name
    data = pd.read_csv(out / "label_distribution.csv")
    assert len(data) == 30 * 10
    assert data.groupby("client_id")["count"].sum().tolist() == sizes.tolist()


def test_many_lazy_clients_are_summarised_on_a_seeded_sample(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["data", str(config), "--set", "population.num_clients=50000", "--sample", "60"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    assert "labels per client (seeded sample of 60 clients" in text
    assert "samples per client (all 50,000 clients)" in text
    frame = pd.read_csv(tmp_path / "a" / "partition.csv")
    ids = frame["client_id"].to_numpy()
    assert len(ids) == 60 and np.all(np.diff(ids) > 0) and ids.max() < 50_000
    np.testing.assert_array_equal(ids, sample_client_ids(1, 50_000, 60))
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    pd.testing.assert_frame_equal(frame, pd.read_csv(tmp_path / "b" / "partition.csv"))
    # The sampled clients' rows are exactly those of the full table.
    ds = SyntheticDataset(SyntheticOptions(max_samples=300, eval_clients=5), 50_000, seed=1)
    np.testing.assert_array_equal(frame.to_numpy(), partition_frame(ds, ids).to_numpy())


def test_bad_config_exits_2_with_one_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["data", str(config), "--set", "data.alpha=-1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedsim: error: data.alpha: must be >= 0") and err.count("\n") == 1
    assert not out.exists()
    assert main(["data", str(tmp_path / "missing.toml")]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_label_plot_from_a_table_equals_plot_from_the_run(config: Path, tmp_path: Path) -> None:
    fedsim.run(config, out_dir=tmp_path / "run")
    _, _, from_run = plot_label_distribution(tmp_path / "run")
    table = pd.read_csv(tmp_path / "run" / "partition.csv")
    fig, (ax_map, ax_hist), from_table = plot_label_distribution(table.iloc[::-1])
    pd.testing.assert_frame_equal(from_run, from_table)
    # Synthetic sizes span more than a factor 100 only without a cap; 45..270 stays linear.
    assert ax_hist.get_xscale() == "linear"
    wide = table.assign(num_samples=np.geomspace(1, 10_000, len(table)).astype(int))
    _, (_, ax_log), _ = plot_label_distribution(wide)
    assert ax_log.get_xscale() == "log"
    with pytest.raises(ValueError, match="no label_<k> columns"):
        plot_label_distribution(table[["client_id", "num_samples"]])
