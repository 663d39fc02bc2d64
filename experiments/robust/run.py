"""Robust aggregation against Byzantine clients: accuracy per aggregator, attack and fraction.

Every run is ``fmnist_2nn.toml`` (Fashion-MNIST 2NN, 100 IID clients, 20 per round) with the
aggregator, the attack and its scale, the Byzantine fraction, the seed and the rounds set.
Finished runs are skipped (``fedsim.analysis.sweep``). A run the attack makes diverge gets
diverged.json; the table reports the last accuracy measured before it stopped and the round.

Usage: python experiments/robust/run.py [--attacks A --fractions F --rounds 30 --seeds 0] [--table]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

import pandas as pd

from fedsim.analysis.bands import seed_band
from fedsim.analysis.runs import load_run
from fedsim.analysis.sweep import DIVERGED_FILE, SweepPoint, sweep
from fedsim.tables import markdown_table

HERE = Path(__file__).resolve().parent
OUT = Path("results/robust")

#: Each aggregator with its options: the server assumes up to 30% Byzantine clients (f = 6 of
#: the 20 per round for Krum, trim 30% from each end), and bounds norms near an honest update's.
KRUM = "aggregator.num_byzantine=6"
AGGREGATORS = {"mean": [], "median": [], "trimmed_mean": ["aggregator.trim_fraction=0.3"],
               "krum": [KRUM], "multi_krum": [KRUM],
               "norm_bounded_mean": ["aggregator.norm_bound=1.0"]}  # fmt: skip
#: Each attack with its scale: -10 x the honest update, mu - 1.0 sigma, N(0, 1) per coordinate,
#: 10 x the honest update.
ATTACKS = {"sign_flip": 10.0, "little_is_enough": 1.0, "gaussian": 1.0, "scaled": 10.0}
FRACTIONS = [0.0, 0.1, 0.2, 0.3]


def points(args: argparse.Namespace) -> list[SweepPoint]:
    """Without Byzantine clients the attack is irrelevant: one run per aggregator, first; then
    attack by attack, so that an interrupted grid leaves whole panels of the figure."""
    plan = [(args.attacks[0], f) for f in args.fractions if f == 0]
    plan += [(a, f) for a in args.attacks for f in args.fractions if f > 0]
    out = []
    for seed, (attack, fraction), agg in itertools.product(args.seeds, plan, args.aggregators):
        name = f"{'none' if fraction == 0 else f'{attack}_f{fraction:g}'}_{agg}_s{seed}"
        name += f"_r{args.rounds}"
        over = [f"aggregator.name='{agg}'", *AGGREGATORS[agg],
                f"faults.byzantine_fraction={fraction}", f"faults.byzantine_attack='{attack}'",
                f"faults.byzantine_scale={ATTACKS[attack]}", f"experiment.seed={seed}",
                f"server.rounds={args.rounds}", f"experiment.name='{name}'"]  # fmt: skip
        out.append(SweepPoint(name, tuple(over)))
    return out


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
        rows.append({"aggregator": c["aggregator.name"],
                     "attack": c["faults.byzantine_attack"] if fraction else "none",
                     "byzantine_fraction": fraction, "seed": c["experiment.seed"],
                     "rounds": c["server.rounds"],
                     "final_test_accuracy": run.summary.get("final_test_accuracy", last),
                     "diverged_at_round": json.loads(diverged.read_text())["round"]
                     if diverged.exists() else 0,
                     "best_test_accuracy": acc.max(),
                     "wall_time_s": run.rounds["wall_time_s"].sum(),
                     "run": folder.name})  # fmt: skip
    df = pd.DataFrame(rows)
    df = df.sort_values(["rounds", "attack", "byzantine_fraction", "aggregator", "seed"])
    df.to_csv(out / "summary.csv", index=False, float_format="%.4f")
    return df


def cell(runs: pd.DataFrame) -> str:
    """Mean ± sd of the final accuracy over seeds; a run that diverged is named with its round."""
    if runs.empty:
        return "-"
    acc = runs["final_test_accuracy"]
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="collect summary.csv and the figure")
    args = ap.parse_args()
    if not args.table:
        sweep(HERE / "fmnist_2nn.toml", points=points(args), out_dir=args.out / "runs",
              tables=False, plots=False)  # fmt: skip
        return
    df = table(args.out)
    for rounds in sorted(set(df["rounds"])):
        figures(df, args.out, rounds)
        grid_markdown(df, args.out, rounds)
    curves(df, args.out, 30, "sign_flip", 0.2)


if __name__ == "__main__":
    main()
