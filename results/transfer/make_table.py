"""Summarise results/transfer/runs/*/summary.json: table.csv, table.md, accuracy_vs_overlap.png."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

HERE = Path(__file__).resolve().parent


def rows() -> pd.DataFrame:
    out = []
    for f in sorted((HERE / "runs").glob("*/summary.json")):
        s = json.loads(f.read_text())
        out.append(
            {
                "overlap": s["overlap"],
                "seed": s["seed"],
                "epochs": s["rounds"],
                "ftl_accuracy": s["test_accuracy"],
                "ftl_auc": s["final_test_auc"],
                "overlap_only_accuracy": s["overlap_only_accuracy"],
                "overlap_only_auc": s["overlap_only_auc"],
                "gain": s["test_accuracy"] - s["overlap_only_accuracy"],
                "test_samples": s["test_samples"],
                "bytes": s["bytes_up_total"] + s["bytes_down_total"],
                "psi_bytes": s["psi_bytes"],
                "sim_time_s": s["sim_time_s"],
                "wall_time_s": s["wall_time_s"],
            }
        )
    return pd.DataFrame(out).sort_values(["overlap", "seed"], kind="stable")


def table_md(frame: pd.DataFrame) -> str:
    lines = [
        "| overlap | epochs | FTL accuracy | overlap-only accuracy | gain (wins) | FTL AUC | "
        "overlap-only AUC | MB sent (of which PSI) | sim. time s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for overlap, g in frame.groupby("overlap"):

        def ms(col: str, g: pd.DataFrame = g) -> str:
            return f"{g[col].mean():.3f} ± {g[col].std():.3f}"

        wins = f"{int((g['gain'] > 0).sum())}/{len(g)}"
        mb = f"{g['bytes'].mean() / 1e6:.2f} ({g['psi_bytes'].mean() / 1e6:.2f})"
        lines.append(
            f"| {overlap} | {int(g['epochs'].iloc[0])} | {ms('ftl_accuracy')} | "
            f"{ms('overlap_only_accuracy')} | {ms('gain')} ({wins}) | {ms('ftl_auc')} | "
            f"{ms('overlap_only_auc')} | {mb} | {g['sim_time_s'].mean():.1f} |"
        )
    return "\n".join(lines) + "\n"


def figure(frame: pd.DataFrame) -> None:
    means = frame.groupby("overlap").agg(["mean", "std"])
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for col, label in (("ftl_accuracy", "FTL"), ("overlap_only_accuracy", "overlap only")):
        ax.errorbar(means.index, means[col]["mean"], yerr=means[col]["std"], marker="o",
                    capsize=3, label=label)  # fmt: skip
    ax.axhline(0.85, color="grey", linestyle="--", linewidth=1, label="ceiling (15% flipped)")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(means.index, [str(v) for v in means.index])
    ax.set_xlabel("overlap (shared samples, labelled by the source)")
    ax.set_ylabel("target-only test accuracy")
    ax.set_title(f"Target accuracy, mean ± sd over {frame['seed'].nunique()} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "accuracy_vs_overlap.png", dpi=120)


def main() -> None:
    frame = rows()
    frame.to_csv(HERE / "table.csv", index=False)
    md = table_md(frame)
    (HERE / "table.md").write_text(md)
    figure(frame)
    print(md)


if __name__ == "__main__":
    main()
