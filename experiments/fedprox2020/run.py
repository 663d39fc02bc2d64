"""Reproduce Li et al. 2020 (FedProx), Figures 1 and 7 / Table 2 setting, on fedsim.

Grid: Synthetic(0,0), (0.5,0.5), (1,1) and Synthetic-IID x 0%, 50%, 90% stragglers (the paper's
model, ``server.straggler_fraction``) x {FedAvg (drop stragglers), FedProx mu=0 and mu=1 (keep
partial work)} x seeds; a second grid has fedsim's device-driven stragglers instead (device
speeds and a deadline). Finished runs are skipped (``fedsim.analysis.sweep``).

Usage: python experiments/fedprox2020/run.py [--seeds 3] [--rounds 200] [--jobs 2] [--out DIR]
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd

from fedsim.analysis.bands import band_table, plot_band
from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep
from fedsim.tables import markdown_table

HERE = Path(__file__).resolve().parent
DATASETS = {"synthetic_0_0": ["data.alpha=0.0", "data.beta=0.0"],
            "synthetic_0.5_0.5": ["data.alpha=0.5", "data.beta=0.5"],
            "synthetic_1_1": ["data.alpha=1.0", "data.beta=1.0"],
            "synthetic_iid": ["data.iid=true", "data.alpha=0.0", "data.beta=0.0"]}  # fmt: skip
PROX, PARTIAL = "strategy.name='fedprox'", "server.straggler_policy='partial'"  # mu, overrides:
METHODS = {"FedAvg": (0.0, ["strategy.name='fedavg'", "server.straggler_policy='drop'"]),
           "FedProx mu=0": (0.0, [PROX, "strategy.mu=0.0", PARTIAL]),
           "FedProx mu=1": (1.0, [PROX, "strategy.mu=1.0", PARTIAL])}  # fmt: skip
FRACTIONS = [0.0, 0.5, 0.9]
# Device-driven stragglers: speeds (samples/s) over two orders of magnitude and a deadline that
# slow or data-heavy devices miss with E = 20: 0.45 s is about the median time of a device's
# full workload (half the cohort straggles), 0.12 s about its 10th percentile (about 90%).
DEVICE_SPEED = "population.speed={dist='lognormal', median=4000.0, sigma=1.0}"
DEADLINES = {0.5: 0.45, 0.9: 0.12}
KEYS = ["model", "dataset", "straggler_fraction", "method"]
COLOURS = {"FedAvg": "tab:blue", "FedProx mu=0": "tab:orange", "FedProx mu=1": "tab:red"}


def points(seeds: int, rounds: int) -> list[SweepPoint]:
    """Every run; its folder is <dataset>/<straggler level>/<method>-seed<N>."""
    levels = [("fraction", f, [f"server.straggler_fraction={f}"]) for f in FRACTIONS] + [
        ("deadline", f, [DEVICE_SPEED, f"server.deadline_s={d}"]) for f, d in DEADLINES.items()
    ]
    out = []
    for seed, (ds, ds_over), (model, level, level_over), (
        method,
        (mu, m_over),
    ) in itertools.product(range(seeds), DATASETS.items(), levels, METHODS.items()):
        over = [*ds_over, *m_over, *level_over, f"experiment.seed={seed}",
                f"server.rounds={rounds}", "server.eval_train=true"]  # fmt: skip
        pct = f"{'deadline' if model == 'deadline' else 'stragglers'}_{level * 100:.0f}"
        name = f"{ds}/{pct}/{method.replace(' ', '_').replace('=', '')}-seed{seed}"
        values = {"model": model, "dataset": ds, "straggler_fraction": level, "method": method,
                  "mu": mu, "seed": seed}  # fmt: skip
        out.append(SweepPoint(name, tuple(over), values))
    return out


def record(o: RunOutcome) -> dict:
    rounds = o.rounds  # one line of runs.csv
    return {**o.values, "final_test_accuracy": rounds["test_accuracy"].iloc[-1],
            "final_train_loss": rounds["global_train_loss"].iloc[-1],
            "straggler_share": rounds["stragglers"].sum() / rounds["selected"].sum(),
            "run": f"runs/{o.run.name}"}  # fmt: skip


def tables(df: pd.DataFrame, out: Path) -> str:
    """runs.csv, summary.csv and .md (means and sd over seeds) and headline.md."""
    df.to_csv(out / "runs.csv", index=False)
    acc, loss = "final_test_accuracy", "final_train_loss"
    agg = df.groupby([*KEYS, "mu"], dropna=False, sort=False).agg(
        final_test_accuracy=(acc, "mean"), test_accuracy_std=(acc, "std"),
        final_train_loss=(loss, "mean"), train_loss_std=(loss, "std"),
        straggler_share=("straggler_share", "mean"), seeds=("seed", "count"),
    ).reset_index()  # fmt: skip
    agg.to_csv(out / "summary.csv", index=False)
    rows = [[r.model, r.dataset, f"{r.straggler_share:.0%}", r.method,
             f"{r.final_test_accuracy:.3f} ± {r.test_accuracy_std:.3f}",
             f"{r.final_train_loss:.3f} ± {r.train_loss_std:.3f}"]
            for r in agg.itertuples()]  # fmt: skip
    head = ["model", "dataset", "stragglers", "method", "test accuracy", "train loss"]
    (out / "summary.md").write_text(text := markdown_table(head, rows) + "\n")
    headline = ""
    for model, what in (("fraction", "90% stragglers (the paper's model)"), ("deadline",
                        "the ~90% deadline (device-driven stragglers)")):  # fmt: skip
        level = agg[(agg["model"] == model) & (agg["straggler_fraction"] == 0.9)]
        piv = level.pivot(index="dataset", columns="method", values="final_test_accuracy")
        gain, gain0 = ((piv[f"FedProx mu={mu}"] - piv["FedAvg"]).mean() for mu in (1, 0))
        headline += (
            f"At {what}, FedProx mu=1 changes final test accuracy over FedAvg by "
            f"{gain * 100:+.1f} percentage points on average over the four datasets, "
            f"FedProx mu=0 by {gain0 * 100:+.1f} (paper: +22 for FedProx).\n"
        )
    (out / "headline.md").write_text(headline)
    return text + "\n" + headline


def figures(df: pd.DataFrame, out: Path) -> None:
    """Per straggler model and column: a panel per level and dataset, a band per method."""
    import matplotlib.pyplot as plt

    from fedsim.analysis import save_figure

    for (model, sub), label in itertools.product(df.groupby("model", sort=False),
                                                 ("training loss", "test accuracy")):  # fmt: skip
        column = "global_train_loss" if label == "training loss" else "test_accuracy"
        levels = sorted(sub["straggler_fraction"].unique())
        fig, axes = plt.subplots(len(levels), len(DATASETS), figsize=(12, 2.5 * len(levels)),
                                 sharex=True, squeeze=False)  # fmt: skip
        for (i, frac), (j, ds) in itertools.product(enumerate(levels), enumerate(DATASETS)):
            ax, cell = axes[i, j], sub[(sub["dataset"] == ds) & (sub["straggler_fraction"] == frac)]
            for method in METHODS:
                runs = [out / r for r in cell[cell["method"] == method]["run"]]
                plot_band(ax, runs, column, color=COLOURS[method], lw=1.2, label=method)
            ax.set_title(ds.replace("_", " ") if i == 0 else "", fontsize=9)
            what = f"{int(frac * 100)}% {'stragglers' if model == 'fraction' else 'deadline'}"
            ax.set_ylabel(f"{what}\n{label}" if j == 0 else "", fontsize=8)
            ax.set_xlabel("round" if i == len(levels) - 1 else "", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        save_figure(fig, out, f"{model}_{label.replace(' ', '_')}")
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("results/fedprox2020"))
    args = parser.parse_args()
    done = sweep(HERE / "base.toml", points=points(args.seeds, args.rounds), jobs=args.jobs,
                 out_dir=(out := args.out) / "runs", tables=False, plots=False)  # fmt: skip
    df = pd.DataFrame(record(o) for o in done.runs)
    figures(df, out)
    # Per-round mean, min and max over seeds of every setting: the data behind the figures.
    band_table(df, KEYS, ["test_accuracy", "global_train_loss"], out).to_csv(
        out / "curves.csv", index=False, float_format="%.5g")  # fmt: skip
    print(tables(df, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
