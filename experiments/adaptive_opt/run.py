"""FedAvg, FedAvgM, FedAdam, FedYogi and SCAFFOLD on two heterogeneous tasks, tuned and seeded.

    python experiments/adaptive_opt/run.py [--only fmnist_2nn_shards|synthetic_1_1]

For each task (a TOML beside this file): every strategy's server learning rates of grid.toml
with seed 0 (``fedsim sweep``), the best by mean test accuracy over the last three evaluations,
then that setting with seeds 1 and 2. Writes results/adaptive_opt/<task>/ (the sweeps' run
folders, tuning.csv, summary.csv) and results/adaptive_opt/summary.csv. Finished runs are
skipped when run again.
"""

from __future__ import annotations

import argparse
import math
import tomllib
from pathlib import Path

import pandas as pd

from fedsim import config as config_mod
from fedsim.analysis.bands import plot_band
from fedsim.analysis.compare import compare_runs
from fedsim.analysis.sweep import sweep

HERE = Path(__file__).resolve().parent
OUT = HERE.parents[1] / "results" / "adaptive_opt"
TASKS = ("fmnist_2nn_shards", "synthetic_1_1")
SEEDS = 3


def last_evaluations(run_dir: Path, k: int = 3) -> float:
    """Mean test accuracy of the last ``k`` evaluations (NaN for a run that diverged early)."""
    path = run_dir / "rounds.csv"
    if not path.is_file():
        return math.nan
    acc = pd.read_csv(path)["test_accuracy"].dropna()
    return float(acc.tail(k).mean()) if len(acc) >= k else math.nan


def run_task(task: str, grid: dict, root: Path = OUT) -> pd.DataFrame:
    base = HERE / f"{task}.toml"
    name = config_mod.load(base).experiment.name
    target = grid["targets"][name]
    rows, chosen = [], []
    for strategy, rates in grid["server_learning_rate"].items():
        axes = [f"strategy.name={strategy}"]
        if rates:
            axes.append("strategy.server_learning_rate=" + ",".join(map(str, rates)))
        out = root / task / strategy
        tuned = sweep(base, axes, out_dir=out / "tuning", plots=False, log=print)
        for d in tuned.run_dirs:
            lr = None
            if rates:
                lr = float(config_mod.load(d / "config.toml").strategy.options.server_learning_rate)
            rows.append(
                {
                    "strategy": strategy,
                    "server_learning_rate": lr,
                    "last3_accuracy": last_evaluations(d),
                    "run_dir": str(d.relative_to(root)),
                }
            )
        best = max(
            (r for r in rows if r["strategy"] == strategy),
            key=lambda r: -math.inf if math.isnan(r["last3_accuracy"]) else r["last3_accuracy"],
        )
        fixed = [f"strategy.name='{strategy}'"]
        if rates:
            fixed.append(f"strategy.server_learning_rate={best['server_learning_rate']}")
        # Seed 0 is the tuning run itself; seeds 1 and 2 are new.
        seeded = sweep(
            base,
            [],
            overrides=[*fixed, "experiment.seed=1"],
            seeds=SEEDS - 1,
            out_dir=out / "seeds",
            plots=False,
            log=print,
        )
        run_dirs = [root / best["run_dir"], *seeded.run_dirs]
        table = compare_runs(run_dirs, target=target)
        table.insert(0, "strategy", strategy)
        table.insert(1, "server_learning_rate", best["server_learning_rate"])
        table.insert(2, "seed", range(SEEDS))
        table["run_dir"] = [str(d.relative_to(root)) for d in run_dirs]
        chosen.append(table)
    pd.DataFrame(rows).to_csv(root / task / "tuning.csv", index=False)
    runs = pd.concat(chosen, ignore_index=True)
    runs.to_csv(root / task / "runs.csv", index=False)
    summary = (
        runs.groupby(["strategy", "server_learning_rate"], dropna=False, sort=False)
        .agg(
            final_accuracy=("final_accuracy", "mean"),
            final_min=("final_accuracy", "min"),
            final_max=("final_accuracy", "max"),
            rounds_to_target=("rounds_to_target", "mean"),
            reached=("reached", "sum"),
        )
        .reset_index()
    )
    summary.insert(0, "task", task)
    summary.insert(1, "target", target)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=TASKS)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    root = args.out
    grid = tomllib.loads((HERE / "grid.toml").read_text())
    tasks = [args.only] if args.only else list(TASKS)
    for task in tasks:
        (root / task).mkdir(parents=True, exist_ok=True)
        run_task(task, grid, root).to_csv(root / task / "summary.csv", index=False)
        plot_task(task, root)
    found = [root / t / "summary.csv" for t in TASKS if (root / t / "summary.csv").exists()]
    pd.concat(map(pd.read_csv, found)).to_csv(root / "summary.csv", index=False)


def plot_task(task: str, root: Path = OUT) -> None:
    """Test accuracy against rounds: each strategy's mean over seeds, with its min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = pd.read_csv(root / task / "runs.csv")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for strategy, group in runs.groupby("strategy", sort=False):
        lr = group["server_learning_rate"].iloc[0]
        label = strategy if pd.isna(lr) else f"{strategy} (server lr {lr:g})"
        plot_band(ax, [root / d for d in group["run_dir"]], "test_accuracy", label=label)
    ax.axhline(runs["target"].iloc[0], color="grey", linestyle=":", label="target")
    ax.set_xlabel("round")
    ax.set_ylabel(f"test accuracy (mean of {SEEDS} seeds, min-max band)")
    ax.set_title(task)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / task / "accuracy_vs_rounds.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
