"""The privacy trade-off: accuracy against epsilon, bytes and simulated time.

Grid over base.toml (1,000 synthetic IID clients, 100 per round, 40 rounds): plain FedAvg,
and DP-FedAvg with noise_multiplier in {0, 0.5, 1, 3}, each without and with secure
aggregation. Writes every run folder, summary.csv, summary.md and the plots to the output
folder. Finished runs (their summary.json exists) are kept, so repeating the command only
re-tabulates them.

Usage: python experiments/privacy/run.py [--rounds 40] [--out results/privacy]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd

from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep

HERE = Path(__file__).resolve().parent
NOISE = [0.0, 0.5, 1.0, 3.0]
FLOAT = "%.6g"
DP = ["privacy.clip_norm=0.5", "privacy.delta=1e-4"]


def points(rounds: int) -> list[SweepPoint]:
    """Every run: FedAvg, then DP at each noise multiplier; without, then with SecAgg."""
    out = []
    for secagg in (False, True):
        sa = [f"privacy.secure_aggregation={'true' if secagg else 'false'}"]
        clip = ["privacy.clip_norm=0.5"] if secagg else []
        keys = [({"dp": False, "noise_multiplier": math.nan, "secagg": secagg}, sa + clip)]
        for z in NOISE:
            dp = [*sa, "privacy.enabled=true", f"privacy.noise_multiplier={z}", *DP]
            keys.append(({"dp": True, "noise_multiplier": z, "secagg": secagg}, dp))
        for key, over in keys:
            name = label(key).replace(" + ", "_").replace(" ", "_").replace("=", "")
            extra = [f"server.rounds={rounds}", f"experiment.name='{name}'"]
            out.append(SweepPoint(name, (*over, *extra), {"run": label(key), **key}))
    return out


def label(key: dict) -> str:
    name = f"DP z={key['noise_multiplier']:g}" if key["dp"] else "FedAvg"
    return name + (" + SecAgg" if key["secagg"] else "")


def record(o: RunOutcome) -> dict:
    """One line of summary.csv."""
    s = o.summary
    return {
        **o.values,
        "final_accuracy": s["final_test_accuracy"],
        "epsilon": s.get("epsilon", math.nan),
        "bytes_up_MB": s["bytes_up_total"] / 1e6,
        "bytes_down_MB": s["bytes_down_total"] / 1e6,
        "sim_time_s": s["sim_time_s"],
        "aborted_rounds": s.get("aborted_rounds", 0),
        "wall_s": s["wall_time_s"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--out", type=Path, default=Path("results/privacy"))
    args = ap.parse_args()
    done = sweep(HERE / "base.toml", points=points(args.rounds), out_dir=args.out / "runs",
                 tables=False, plots=False)  # fmt: skip
    df = pd.DataFrame(record(o) for o in done.runs)
    df.to_csv(args.out / "summary.csv", index=False, float_format=FLOAT)
    write_markdown(df, args.out / "summary.md", args.rounds)
    plot(df, [o.folder for o in done.runs], args.out / "plots")


def write_markdown(df: pd.DataFrame, path: Path, rounds: int) -> None:
    lines = [
        f"Privacy trade-off, {rounds} rounds, 1,000 clients, q = 0.1, clip norm 0.5, "
        "delta = 1e-4 (RDP accountant).",
        "",
        "| run | final accuracy | epsilon | MB up | MB down | simulated time (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in df.itertuples():
        eps = "-" if math.isnan(r.epsilon) else f"{r.epsilon:.2f}"
        lines.append(
            f"| {r.run} | {r.final_accuracy:.4f} | {eps} | {r.bytes_up_MB:.1f} | "
            f"{r.bytes_down_MB:.1f} | {r.sim_time_s:.1f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(df: pd.DataFrame, folders: list[Path], out: Path) -> None:
    import matplotlib.pyplot as plt

    from fedsim.analysis import plot_accuracy_vs_bytes
    from fedsim.analysis.plots import save_figure

    out.mkdir(parents=True, exist_ok=True)
    fig, _, _ = plot_accuracy_vs_bytes(folders)
    save_figure(fig, out, "accuracy_vs_bytes", formats=("png",))
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    for secagg, marker in ((False, "o"), (True, "x")):
        d = df[df["dp"] & (df["secagg"] == secagg) & df["epsilon"].map(math.isfinite)]
        ax.plot(d["epsilon"], d["final_accuracy"], marker=marker, linestyle="-",
                label="DP + SecAgg" if secagg else "DP")  # fmt: skip
        for r in d.itertuples():
            ax.annotate(f"z={r.noise_multiplier:g}", (r.epsilon, r.final_accuracy), fontsize=7)
    plain = df[~df["dp"] & ~df["secagg"]]["final_accuracy"].iloc[0]
    ax.axhline(plain, color="grey", linestyle=":", label="FedAvg (no DP)")
    # z = 0 clips but adds no noise: epsilon is infinite, so it is a level, not a point.
    clip_only = df[df["dp"] & (df["noise_multiplier"] == 0) & ~df["secagg"]]["final_accuracy"]
    ax.axhline(clip_only.iloc[0], color="tab:red", linestyle="--", label="z=0: clipping only")
    ax.set_xscale("log")
    ax.set_xlabel("epsilon (delta = 1e-4)")
    ax.set_ylabel("final test accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, out, "accuracy_vs_epsilon", formats=("png",))


if __name__ == "__main__":
    main()
