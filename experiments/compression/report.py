"""Figures and table of results/compression/ from the finished runs of run.sh.

    python experiments/compression/report.py

Writes accuracy-vs-bytes curves (uploads and total), the Pareto figures (final accuracy
against total and against uploaded bytes) with their data as CSV, and table.md / table.csv:
per configuration, the exact bytes of one upload, its ratio to float32, and the mean over
seeds of the final test accuracy, of its mean over the last 5 rounds and of the best.
Then ef_table.md / ef_table.csv from the error-feedback checks of ef_check.sh (ef_runs/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim.analysis.pareto import plot_pareto
from fedsim.analysis.plots import legend_below, plot_accuracy_vs_bytes, save_figure
from fedsim.analysis.runs import Run, group_labels, group_seeds, load_runs

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "compression"


def short_name(run: Run) -> str:
    """The configuration in the field's words: 'top-k 1% + EF', 'QSGD 2-bit', ..."""
    c = run.flat_config
    up = c["compression.up"]
    pct = f"{c['compression.fraction'] * 100:g}%"
    name = {
        "none": "float32",
        "int8": "int8",
        "qsgd": f"QSGD {c['compression.bits']}-bit",
        "topk": f"top-k {pct}",
        "randk": f"random-k {pct}",
        "sign": "sign",
    }[up]
    if c["compression.error_feedback"]:
        name += " + EF"
    if c["compression.down"] == "int8":
        name += ", int8 down"
    return name


def table(groups: list[list[Run]]) -> pd.DataFrame:
    rows = []
    for group in groups:
        first = group[0].rounds
        per_upload = first["bytes_up"] / first["reporting"]
        final = [r.rounds["test_accuracy"].dropna().iloc[-1] for r in group]
        best = [r.rounds["test_accuracy"].max() for r in group]
        last5 = [r.rounds["test_accuracy"].dropna().iloc[-5:].mean() for r in group]
        rows.append(
            {
                "configuration": short_name(group[0]),
                "seeds": len(group),
                "bytes_per_upload": int(per_upload.iloc[0]),
                "MB_up_total": np.mean([r.rounds["bytes_up"].sum() for r in group]) / 1e6,
                "MB_total": np.mean([r.rounds["cum_bytes"].iloc[-1] for r in group]) / 1e6,
                "final_accuracy": np.mean(final),
                "final_accuracy_sd": np.std(final, ddof=1) if len(final) > 1 else np.nan,
                "last5_accuracy": np.mean(last5),
                "best_accuracy": np.mean(best),
            }
        )
    df = pd.DataFrame(rows)
    plain = df.loc[df["configuration"] == "float32"]
    if not plain.empty:
        df.insert(
            3, "upload_vs_float32", df["bytes_per_upload"] / plain["bytes_per_upload"].iloc[0]
        )
        df["final_vs_float32"] = df["final_accuracy"] - plain["final_accuracy"].iloc[0]
    return df.sort_values("bytes_per_upload", ascending=False, ignore_index=True)


def ef_table(runs: list[Run]) -> pd.DataFrame:
    """Top-k with and without error feedback: each setting's pair, means over seeds."""
    rows = []
    for group in group_seeds(runs):
        c = group[0].flat_config
        acc = [r.rounds["test_accuracy"].dropna().reset_index(drop=True) for r in group]
        rows.append(
            {
                "clients": f"{c['server.clients_per_round']} of {c['population.num_clients']}",
                "top-k": f"{c['compression.fraction'] * 100:g}%",
                "rounds": len(acc[0]),
                "error_feedback": "yes" if c["compression.error_feedback"] else "no",
                "seeds": len(group),
                "final_accuracy": np.mean([a.iloc[-1] for a in acc]),
                "last5_accuracy": np.mean([a.iloc[-5:].mean() for a in acc]),
                "best_accuracy": np.mean([a.max() for a in acc]),
                "mean_accuracy": np.mean([a.mean() for a in acc]),
                "last5_accuracy_at_50": np.mean([a.iloc[45:50].mean() for a in acc]),
            }
        )
    keys = ["clients", "top-k", "rounds", "error_feedback"]
    return pd.DataFrame(rows).sort_values(keys, ascending=[False, False, True, True])


