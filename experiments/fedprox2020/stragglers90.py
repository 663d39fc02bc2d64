"""FedAvg against FedProx mu = 1 at 90% stragglers on Synthetic(1,1), over many seeds.

Each seed is a new data set, new initial draws, new cohorts and new stragglers; the two methods
of one seed share all of them. Two sampling schemes: fedsim's default (distinct devices drawn
uniformly, models averaged by sample count, as the authors' public code does) and the one of
the paper's Algorithms 1 and 2 (devices drawn with replacement with probability n_k / n, models
averaged uniformly). Runs already finished (their summary.json exists) are skipped.

Usage: python experiments/fedprox2020/stragglers90.py [--seeds 10] [--schemes uniform by_samples]
                                                      [--out results/fedprox2020/stragglers90]
The tables cover every finished run under --out.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "stragglers90.toml"
SCHEMES = {
    "uniform": ["server.sampling='uniform'", "server.weighting='samples'"],
    "by_samples": ["server.sampling='by_samples'", "server.weighting='uniform'"],
}
METHODS = {
    "FedAvg": ["strategy.name='fedavg'", "server.straggler_policy='drop'"],
    "FedProx mu=1": [
        "strategy.name='fedprox'",
        "strategy.mu=1.0",
        "server.straggler_policy='partial'",
    ],
}
#: Final accuracy swings from round to round under FedAvg; also report the last rounds' mean.
LAST = 10


def folder(out: Path, scheme: str, method: str, seed: int) -> Path:
    name = method.replace(" ", "_").replace("=", "")
    return out / "runs" / scheme / f"{name}-seed{seed}"


def run_all(out: Path, seeds: int, schemes: list[str]) -> None:
    import fedsim

    for seed in range(seeds):
        for scheme in schemes:
            s_over = SCHEMES[scheme]
            for method, m_over in METHODS.items():
                d = folder(out, scheme, method, seed)
                if (d / "summary.json").exists():
                    continue
                if d.exists():
                    shutil.rmtree(d)
                t0 = time.perf_counter()
                fedsim.run(CONFIG, overrides=[*s_over, *m_over, f"experiment.seed={seed}"],
                           out_dir=d)  # fmt: skip
                acc = json.loads((d / "summary.json").read_text())["final_test_accuracy"]
                print(f"{d}: {acc:.3f} in {time.perf_counter() - t0:.0f} s", flush=True)


def finished(out: Path) -> list[dict]:
    """Every finished run under ``out``, whatever command made it (seeds may differ by scheme)."""
    keys = []
    for scheme in SCHEMES:
        for method in METHODS:
            for seed in range(1000):
                if (folder(out, scheme, method, seed) / "summary.json").exists():
                    keys.append({"sampling": scheme, "method": method, "seed": seed})
    return keys


def tables(out: Path, keys: list[dict]) -> str:
    rows = []
    for key in keys:
        d = folder(out, key["sampling"], key["method"], key["seed"])
        acc = pd.read_csv(d / "rounds.csv")["test_accuracy"].to_numpy()
        clients = pd.read_csv(d / "clients.csv")
        last = clients[(clients["round"] == len(acc)) & (clients["epochs_done"] > 0)]
        sizes = pd.read_csv(d / "partition.csv").set_index("client_id")["num_samples"]
        top = sizes.index[sizes >= sizes.quantile(0.9)]  # the largest 10% of the devices
        done = clients[clients["outcome"] == "completed"]
        rows.append(
            {
                **key,
                "final_test_accuracy": acc[-1],
                f"last{LAST}_mean_accuracy": acc[-LAST:].mean(),
                # FedAvg's last model is its one contributor's: how much data it trained on
                "last_round_trained_samples": int(last["num_samples"].sum()),
                # share of the rounds' completing devices among the largest 10% of devices
                "completed_in_top10pct": done["client_id"].isin(top).mean(),
                "top10pct_data_share": sizes[top].sum() / sizes.sum(),
                "run": str(d.relative_to(out)),
            }
        )
    runs = pd.DataFrame(rows)
    runs.to_csv(out / "runs.csv", index=False, float_format="%.4f")
    curves(out, runs)
    wide = runs.pivot_table(
        index=["sampling", "seed"],
        columns="method",
        values=["final_test_accuracy", f"last{LAST}_mean_accuracy"],
    )
    gaps = pd.DataFrame(
        {
            "fedavg_final": wide[("final_test_accuracy", "FedAvg")],
            "fedprox_final": wide[("final_test_accuracy", "FedProx mu=1")],
            "fedavg_last10": wide[(f"last{LAST}_mean_accuracy", "FedAvg")],
            "fedprox_last10": wide[(f"last{LAST}_mean_accuracy", "FedProx mu=1")],
        }
    )
    gaps["gap_final"] = gaps["fedprox_final"] - gaps["fedavg_final"]
    gaps["gap_last10"] = gaps["fedprox_last10"] - gaps["fedavg_last10"]
    gaps = gaps.dropna().reset_index()  # seeds with both methods only
    gaps.to_csv(out / "per_seed.csv", index=False, float_format="%.4f")
    stats = gaps.drop(columns="seed").groupby("sampling", sort=False)
    summary = stats.agg(["mean", "std", "min", "max"])
    summary.columns = [f"{a}_{b}" for a, b in summary.columns]
    summary.insert(0, "seeds", stats.size())
    # 95% confidence half-width of each mean (Student t over the seeds)
    t95 = scipy_stats.t.ppf(0.975, summary["seeds"] - 1) / np.sqrt(summary["seeds"])
    for col in ("fedavg_final", "fedprox_final", "gap_final", "gap_last10"):
        summary[f"{col}_ci95"] = t95 * summary[f"{col}_std"]
    summary.reset_index().to_csv(out / "summary.csv", index=False, float_format="%.4f")
    lines = [
        "| sampling | seeds | FedAvg | FedProx mu=1 | gap (points) | gap, 95% CI | gap, min to max "
        "| gap, last 10 rounds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for scheme, r in summary.iterrows():
        gap, ci = r["gap_final_mean"] * 100, r["gap_final_ci95"] * 100
        lines.append(
            f"| {scheme} | {int(r['seeds'])} "
            f"| {r['fedavg_final_mean']:.3f} ± {r['fedavg_final_std']:.3f} "
            f"| {r['fedprox_final_mean']:.3f} ± {r['fedprox_final_std']:.3f} "
            f"| {gap:+.1f} ± {r['gap_final_std'] * 100:.1f} | {gap - ci:+.1f} to {gap + ci:+.1f} "
            f"| {r['gap_final_min'] * 100:+.1f} to {r['gap_final_max'] * 100:+.1f} "
            f"| {r['gap_last10_mean'] * 100:+.1f} ± {r['gap_last10_std'] * 100:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    text += paired(gaps)
    (out / "summary.md").write_text(text)
    return text


def paired(gaps: pd.DataFrame) -> str:
    """The two schemes' gaps on the seeds both ran: mean difference and a paired t-test."""
    wide = gaps.pivot(index="seed", columns="sampling", values="gap_final").dropna()
    if len(SCHEMES) != wide.shape[1] or len(wide) < 2:
        return ""
    diff = wide["uniform"] - wide["by_samples"]
    p = scipy_stats.ttest_1samp(diff, 0.0).pvalue
    return (
        f"\nOn the {len(diff)} seeds both schemes ran, the gap under uniform sampling minus the "
        f"gap under by_samples: {diff.mean() * 100:+.1f} ± {diff.std() * 100:.1f} points "
        f"(paired t-test p = {p:.2f}).\n"
    )


def curves(out: Path, runs: pd.DataFrame) -> None:
    """Per round, mean / min / max test accuracy over seeds (run folders keep only summaries)."""
    frames = [
        pd.read_csv(out / r["run"] / "rounds.csv")[["round", "test_accuracy"]].assign(
            sampling=r["sampling"], method=r["method"]
        )
        for _, r in runs.iterrows()
    ]
    stats = (
        pd.concat(frames)
        .groupby(["sampling", "method", "round"], sort=False)["test_accuracy"]
        .agg(["mean", "min", "max"])
    )
    stats.columns = [f"test_accuracy_{c}" for c in stats.columns]
    stats.reset_index().to_csv(out / "curves.csv", index=False, float_format="%.4f")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--schemes", nargs="+", choices=list(SCHEMES), default=list(SCHEMES))
    parser.add_argument("--out", default="results/fedprox2020/stragglers90")
    args = parser.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    run_all(out, args.seeds, args.schemes)
    print(tables(out, finished(out)))
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
