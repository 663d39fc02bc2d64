"""Health scenario: what eight hospitals gain by federating, and what DP and SecAgg cost.

Runs, for every seed: FedAvg over the 8 silos of federated.toml with DP (noise multiplier
0.5, 1, 2) and secure aggregation off and on; every silo trained alone (silo_alone.toml,
partition.client = 0..7); and all records pooled (centralised). Scores every final model on
the central test set (accuracy, ROC AUC). Writes runs/<run>/ (config, rounds, summary),
runs.csv (one row per run), summary.csv and summary.md (means over seeds) and health.png.

Usage: python experiments/health/run.py [--seeds 3] [--out results/health]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
FEDERATED = HERE / "federated.toml"
ALONE = HERE / "silo_alone.toml"
NOISE = (0.5, 1.0, 2.0)
SILOS = 8
POOLED = ["partition.inner='iid'", "partition.clients=1", "partition.options={}"]


def variants() -> list[tuple[str, str, Path, list[str]]]:
    """(name, group, config file, overrides) of every run of one seed."""
    out = []
    for secagg in (False, True):
        sa = ["privacy.secure_aggregation=true", "privacy.clip_norm=0.5"] if secagg else []
        tail = " + SecAgg" if secagg else ""
        out.append((f"FedAvg{tail}", "federated", FEDERATED, sa))
        for z in NOISE:
            dp = ["privacy.enabled=true", "privacy.clip_norm=0.5", "privacy.delta=1e-3"]
            over = [*sa, *dp, f"privacy.noise_multiplier={z}"]
            out.append((f"DP-FedAvg z={z:g}{tail}", "federated", FEDERATED, over))
    out.append(("centralised (pooled records)", "centralised", ALONE, POOLED))
    for k in range(SILOS):
        out.append((f"silo {k} alone", "silo alone", ALONE, [f"partition.client={k}"]))
    return out


def auc_of(result) -> float:
    """ROC AUC of the final model on the central test set (score: logit 1 - logit 0)."""
    from fedsim.models.scoring import binary_auc
    from fedsim.runner import prepare

    exp = prepare(result.config, HERE)
    x, y = exp.dataset.test_set()
    z = exp.model.logits(result.model, x).astype(np.float64)
    return binary_auc(z[:, 1] - z[:, 0], y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/health"))
    ap.add_argument("--tables-only", action="store_true", help="re-tabulate runs.csv, no runs")
    args = ap.parse_args()
    if args.tables_only:
        tabulate(pd.read_csv(args.out / "runs.csv"), args.out)
        return
    import fedsim

    rows = []
    for seed in range(args.seeds):
        for name, group, path, over in variants():
            slug = name.replace(" + ", "_").replace(" ", "_").replace("=", "")
            slug = slug.replace("(", "").replace(")", "")
            out = args.out / "runs" / f"{slug}-seed{seed}"
            if out.exists():
                shutil.rmtree(out)
            result = fedsim.run(path, overrides=[*over, f"experiment.seed={seed}"], out_dir=out)
            s = result.summary
            part = pd.read_csv(out / "partition.csv")
            rows.append(
                {
                    "run": name,
                    "group": group,
                    "seed": seed,
                    "config": path.name,
                    "overrides": " ".join(over),
                    "train_records": int(part["num_samples"].sum()),
                    "malignant_share": float(part["label_0"].sum() / part["num_samples"].sum()),
                    "accuracy": s["final_test_accuracy"],
                    "auc": auc_of(result),
                    "epsilon": s.get("epsilon", math.nan),
                    "bytes_up_MB": s["bytes_up_total"] / 1e6,
                    "bytes_down_MB": s["bytes_down_total"] / 1e6,
                    "sim_time_s": s["sim_time_s"],
                    "run_dir": str(out.relative_to(args.out)),
                }
            )
            print(json.dumps(rows[-1], default=str), flush=True)
    runs = pd.DataFrame(rows)
    runs.to_csv(args.out / "runs.csv", index=False, float_format="%.6g")
    tabulate(runs, args.out)


def tabulate(runs: pd.DataFrame, out: Path) -> None:
    """summary.csv, summary.md and health.png from the table of runs."""
    table = summarise(runs)
    table.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    write_markdown(table, out / "summary.md", runs["seed"].nunique())
    plot(runs, out / "health.png")


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds per run; the silos also as one 'mean silo' row."""
    keys = ["accuracy", "auc", "epsilon", "bytes_up_MB", "bytes_down_MB", "train_records"]
    keys.append("malignant_share")
    order = list(dict.fromkeys(runs["run"]))
    silos = runs[runs["group"] == "silo alone"]
    every_silo = silos.assign(run="silo alone, mean of 8 silos")
    # Per seed: the silo that does worst, as its own row.
    worst = silos.loc[silos.groupby("seed")["accuracy"].idxmin()].assign(run="silo alone, worst")
    frames = [runs, every_silo, worst]
    stats = pd.concat(frames).groupby("run", sort=False)
    table = stats[keys].mean()
    for k in ("accuracy", "auc"):
        table[f"{k}_sd"] = stats[k].std(ddof=1)
    table["seeds"] = stats["seed"].nunique()
    table["group"] = stats["group"].first()
    # Only federated runs send model updates out of a hospital; the others are one-client runs.
    table.loc[table["group"] != "federated", ["bytes_up_MB", "bytes_down_MB"]] = np.nan
    order += ["silo alone, mean of 8 silos", "silo alone, worst"]
    return table.loc[order].reset_index()


def write_markdown(table: pd.DataFrame, path: Path, seeds: int) -> None:
    lines = [
        f"Breast-cancer diagnosis across 8 hospitals; means over {seeds} seeds (sd over seeds, "
        "and over silos in the 'mean of 8 silos' row, in brackets); central test set of 113 "
        "patients; epsilon at delta = 1e-3; bytes only where model updates leave a hospital.",
        "",
        "| run | accuracy | ROC AUC | epsilon | MB up | MB down | training records "
        "| malignant share |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in table.itertuples():
        eps = "-" if math.isnan(r.epsilon) else f"{r.epsilon:.1f}"
        up = "-" if math.isnan(r.bytes_up_MB) else f"{r.bytes_up_MB:.3f}"
        down = "-" if math.isnan(r.bytes_down_MB) else f"{r.bytes_down_MB:.3f}"
        lines.append(
            f"| {r.run} | {r.accuracy:.3f} ({r.accuracy_sd:.3f}) | {r.auc:.3f} ({r.auc_sd:.3f}) | "
            f"{eps} | {up} | {down} | {r.train_records:.0f} | {r.malignant_share:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(runs: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(runs["run"]))
    fig, axes = plt.subplots(1, 2, figsize=(9, 5.5), sharey=True, layout="constrained")
    colours = {"federated": "tab:blue", "centralised": "tab:green", "silo alone": "tab:red"}
    for ax, metric, label in zip(
        axes, ("accuracy", "auc"), ("test accuracy", "ROC AUC"), strict=True
    ):
        for i, name in enumerate(names):
            d = runs[runs["run"] == name]
            colour = colours[d["group"].iloc[0]]
            ax.scatter(d[metric], np.full(len(d), i), s=12, color=colour, alpha=0.5)
            ax.scatter([d[metric].mean()], [i], marker="|", s=200, color=colour)
        ax.set_xlabel(f"{label} (dots: seeds, bar: mean)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle("8 hospitals, breast-cancer diagnosis: federated vs each hospital alone")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
