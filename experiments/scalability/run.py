"""Time per round against cohort size, population size and number of workers.

Run from the repository root:  python experiments/scalability/run.py  (results/scalability/,
see the README beside this file). Every point runs in its own process (fedsim.bench.target, or
the numpy floor), measured from outside for peak memory, so this is not a ``fedsim sweep``;
seconds per round are the median of the rounds after the first two. ``--tables-only`` rebuilds
summary.csv and the figures from runs.csv.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

# A checkout runs this without installing fedsim.
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from fedsim.bench.harness import machine, run_fedsim, run_floor  # noqa: E402

CONFIG = ROOT / "experiments" / "scalability" / "population_1m.toml"
COHORTS = (100, 300, 1_000, 3_000, 10_000)
POPULATIONS = (10_000, 100_000, 1_000_000)
CRLF = "\r\n"  # the csv module's line ends, which the committed tables have
W2 = ["server.clients_per_round=1000", "population.num_clients=10000"]


def grid(skip: list[str], cpus: int) -> list[tuple[str, int, int, str, int, str, list[str]]]:
    """(sweep, K, N, workload, rounds, workers or "floor", overrides) of one repetition."""
    w, out = str(cpus), []
    for k in COHORTS if "cohort" not in skip else ():
        # Enough rounds for a steady state after two warm-up rounds, fewer for big cohorts.
        rounds = 10 if k <= 1_000 else 6 if k <= 3_000 else 5
        sets = [f"server.clients_per_round={k}"]
        out += [("cohort", k, 1_000_000, "1M", rounds, w, sets),
                ("cohort", k, 1_000_000, "1M", 3, "floor", sets)]  # fmt: skip
    out += [("population", 1000, n, f"N={n}", 10, w, [W2[0], f"population.num_clients={n}"])
            for n in POPULATIONS if "population" not in skip]  # fmt: skip
    if "workers" not in skip:
        out += [("workers", 1000, 10_000, "W2", 10, c, W2)
                for c in dict.fromkeys(["local", "1", "2", w])]  # fmt: skip
        out.append(("workers-floor", 1000, 10_000, "W2", 6, "floor", W2))
    return out


def measure(skip: list[str], repeat: int) -> list[dict[str, Any]]:
    """Every point, each sweep's repetitions one after another."""
    rows, points = [], grid(skip, os.cpu_count() or 1)
    for sweep in dict.fromkeys(p[0] for p in points):
        for rep in range(repeat):
            for _, k, n, workload, rounds, workers, sets in (p for p in points if p[0] == sweep):
                run = (run_floor(workload, CONFIG, rounds, 1, rep, sets) if workers == "floor"
                       else run_fedsim(workload, CONFIG, rounds, workers, rep, sets))  # fmt: skip
                head = {"sweep": sweep, "clients_per_round": k, "num_clients": n}
                rows.append(head | asdict(run))
                print(f"  {sweep:10s} N={n:>9,} K={k:>6,} {run.system:6s} workers="
                      f"{run.workers:>5s}: {run.steady_s:.4f} s/round, peak "
                      f"{run.peak_rss_mib:.0f} MiB ({run.peak_process})", flush=True)  # fmt: skip
    return rows


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """Medians over repetitions of each (sweep, system, workers, N, K) point."""
    keys = ["sweep", "system", "workers", "num_clients", "clients_per_round"]
    out = []
    for (sweep, system, workers, n, k), rs in runs.groupby(keys, sort=False, dropna=False):
        steady = statistics.median(rs["steady_s"])
        out.append({"sweep": sweep, "system": system, "workers": workers, "num_clients": n,
                    "clients_per_round": k, "runs": len(rs), "s_per_round": steady,
                    "us_per_client": 1e6 * steady / k,
                    "server_s": statistics.median(rs["server_s"]),
                    "train_s": statistics.median(rs["train_s"]),
                    "peak_rss_mib": rs["peak_rss_mib"].max(),
                    "peak_process": rs["peak_process"][rs["peak_rss_mib"].idxmax()]})  # fmt: skip
    return pd.DataFrame(out)


def plot(summary: pd.DataFrame, out: Path) -> None:
    import matplotlib.pyplot as plt

    from fedsim.analysis import save_figure

    cohort = summary[summary["sweep"] == "cohort"].sort_values("clients_per_round")
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for system, style, label in (("fedsim", "o-", "fedsim"),
                                 ("floor", "s--", "numpy floor (one process)")):  # fmt: skip
        if len(pts := cohort[cohort["system"] == system]):
            ax.plot(pts["clients_per_round"], pts["s_per_round"], style, label=label)
    if len(ref := cohort[cohort["system"] == "fedsim"]):
        xs, last = ref["clients_per_round"], ref.iloc[-1]
        ax.plot(xs, last["s_per_round"] * xs / last["clients_per_round"], ":", color="grey",
                label="linear in cohort")  # fmt: skip
    ax.set(xscale="log", yscale="log", xlabel="clients per round (population 1,000,000)",
           ylabel="seconds per round (steady state)")  # fmt: skip
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    save_figure(fig, out, "time_vs_cohort", formats=("png", "svg"))
    if len(pts := summary[summary["sweep"] == "workers"]):
        fig, ax = plt.subplots(figsize=(5, 3.8))
        ax.bar(pts["workers"].astype(str), pts["s_per_round"], color="tab:blue")
        if len(floor := summary[summary["sweep"] == "workers-floor"]):
            ax.axhline(floor["s_per_round"].iloc[0], ls="--", color="grey", label="numpy floor")
            ax.legend()
        ax.set(xlabel="workers ('local' = in-process backend)",
               ylabel="seconds per round, W2 (1,000 of 10,000)")  # fmt: skip
        fig.tight_layout()
        save_figure(fig, out, "time_vs_workers", formats=("png", "svg"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "results" / "scalability"))
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[], choices=["cohort", "population",
                        "workers", "split"])  # fmt: skip
    parser.add_argument("--tables-only", action="store_true", help="summary from runs.csv")
    args = parser.parse_args()
    (out := Path(args.out)).mkdir(parents=True, exist_ok=True)
    if args.tables_only:
        runs = pd.read_csv(out / "runs.csv", dtype={"workers": str}, keep_default_na=False,
                           na_values=["nan"])  # fmt: skip
    else:
        runs = pd.DataFrame(measure(args.skip, args.repeat))
        runs.to_csv(out / "runs.csv", index=False, na_rep="nan", lineterminator=CRLF)
        if "split" not in args.skip:
            from server_split import server_split  # beside this file

            split = server_split(CONFIG, 10_000, 4)
            print("server split at 10,000 clients per round (in-process):", split)
            pd.DataFrame([split]).to_csv(out / "server_split.csv", index=False, lineterminator=CRLF)
        (out / "machine.json").write_text(json.dumps(machine(), indent=2) + "\n")
    summary = summarise(runs)
    summary.to_csv(out / "summary.csv", index=False, na_rep="nan", lineterminator=CRLF)
    plot(summary, out)
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
