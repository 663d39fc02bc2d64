"""Reproduce Li et al. 2020 (FedProx), Figures 1 and 7 / Table 2 setting, on fedsim.

Grid: Synthetic(0,0), (0.5,0.5), (1,1) and Synthetic-IID x 0%, 50%, 90% stragglers x
{FedAvg (drop stragglers), FedProx mu=0 (keep partial work), FedProx mu=1 (keep partial work)}
x seeds; stragglers follow the paper's model (``server.straggler_fraction``). A second, smaller
grid replaces the fraction model by fedsim's device-driven one (heterogeneous device speeds and a
deadline). Runs already finished (their summary.json exists) are skipped, so the script can be
interrupted and started again.

Usage: python experiments/fedprox2020/run.py [--seeds 3] [--rounds 200] [--jobs 2]
                                              [--out results/fedprox2020]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fedsim.analysis.bands import plot_band
from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep

HERE = Path(__file__).resolve().parent
DATASETS = {
    "synthetic_0_0": ["data.alpha=0.0", "data.beta=0.0"],
    "synthetic_0.5_0.5": ["data.alpha=0.5", "data.beta=0.5"],
    "synthetic_1_1": ["data.alpha=1.0", "data.beta=1.0"],
    "synthetic_iid": ["data.iid=true", "data.alpha=0.0", "data.beta=0.0"],
}
PARTIAL = "server.straggler_policy='partial'"
METHODS = {  # name: (mu, overrides)
    "FedAvg": (0.0, ["strategy.name='fedavg'", "server.straggler_policy='drop'"]),
    "FedProx mu=0": (0.0, ["strategy.name='fedprox'", "strategy.mu=0.0", PARTIAL]),
    "FedProx mu=1": (1.0, ["strategy.name='fedprox'", "strategy.mu=1.0", PARTIAL]),
}
FRACTIONS = [0.0, 0.5, 0.9]
# Device-driven stragglers: device speeds (samples/s) spread over two orders of magnitude and a
# deadline that the slower or data-heavier devices miss with E = 20 epochs. With the lognormal
# sample counts of the synthetic data, 0.45 s is about the median time of a device's full
# workload (about half the cohort straggles) and 0.12 s about its 10th percentile (about 90%).
DEVICE_SPEED = "population.speed={dist='lognormal', median=4000.0, sigma=1.0}"
DEADLINES = {0.5: 0.45, 0.9: 0.12}
COLOURS = {"FedAvg": "tab:blue", "FedProx mu=0": "tab:orange", "FedProx mu=1": "tab:red"}


def points(seeds: int, rounds: int) -> list[SweepPoint]:
    """Every run; its folder is <dataset>/<straggler level>/<method>-seed<N>."""
    levels = [("fraction", f, [f"server.straggler_fraction={f}"]) for f in FRACTIONS] + [
        ("deadline", f, [DEVICE_SPEED, f"server.deadline_s={d}"]) for f, d in DEADLINES.items()
    ]
    out = []
    for seed in range(seeds):
        for ds, ds_over in DATASETS.items():
            for model, level, level_over in levels:
                for method, (mu, m_over) in METHODS.items():
                    over = [*ds_over, *m_over, *level_over, f"experiment.seed={seed}",
                            f"server.rounds={rounds}", "server.eval_train=true"]  # fmt: skip
                    pct = f"{'deadline' if model == 'deadline' else 'stragglers'}_{level * 100:.0f}"
                    name = f"{ds}/{pct}/{method.replace(' ', '_').replace('=', '')}-seed{seed}"
                    values = {"model": model, "dataset": ds, "straggler_fraction": level,
                              "method": method, "mu": mu, "seed": seed}  # fmt: skip
                    out.append(SweepPoint(name, tuple(over), values))
    return out


def record(o: RunOutcome) -> dict:
    """One line of runs.csv."""
    rounds = o.rounds
    last = rounds.iloc[-1]
    return {
        **o.values,
        "final_test_accuracy": last["test_accuracy"],
        "final_train_loss": last["global_train_loss"],
        "straggler_share": rounds["stragglers"].sum() / rounds["selected"].sum(),
        "run": f"runs/{o.run.name}",
    }


def tables(df: pd.DataFrame, out: Path) -> str:
    """runs.csv, summary.csv and .md (means and sd over seeds) and headline.md."""
    df.to_csv(out / "runs.csv", index=False)
    group = ["model", "dataset", "straggler_fraction", "method", "mu"]
    agg = df.groupby(group, dropna=False, sort=False).agg(
        final_test_accuracy=("final_test_accuracy", "mean"),
        test_accuracy_std=("final_test_accuracy", "std"),
        final_train_loss=("final_train_loss", "mean"),
        train_loss_std=("final_train_loss", "std"),
        straggler_share=("straggler_share", "mean"),
        seeds=("seed", "count"),
    )
    agg = agg.reset_index()
    agg.to_csv(out / "summary.csv", index=False)
    lines = ["| model | dataset | stragglers | method | test accuracy | train loss |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    lines += [
        f"| {r.model} | {r.dataset} | {r.straggler_share:.0%} | {r.method} | "
        f"{r.final_test_accuracy:.3f} ± {r.test_accuracy_std:.3f} | "
        f"{r.final_train_loss:.3f} ± {r.train_loss_std:.3f} |"
        for r in agg.itertuples()
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    headline = ""
    for model, what in (("fraction", "90% stragglers (the paper's model)"),
                        ("deadline", "the ~90% deadline (device-driven stragglers)")):  # fmt: skip
        level = agg[(agg["model"] == model) & (agg["straggler_fraction"] == 0.9)]
        piv = level.pivot(index="dataset", columns="method", values="final_test_accuracy")
        gain = (piv["FedProx mu=1"] - piv["FedAvg"]).mean()
        gain0 = (piv["FedProx mu=0"] - piv["FedAvg"]).mean()
        headline += (
            f"At {what}, FedProx mu=1 changes final test accuracy over FedAvg by "
            f"{gain * 100:+.1f} percentage points on average over the four datasets, "
            f"FedProx mu=0 by {gain0 * 100:+.1f} (paper: +22 for FedProx).\n"
        )
    (out / "headline.md").write_text(headline)
    return text + "\n" + headline


def curves(df: pd.DataFrame, out: Path) -> None:
    """Per-round mean, min and max over seeds of every setting: the data behind the figures."""
    keys = ["model", "dataset", "straggler_fraction", "method", "seed"]
    data = pd.concat(
        pd.read_csv(out / r["run"] / "rounds.csv")[["round", "test_accuracy", "global_train_loss"]]
        .assign(**{k: r[k] for k in keys}) for _, r in df.iterrows()
    )  # fmt: skip
    stats = data.groupby([*keys[:-1], "round"], sort=False)[
        ["test_accuracy", "global_train_loss"]
    ].agg(["mean", "min", "max"])
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    stats.reset_index().to_csv(out / "curves.csv", index=False, float_format="%.5g")


def figures(df: pd.DataFrame, out: Path) -> None:
    """Per straggler model and column: a panel per level and dataset, a band per method."""
    import matplotlib.pyplot as plt

    from fedsim.analysis import save_figure

    for (model, sub), (column, label, name) in (
        (m, c) for m in df.groupby("model", sort=False)
        for c in (("global_train_loss", "training loss", "training_loss"),
                  ("test_accuracy", "test accuracy", "test_accuracy"))
    ):  # fmt: skip
        levels = sorted(sub["straggler_fraction"].unique())
        fig, axes = plt.subplots(len(levels), len(DATASETS), figsize=(12, 2.5 * len(levels)),
                                 sharex=True, squeeze=False)  # fmt: skip
        for (i, frac), (j, ds) in ((a, b) for a in enumerate(levels) for b in enumerate(DATASETS)):
            ax = axes[i, j]
            cell = sub[(sub["dataset"] == ds) & (sub["straggler_fraction"] == frac)]
            for method in METHODS:
                runs = [out / r for r in cell[cell["method"] == method]["run"]]
                plot_band(ax, runs, column, color=COLOURS[method], lw=1.2, label=method)
            what = "stragglers" if model == "fraction" else "deadline"
            ax.set_title(ds.replace("_", " ") if i == 0 else "", fontsize=9)
            ax.set_ylabel(f"{int(frac * 100)}% {what}\n{label}" if j == 0 else "", fontsize=8)
            ax.set_xlabel("round" if i == len(levels) - 1 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out, f"{model}_{name}")
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="results/fedprox2020")
    args = parser.parse_args()
    out = Path(args.out)
    done = sweep(HERE / "base.toml", points=points(args.seeds, args.rounds), out_dir=out / "runs",
                 jobs=args.jobs, tables=False, plots=False)  # fmt: skip
    df = pd.DataFrame(record(o) for o in done.runs)
    figures(df, out)
    curves(df, out)
    print(tables(df, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
