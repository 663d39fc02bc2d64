"""Synchronous FedAvg with a deadline vs FedBuff vs FedAsync on a heterogeneous population.

Three configs in this folder (sync_fedavg.toml, fedbuff.toml, fedasync.toml) x seeds; every
run does about the same number of client updates (60 rounds x 100, 600 steps x 10, 6000 x 1).
Writes, into --out: time_to_target.csv (simulated time and client updates to reach each
target accuracy, per run), summary.md (mean and spread over seeds), accuracy_vs_time.{png,svg}
and its data accuracy_vs_time.csv. Run folders go to <out>/runs; finished runs are skipped
(``fedsim.analysis.sweep``), so the script can be stopped and started again.

Usage: python experiments/async/run.py [--seeds 3] [--targets 0.75 0.8 0.85] [--jobs 1]
                                       [--out results/async]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fedsim.analysis.plots import plot_accuracy_vs_time, save_figure
from fedsim.analysis.ranking import speedup_over
from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep

HERE = Path(__file__).resolve().parent
METHODS = {
    "sync FedAvg (deadline)": "sync_fedavg.toml",
    "FedBuff (K=10)": "fedbuff.toml",
    "FedAsync (K=1)": "fedasync.toml",
}
SYNC = next(iter(METHODS))


def points(seeds: int) -> list[SweepPoint]:
    """Each method's config, seed by seed; a run's folder is <config stem>-seed<N>."""
    return [
        SweepPoint(
            f"{Path(c).stem}-seed{s}", (f"experiment.seed={s}",), {"method": m, "seed": s}, HERE / c
        )  # fmt: skip
        for s in range(seeds)
        for m, c in METHODS.items()
    ]


def time_to_target(o: RunOutcome, targets: list[float]) -> list[dict]:
    """For each target: the simulated time, client updates and server steps to reach it."""
    rounds = o.rounds
    updates = rounds["reporting"].cumsum()
    rows = []
    for target in targets:
        hit = rounds.index[rounds["test_accuracy"] >= target]
        first = hit[0] if len(hit) else None
        rows.append({
            **o.values, "target": target,
            "sim_time_s": rounds["sim_time_s"][first] if first is not None else float("nan"),
            "client_updates": int(updates[first]) if first is not None else -1,
            "server_steps": int(rounds["round"][first]) if first is not None else -1,
            "final_accuracy": rounds["test_accuracy"].dropna().iloc[-1],
            "final_sim_time_s": rounds["sim_time_s"].iloc[-1],
        })  # fmt: skip
    return rows


def summary(df: pd.DataFrame) -> str:
    """Mean time to target over the seeds that reached it, and per-seed speed-ups over sync
    (">": sync missed the target, so its whole simulated length bounds the speed-up)."""
    lines = [
        "| target | method | reached | simulated time to target, s (mean; min-max) | "
        "client updates (mean) | speed-up vs sync (per seed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for target, sub in df.groupby("target", sort=True):
        sync = sub[sub["method"] == SYNC].set_index("seed")
        for method in METHODS:
            m = sub[sub["method"] == method].set_index("seed")
            t, u, ok = m["sim_time_s"], m["client_updates"], m["sim_time_s"].notna()
            speed, bound = speedup_over(
                sync["sim_time_s"].reindex(m.index), t, sync["final_sim_time_s"].reindex(m.index)
            )
            cells = [
                "-" if pd.isna(v) else f"{'>' if b else ''}{v:.1f}x"
                for v, b in zip(speed, bound, strict=True)
            ]
            lines.append(
                f"| {target:.2f} | {method} | {ok.sum()}/{len(t)} | {t[ok].mean():.1f}; "
                f"{t[ok].min():.1f}-{t[ok].max():.1f} | {u[ok].mean():.0f} | {', '.join(cells)} |"
            )
    final = df.drop_duplicates(["method", "seed"]).groupby("method", sort=False)
    lines += ["", "| method | final test accuracy (mean of seeds) | simulated time of the run, s |",
              "| --- | --- | --- |"]  # fmt: skip
    lines += [
        f"| {method} | {m['final_accuracy'].mean():.4f} | {m['final_sim_time_s'].mean():.1f} |"
        for method, m in final
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.8, 0.85])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/async"))
    a = ap.parse_args()
    done = sweep(HERE / METHODS[SYNC], points=points(a.seeds), out_dir=a.out / "runs",
                 jobs=a.jobs, tables=False, plots=False)  # fmt: skip
    df = pd.DataFrame(r for o in done.runs for r in time_to_target(o, a.targets))
    df.to_csv(a.out / "time_to_target.csv", index=False, float_format="%.6g")
    (a.out / "summary.md").write_text(summary(df))
    fig, _, data = plot_accuracy_vs_time([o.folder for o in done.runs])
    save_figure(fig, a.out, "accuracy_vs_time")
    data.to_csv(a.out / "accuracy_vs_time.csv", index=False, float_format="%.6g")
    print((a.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
