"""The robust-aggregation tables and figures, from every run folder of experiments/robust/run.py.

summary.csv has a row per finished run (a run that diverged: the last test accuracy measured
before it stopped, and the round); grid_r<R>.md the grid per number of rounds R (mean ± sd over
seeds, a column per aggregator); accuracy_vs_fraction_r<R>.png a panel per attack, and
accuracy_vs_round_sign_flip_f0.2_r30.png the curves at 20% sign-flipping clients.

Usage: python experiments/robust/table.py [--out results/robust]  (or run.py --table)
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from fedsim.analysis.bands import seed_band
from fedsim.analysis.runs import load_run
from fedsim.analysis.sweep import DIVERGED_FILE
from fedsim.tables import markdown_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grid import AGGREGATORS, ATTACKS, OUT  # noqa: E402  (the grid beside this file)


def tabulate(out: Path) -> pd.DataFrame:
    """summary.csv, the grid tables and the figures of every run folder under ``out/runs``."""
    df = table(out)
    for rounds in sorted(set(df["rounds"])):
        figures(df, out, rounds)
        grid_markdown(df, out, rounds)
    curves(df, out, 30, "sign_flip", 0.2)
    return df


def table(out: Path) -> pd.DataFrame:
    """summary.csv: a row per finished run folder, its grid values and final test accuracy."""
    rows = []
    for folder in sorted((out / "runs").iterdir()):
        diverged = folder / DIVERGED_FILE
        if not (folder / "summary.json").exists() and not diverged.exists():
            continue
        run = load_run(folder)
        c, acc = run.config, run.rounds["test_accuracy"]
        # A run that diverged: the last accuracy measured before the model became non-finite.
        last = float(acc.dropna().iloc[-1]) if acc.notna().any() else math.nan
        fraction = c["faults.byzantine_fraction"]
        at = json.loads(diverged.read_text())["round"] if diverged.exists() else 0
        final = run.summary.get("final_test_accuracy", last)
        rows.append({"aggregator": c["aggregator.name"],
                     "attack": c["faults.byzantine_attack"] if fraction else "none",
                     "byzantine_fraction": fraction, "seed": c["experiment.seed"],
                     "rounds": c["server.rounds"], "final_test_accuracy": final,
                     "diverged_at_round": at, "best_test_accuracy": acc.max(),
                     "wall_time_s": run.rounds["wall_time_s"].sum(),
                     "run": folder.name})  # fmt: skip
    df = pd.DataFrame(rows).sort_values(["rounds", "attack", "byzantine_fraction", "aggregator",
                                         "seed"])  # fmt: skip
    df.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    return df


def cell(runs: pd.DataFrame) -> str:
    """Mean ± sd of the final accuracy over seeds; a run that diverged is named with its round."""
    if (acc := runs["final_test_accuracy"]).empty:
        return "-"
    text = f"{acc.mean():.3f}" if len(acc) == 1 else f"{acc.mean():.3f} ± {acc.std():.3f}"
    diverged = int((runs["diverged_at_round"] > 0).sum())
    return f"{text} ({diverged}/{len(runs)} diverged)" if diverged else text


def grid_markdown(df: pd.DataFrame, out: Path, rounds: int) -> None:
    """The grid as a Markdown table: a row per attack and fraction, a column per aggregator."""
    d = (
        df[df["rounds"] == rounds]
        .assign(attack=lambda f: pd.Categorical(f["attack"], ["none", *ATTACKS], ordered=True))
        .sort_values(["attack", "byzantine_fraction"])
    )
    rows = [[attack, f"{fraction:g}", part["seed"].nunique(),
             *(cell(part[part["aggregator"] == agg]) for agg in AGGREGATORS)]
            for (attack, fraction), part in d.groupby(["attack", "byzantine_fraction"],
                                                      sort=False, observed=True)]  # fmt: skip
    head = ["attack", "Byzantine fraction", "seeds", *AGGREGATORS]
    (out / f"grid_r{rounds}.md").write_text(markdown_table(head, rows) + "\n")


def figures(df: pd.DataFrame, out: Path, rounds: int) -> None:
    """Accuracy against the Byzantine fraction, one panel per attack, a line per aggregator."""
    import matplotlib.pyplot as plt

    d = df[df["rounds"] == rounds]
    attacks = [a for a in ATTACKS if a in set(d["attack"])]
    if not attacks or d["byzantine_fraction"].nunique() < 2:
        return
    fig, axes = plt.subplots(1, len(attacks), figsize=(4 * len(attacks), 3.4), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, attack in zip(axes[0], attacks, strict=True):
        part = d[d["attack"].isin(["none", attack])]
        mean = part.groupby(["aggregator", "byzantine_fraction"])["final_test_accuracy"].mean()
        for agg in (a for a in AGGREGATORS if a in mean.index):
            ax.plot(mean[agg].index, mean[agg].values, marker="o", label=agg)
        ax.set(title=f"{attack} (scale {ATTACKS[attack]:g})",
               xlabel="Byzantine fraction of the population")  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"test accuracy after {rounds} rounds")
    axes[0, -1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"accuracy_vs_fraction_r{rounds}.png", dpi=110)


def curves(df: pd.DataFrame, out: Path, rounds: int, attack: str, fraction: float) -> None:
    """Test accuracy against rounds per aggregator, at one attack and fraction (mean of seeds)."""
    import matplotlib.pyplot as plt

    d = df[(df["rounds"] == rounds) & (df["attack"] == attack)]
    d = d[d["byzantine_fraction"] == fraction]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for agg, runs in ((a, d[d["aggregator"] == a]) for a in AGGREGATORS):
        if len(div := runs["diverged_at_round"]):
            note = f", diverged at round {int(div.min())}" if (div > 0).any() else ""
            mean = seed_band([out / "runs" / r for r in runs["run"]], "test_accuracy")["mean"]
            label = f"{agg} ({len(runs)} seed{'s' if len(runs) > 1 else ''}{note})"
            ax.plot(mean.index, mean, marker="o", label=label)
    ax.set(xlabel="round", ylabel="test accuracy",
           title=f"{fraction:.0%} {attack} clients (scale {ATTACKS[attack]:g})")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / f"accuracy_vs_round_{attack}_f{fraction:g}_r{rounds}.png", dpi=110)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    tabulate(ap.parse_args().out)
