"""Health scenario: what eight hospitals gain by federating, and what DP and SecAgg cost.

Runs, for every seed: FedAvg over the 8 silos of federated.toml with DP (noise multiplier
0.5, 1, 2) and secure aggregation off and on; every silo trained alone (silo_alone.toml,
partition.client = 0..7); all records pooled. Scores every final model on the central test
set (accuracy, ROC AUC): runs/<run>/, runs.csv, summary.csv and .md, health.png.
Usage: python experiments/health/run.py [--seeds 3] [--out results/health]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep
from fedsim.models.scoring import binary_auc
from fedsim.runner import prepare
from fedsim.tables import markdown_table

HERE = Path(__file__).resolve().parent
FEDERATED = HERE / "federated.toml"
ALONE = HERE / "silo_alone.toml"
NOISE = (0.5, 1.0, 2.0)
SILOS, FLOAT = 8, "%.6g"
POOLED = ["partition.inner='iid'", "partition.clients=1", "partition.options={}"]
DP = ["privacy.enabled=true", "privacy.clip_norm=0.5", "privacy.delta=1e-3"]
SECAGG = ["privacy.secure_aggregation=true", "privacy.clip_norm=0.5"]


def points(seeds: int) -> list[SweepPoint]:
    """Every run of every seed: FedAvg and DP-FedAvg, without and with SecAgg; pooled; silos."""
    runs = []
    for sa, tail in (([], ""), (SECAGG, " + SecAgg")):
        runs.append((f"FedAvg{tail}", "federated", FEDERATED, sa))
        runs += [(f"DP-FedAvg z={z:g}{tail}", "federated", FEDERATED,
                  [*sa, *DP, f"privacy.noise_multiplier={z}"]) for z in NOISE]  # fmt: skip
    runs.append(("centralised (pooled records)", "centralised", ALONE, POOLED))
    runs += [(f"silo {k} alone", "silo alone", ALONE, [f"partition.client={k}"])
             for k in range(SILOS)]  # fmt: skip
    slug = str.maketrans({" ": "_", "=": None, "(": None, ")": None})
    return [SweepPoint(f"{name.replace(' + ', '_').translate(slug)}-seed{seed}",
                       (*over, f"experiment.seed={seed}"), {"run": name, "group": group,
                       "seed": seed, "config": path.name, "overrides": " ".join(over)}, path)
            for seed in range(seeds) for name, group, path, over in runs]  # fmt: skip


def record(o: RunOutcome) -> dict:
    """One line of runs.csv; the ROC AUC scores the final model (logit 1 - logit 0)."""
    s, part = o.summary, pd.read_csv(o.folder / "partition.csv")
    exp = prepare(o.run.config, HERE)
    x, y = exp.dataset.test_set()
    z = exp.model.logits(o.model, x).astype(np.float64)
    return {
        **o.values,
        "train_records": int(part["num_samples"].sum()),
        "malignant_share": float(part["label_0"].sum() / part["num_samples"].sum()),
        "accuracy": s["final_test_accuracy"],
        "auc": binary_auc(z[:, 1] - z[:, 0], y),
        "epsilon": s.get("epsilon", math.nan),
        "bytes_up_MB": s["bytes_up_total"] / 1e6,
        "bytes_down_MB": s["bytes_down_total"] / 1e6,
        "sim_time_s": s["sim_time_s"],
        "run_dir": f"runs/{o.run.name}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables-only", action="store_true", help="re-tabulate runs.csv, no runs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/health"))
    args = ap.parse_args()
    if args.tables_only:
        tabulate(pd.read_csv(args.out / "runs.csv"), args.out)
        return
    # Every run again: the AUC scores the final models, which run folders do not keep.
    done = sweep(FEDERATED, points=points(args.seeds), out_dir=args.out / "runs", fresh=True,
                 models=True, tables=False, plots=False)  # fmt: skip
    runs = pd.DataFrame(record(o) for o in done.runs)
    tabulate(runs, args.out)


def tabulate(runs: pd.DataFrame, out: Path) -> None:
    """runs.csv, summary.csv (mean and sd over seeds per run; the silos also as a 'mean silo' and
    a 'worst silo' row), summary.md and health.png from the table of runs."""
    runs.to_csv(out / "runs.csv", index=False, float_format=FLOAT)
    runs = pd.read_csv(out / "runs.csv")  # as written: a full run and --tables-only agree
    keys = ["accuracy", "auc", "epsilon", "bytes_up_MB", "bytes_down_MB", "train_records",
            "malignant_share"]  # fmt: skip
    extra = ["silo alone, mean of 8 silos", "silo alone, worst"]
    silos = runs[runs["group"] == "silo alone"]
    # Per seed: the silo that does worst, as its own row.
    worst = silos.loc[silos.groupby("seed")["accuracy"].idxmin()].assign(run=extra[1])
    stats = pd.concat([runs, silos.assign(run=extra[0]), worst]).groupby("run", sort=False)
    table = stats[keys].mean()
    for k in ("accuracy", "auc"):
        table[f"{k}_sd"] = stats[k].std(ddof=1)
    table["seeds"] = stats["seed"].nunique()
    table["group"] = stats["group"].first()
    # Only federated runs send model updates out of a hospital; the others are one-client runs.
    table.loc[table["group"] != "federated", ["bytes_up_MB", "bytes_down_MB"]] = np.nan
    table = table.loc[[*dict.fromkeys(runs["run"]), *extra]].reset_index()
    table.to_csv(out / "summary.csv", index=False, float_format=FLOAT)

    def num(v: float, fmt: str) -> str:
        return "-" if math.isnan(v) else format(v, fmt)

    rows = [[r.run, f"{r.accuracy:.3f} ({r.accuracy_sd:.3f})", f"{r.auc:.3f} ({r.auc_sd:.3f})",
             num(r.epsilon, ".1f"), num(r.bytes_up_MB, ".3f"), num(r.bytes_down_MB, ".3f"),
             f"{r.train_records:.0f}", f"{r.malignant_share:.2f}"]
            for r in table.itertuples()]  # fmt: skip
    head = ["run", "accuracy", "ROC AUC", "epsilon", "MB up", "MB down", "training records",
            "malignant share"]  # fmt: skip
    (out / "summary.md").write_text(
        f"Breast-cancer diagnosis across 8 hospitals; means over {runs['seed'].nunique()} seeds "
        "(sd over seeds, and over silos in the 'mean of 8 silos' row, in brackets); central test "
        "set of 113 patients; epsilon at delta = 1e-3; bytes only where model updates leave a "
        "hospital.\n\n" + markdown_table(head, rows, ["", *["right"] * 7]) + "\n"
    )
    plot(runs, out / "health.png")


def plot(runs: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(runs["run"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 5.5), sharey=True, layout="constrained")
    colours = {"federated": "tab:blue", "centralised": "tab:green", "silo alone": "tab:red"}
    for ax, metric in zip(axes, ("accuracy", "auc"), strict=True):
        for i, name in enumerate(names):
            d = runs[runs["run"] == name]
            colour = colours[d["group"].iloc[0]]
            ax.scatter(d[metric], np.full(len(d), i), s=12, color=colour, alpha=0.5)
            ax.scatter([d[metric].mean()], [i], marker="|", s=200, color=colour)
        label = "test accuracy" if metric == "accuracy" else "ROC AUC"
        ax.set_xlabel(f"{label} (dots: seeds, bar: mean)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("8 hospitals, breast-cancer diagnosis: federated vs each hospital alone")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
