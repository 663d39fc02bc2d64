"""Synchronous FedAvg with a deadline vs FedBuff vs FedAsync on a heterogeneous population.

Three configs in this folder (sync_fedavg.toml, fedbuff.toml, fedasync.toml) x seeds; every
run does about the same number of client updates (60 rounds x 100, 600 steps x 10, 6000 x 1).
Writes, into --out: time_to_target.csv (simulated time and client updates to reach each
target accuracy, per run), summary.md (mean and spread over seeds), accuracy_vs_time.{png,svg}
and its data accuracy_vs_time.csv. Run folders go to <out>/runs (not committed); runs whose
summary.json exists are kept, so the script can be stopped and started again.

Usage: python experiments/async/run.py [--seeds 3] [--targets 0.75 0.8 0.85] [--jobs 1]
                                       [--out results/async]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
METHODS = {
    "sync FedAvg (deadline)": "sync_fedavg.toml",
    "FedBuff (K=10)": "fedbuff.toml",
    "FedAsync (K=1)": "fedasync.toml",
}


def run_one(args: tuple[str, int, str]) -> str:
    config, seed, run_dir = args
    import fedsim

    if not (Path(run_dir) / "summary.json").exists():
        fedsim.run(HERE / config, overrides=[f"experiment.seed={seed}"], out_dir=run_dir,
                   resume=Path(run_dir, "config.toml").exists())  # fmt: skip
    return run_dir


def time_to_target(method: str, seed: int, run_dir: Path, targets: list[float]) -> list[dict]:
    rounds = pd.read_csv(run_dir / "rounds.csv")
    updates = rounds["reporting"].cumsum()
    rows = []
    for target in targets:
        hit = rounds.index[rounds["test_accuracy"] >= target]
        first = hit[0] if len(hit) else None
        rows.append(
            {
                "method": method,
                "seed": seed,
                "target": target,
                "sim_time_s": rounds["sim_time_s"][first] if first is not None else float("nan"),
                "client_updates": int(updates[first]) if first is not None else -1,
                "server_steps": int(rounds["round"][first]) if first is not None else -1,
                "final_accuracy": rounds["test_accuracy"].dropna().iloc[-1],
                "final_sim_time_s": rounds["sim_time_s"].iloc[-1],
            }
        )
    return rows


def summary(df: pd.DataFrame) -> str:
    """Mean time to target over the seeds that reached it, and per-seed speed-ups over sync."""
    sync = next(iter(METHODS))
    lines = [
        "| target | method | reached | simulated time to target, s (mean; min-max) | "
        "client updates (mean) | speed-up vs sync (per seed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for target, sub in df.groupby("target", sort=True):
        base = sub[sub["method"] == sync].set_index("seed")["sim_time_s"]
        for method in METHODS:
            m = sub[sub["method"] == method].set_index("seed")
            t, u = m["sim_time_s"], m["client_updates"]
            ok = t.notna()
            speed = []
            for seed in m.index:
                if pd.isna(t[seed]):
                    speed.append("-")
                elif pd.isna(base[seed]):
                    speed.append(f">{_sync_end(df, seed) / t[seed]:.1f}x")
                else:
                    speed.append(f"{base[seed] / t[seed]:.1f}x")
            lines.append(
                f"| {target:.2f} | {method} | {ok.sum()}/{len(t)} | {t[ok].mean():.1f}; "
                f"{t[ok].min():.1f}-{t[ok].max():.1f} | {u[ok].mean():.0f} | "
                f"{', '.join(speed)} |"
            )
    final = df.drop_duplicates(["method", "seed"]).groupby("method", sort=False)
    lines += ["", "| method | final test accuracy (mean of seeds) | simulated time of the run, s |",
              "| --- | --- | --- |"]  # fmt: skip
    for method, m in final:
        lines.append(
            f"| {method} | {m['final_accuracy'].mean():.4f} | {m['final_sim_time_s'].mean():.1f} |"
        )
    return "\n".join(lines) + "\n"


def _sync_end(df: pd.DataFrame, seed: int) -> float:
    """The simulated length of the synchronous run of ``seed`` (a bound when it missed)."""
    row = df[(df["method"] == next(iter(METHODS))) & (df["seed"] == seed)]
    return float(row["final_sim_time_s"].iloc[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", type=float, nargs="+", default=[0.75, 0.8, 0.85])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("results/async"))
    a = ap.parse_args()
    plan = [
        (method, config, seed, str(a.out / "runs" / f"{Path(config).stem}-seed{seed}"))
        for seed in range(a.seeds)
        for method, config in METHODS.items()
    ]
    with ProcessPoolExecutor(a.jobs) as pool:
        list(pool.map(run_one, [(c, s, d) for _, c, s, d in plan]))
    rows = [r for m, _, s, d in plan for r in time_to_target(m, s, Path(d), a.targets)]
    df = pd.DataFrame(rows)
    df.to_csv(a.out / "time_to_target.csv", index=False, float_format="%.6g")
    (a.out / "summary.md").write_text(summary(df))

    from fedsim.analysis.plots import plot_accuracy_vs_time, save_figure

    fig, _, data = plot_accuracy_vs_time([d for _, _, _, d in plan])
    save_figure(fig, a.out, "accuracy_vs_time")
    data.to_csv(a.out / "accuracy_vs_time.csv", index=False, float_format="%.6g")
    print((a.out / "summary.md").read_text())


if __name__ == "__main__":
    main()