def ef_pairs(runs: list[Run]) -> pd.DataFrame:
    """Per setting and seed, top-k with error feedback minus the same run without it."""
    runs = [r for r in runs if r.flat_config["compression.up"] == "topk"]
    by_key = {}
    for r in runs:
        c = r.flat_config
        key = (
            f"{c['server.clients_per_round']} of {c['population.num_clients']}",
            f"{c['compression.fraction'] * 100:g}%",
            c["server.rounds"],
            c["experiment.seed"],
        )
        by_key.setdefault(key, {})[c["compression.error_feedback"]] = r.rounds
    rows = []
    for (clients, frac, rounds, seed), pair in by_key.items():
        if len(pair) < 2:
            continue
        ef, plain = (pair[k].set_index("round") for k in (True, False))
        diff = ef["test_accuracy"] - plain["test_accuracy"]
        loss = ef["test_loss"] - plain["test_loss"]
        rows.append(
            {
                "clients": clients,
                "top-k": frac,
                "rounds": rounds,
                "seed": seed,
                "final_diff": diff.iloc[-1],
                "last5_diff": diff.iloc[-5:].mean(),
                "mean_diff": diff.mean(),
                "rounds_ef_ahead": f"{int((diff > 0).sum())}/{len(diff)}",
                "mean_test_loss_diff": loss.mean(),
            }
        )
    keys = ["clients", "top-k", "rounds", "seed"]
    return pd.DataFrame(rows).sort_values(keys, ascending=[False, False, True, True])


def _cell(column: str, value: object) -> str:
    if not isinstance(value, float):
        return str(value)
    if column == "final_vs_float32" or column.endswith("_diff"):
        return f"{value:+.4f}"
    if "accuracy" in column or column == "upload_vs_float32":
        return f"{value:.4f}"
    return f"{value:.2f}"


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "| --- |" + " ---: |" * (len(cols) - 1)]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_cell(c, row[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def relabel(fig, ax, names: dict[str, str]) -> None:
    """Replace the generated legend labels (config differences) by the short names."""
    for artist in [*ax.get_lines(), *ax.collections]:
        text = artist.get_label()
        for long, short in names.items():
            text = text.replace(long, short)
        artist.set_label(text)
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    for legend in list(fig.legends):
        legend.remove()
    legend_below(ax)


def main() -> int:
    folders = sorted(p.parent for p in (OUT / "runs").glob("*/*/summary.json"))
    runs = load_runs(folders)
    groups = group_seeds(runs)
    names = dict(zip(group_labels(groups), (short_name(g[0]) for g in groups), strict=True))
    names = {k: v + k[k.rfind(" (") :] if k.endswith("seeds)") else v for k, v in names.items()}
    figures = {
        "accuracy_vs_bytes_up": plot_accuracy_vs_bytes(runs, which="up", log=True),
        "accuracy_vs_bytes_total": plot_accuracy_vs_bytes(runs, which="total", log=True),
        "pareto_total": plot_pareto(runs, "final", "total"),
        "pareto_up": plot_pareto(runs, "final", "up"),
    }
    for stem, (fig, ax, data) in figures.items():
        relabel(fig, ax, names)
        save_figure(fig, OUT, stem)
        if "label" in data:
            data = data.assign(label=data["label"].map(names))
        data.to_csv(OUT / f"{stem}.csv", index=False)
    df = table(groups)
    df.to_csv(OUT / "table.csv", index=False)
    (OUT / "table.md").write_text(markdown(df))
    print(markdown(df))
    checks = sorted(p.parent for p in (OUT / "ef_runs").glob("*/*/summary.json"))
    grid_topk = [r for g in groups for r in g if r.flat_config["compression.up"] == "topk"]
    checks = load_runs(checks) + grid_topk
    for stem, frame in (("ef_table", ef_table(checks)), ("ef_pairs", ef_pairs(checks))):
        frame.to_csv(OUT / f"{stem}.csv", index=False)
        (OUT / f"{stem}.md").write_text(markdown(frame))
        print(markdown(frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
