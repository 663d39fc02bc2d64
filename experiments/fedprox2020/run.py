"""Reproduce Li et al. 2020 (FedProx), Figures 1 and 7 / Table 2 setting, on fedsim.

Grid: Synthetic(0,0), (0.5,0.5), (1,1) and Synthetic-IID x 0%, 50%, 90% stragglers x
{FedAvg (drop stragglers), FedProx mu=0 (keep partial work), FedProx mu=1 (keep partial work)}
x seeds; stragglers follow the paper's model (``server.straggler_fraction``). A second, smaller
grid replaces the fraction model by fedsim's device-driven one (heterogeneous device speeds and a
deadline). Runs already finished (their summary.json exists) are skipped, so the script can be
interrupted and started again.

Usage: python experiments/fedprox2020/run.py [--seeds 3] [--rounds 200] [--jobs 2]
                                              [--out results/fedprox2020]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
DATASETS = {
    "synthetic_0_0": ["data.alpha=0.0", "data.beta=0.0"],
    "synthetic_0.5_0.5": ["data.alpha=0.5", "data.beta=0.5"],
    "synthetic_1_1": ["data.alpha=1.0", "data.beta=1.0"],
    "synthetic_iid": ["data.iid=true", "data.alpha=0.0", "data.beta=0.0"],
}
METHODS = {
    "FedAvg": ["strategy.name='fedavg'", "server.straggler_policy='drop'"],
    "FedProx mu=0": [
        "strategy.name='fedprox'",
        "strategy.mu=0.0",
        "server.straggler_policy='partial'",
    ],
    "FedProx mu=1": [
        "strategy.name='fedprox'",
        "strategy.mu=1.0",
        "server.straggler_policy='partial'",
    ],
}
MU = {"FedAvg": 0.0, "FedProx mu=0": 0.0, "FedProx mu=1": 1.0}
FRACTIONS = [0.0, 0.5, 0.9]
# Device-driven stragglers: device speeds (samples/s) spread over two orders of magnitude and a
# deadline that the slower or data-heavier devices miss with E = 20 epochs. With the lognormal
# sample counts of the synthetic data, 0.45 s is about the median time of a device's full
# workload (about half the cohort straggles) and 0.12 s about its 10th percentile (about 90%).
DEVICE_SPEED = "population.speed={dist='lognormal', median=4000.0, sigma=1.0}"
DEADLINES = {0.5: 0.45, 0.9: 0.12}


def grid(seeds: int, rounds: int) -> list[tuple[dict, list[str]]]:
    # (straggler model, nominal straggler level, the overrides that set it up)
    levels = [("fraction", f, [f"server.straggler_fraction={f}"]) for f in FRACTIONS] + [
        ("deadline", f, [DEVICE_SPEED, f"server.deadline_s={d}"]) for f, d in DEADLINES.items()
    ]
    runs = []
    for seed in range(seeds):
        for ds, ds_over in DATASETS.items():
            for model, level, level_over in levels:
                for method, m_over in METHODS.items():
                    key = {
                        "model": model,
                        "dataset": ds,
                        "straggler_fraction": level,
                        "method": method,
                        "mu": MU[method],
                        "seed": seed,
                    }
                    over = [
                        *ds_over,
                        *m_over,
                        *level_over,
                        f"experiment.seed={seed}",
                        f"server.rounds={rounds}",
                        "server.eval_train=true",
                    ]
                    runs.append((key, over))
    return runs


def folder(out: Path, key: dict) -> Path:
    pct = int(round(key["straggler_fraction"] * 100))
    level = f"deadline_{pct}" if key["model"] == "deadline" else f"stragglers_{pct}"
    method = key["method"].replace(" ", "_").replace("=", "")
    return out / "runs" / key["dataset"] / level / f"{method}-seed{key['seed']}"


def run_one(args: tuple[dict, list[str], str]) -> tuple[dict, str, float]:
    key, over, path = args
    import fedsim

    t0 = time.perf_counter()
    run_dir = Path(path)
    if run_dir.exists():
        shutil.rmtree(run_dir)
    fedsim.run(HERE / "base.toml", overrides=over, out_dir=run_dir)
    return key, path, time.perf_counter() - t0


def summarise(out: Path, keys: list[dict]) -> pd.DataFrame:
    rows = []
    for key in keys:
        d = folder(out, key)
        rounds = pd.read_csv(d / "rounds.csv")
        last = rounds.iloc[-1]
        rows.append(
            {
                **key,
                "final_test_accuracy": last["test_accuracy"],
                "final_train_loss": last["global_train_loss"],
                "straggler_share": rounds["stragglers"].sum() / rounds["selected"].sum(),
                "run": str(d.relative_to(out)),
            }
        )
    return pd.DataFrame(rows)


def tables(df: pd.DataFrame, out: Path) -> str:
    df.to_csv(out / "runs.csv", index=False)
    group = ["model", "dataset", "straggler_fraction", "method", "mu"]
    agg = (
        df.groupby(group, dropna=False, sort=False)
        .agg(
            final_test_accuracy=("final_test_accuracy", "mean"),
            test_accuracy_std=("final_test_accuracy", "std"),
            final_train_loss=("final_train_loss", "mean"),
            train_loss_std=("final_train_loss", "std"),
            straggler_share=("straggler_share", "mean"),
            seeds=("seed", "count"),
        )
        .reset_index()
    )
    agg.to_csv(out / "summary.csv", index=False)
    lines = [
        "| model | dataset | stragglers | method | test accuracy | train loss |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for _, r in agg.iterrows():
        level = f"{r['straggler_share']:.0%}"
        lines.append(
            f"| {r['model']} | {r['dataset']} | {level} | {r['method']} | "
            f"{r['final_test_accuracy']:.3f} ± {r['test_accuracy_std']:.3f} | "
            f"{r['final_train_loss']:.3f} ± {r['train_loss_std']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    headline = ""
    for model, what in (
        ("fraction", "90% stragglers (the paper's model)"),
        ("deadline", "the ~90% deadline (device-driven stragglers)"),
    ):
        level = agg[(agg["model"] == model) & (agg["straggler_fraction"] == 0.9)]
        piv = level.pivot(index="dataset", columns="method", values="final_test_accuracy")
        gain = (piv["FedProx mu=1"] - piv["FedAvg"]).mean()
        gain0 = (piv["FedProx mu=0"] - piv["FedAvg"]).mean()
        headline += (
            f"At {what}, FedProx mu=1 changes final test accuracy over FedAvg by "
            f"{gain * 100:+.1f} percentage points on average over the four datasets, "
            f"FedProx mu=0 by {gain0 * 100:+.1f} (paper: +22 for FedProx).\n"
        )
    (out / "headline.md").write_text(headline)
    return text + "\n" + headline


def curves(df: pd.DataFrame, out: Path) -> None:
    """Per-round mean, min and max over seeds of every setting: the data behind the figures."""
    frames = []
    for _, r in df.iterrows():
        rounds = pd.read_csv(out / r["run"])[["round", "test_accuracy", "global_train_loss"]]
        frames.append(
            rounds.assign(
                **{k: r[k] for k in ["model", "dataset", "straggler_fraction", "method", "seed"]}
            )
        )
    data = pd.concat(frames)
    group = ["model", "dataset", "straggler_fraction", "method", "round"]
    stats = data.groupby(group, sort=False)[["test_accuracy", "global_train_loss"]].agg(
        ["mean", "min", "max"]
    )
    stats.columns = [f"{a}_{b}" for a, b in stats.columns]
    stats.reset_index().to_csv(out / "curves.csv", index=False, float_format="%.5g")


def figures(df: pd.DataFrame, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")

    colours = {"FedAvg": "tab:blue", "FedProx mu=0": "tab:orange", "FedProx mu=1": "tab:red"}
    for model in ("fraction", "deadline"):
        _panel_figures(df[df["model"] == model], out, model, colours)


def _panel_figures(sub: pd.DataFrame, out: Path, model: str, colours: dict) -> None:
    import matplotlib.pyplot as plt

    levels = sorted(sub["straggler_fraction"].unique())
    for column, label, name in [
        ("global_train_loss", "training loss", "training_loss"),
        ("test_accuracy", "test accuracy", "test_accuracy"),
    ]:
        fig, axes = plt.subplots(
            len(levels), len(DATASETS), figsize=(12, 2.5 * len(levels)), sharex=True, squeeze=False
        )
        for i, frac in enumerate(levels):
            for j, ds in enumerate(DATASETS):
                ax = axes[i, j]
                for method in METHODS:
                    runs = sub[
                        (sub["dataset"] == ds)
                        & (sub["straggler_fraction"] == frac)
                        & (sub["method"] == method)
                    ]
                    curves = [pd.read_csv(out / r)[column].to_numpy() for r in runs["run"]]
                    if not curves:
                        continue
                    y = np.vstack(curves)
                    x = np.arange(1, y.shape[1] + 1)
                    ax.plot(x, y.mean(axis=0), color=colours[method], lw=1.2, label=method)
                    ax.fill_between(
                        x, y.min(axis=0), y.max(axis=0), color=colours[method], alpha=0.2
                    )
                if i == 0:
                    ax.set_title(ds.replace("_", " "), fontsize=9)
                if j == 0:
                    what = "stragglers" if model == "fraction" else "deadline"
                    ax.set_ylabel(f"{int(frac * 100)}% {what}\n{label}", fontsize=8)
                if i == len(levels) - 1:
                    ax.set_xlabel("round", fontsize=8)
                ax.tick_params(labelsize=7)
                ax.grid(alpha=0.3)
        axes[0, 0].legend(fontsize=7)
        fig.tight_layout()
        for ext in ("png", "svg"):
            fig.savefig(out / f"{model}_{name}.{ext}", dpi=150)
        plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", default="results/fedprox2020")
    args = parser.parse_args()
    out = Path(args.out)
    runs = grid(args.seeds, args.rounds)
    todo = [
        (key, over, str(folder(out, key)))
        for key, over in runs
        if not (folder(out, key) / "summary.json").exists()
    ]
    print(f"{len(runs)} runs, {len(runs) - len(todo)} already done", flush=True)
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for i, (_, path, secs) in enumerate(pool.map(run_one, todo), 1):
            acc = json.loads((Path(path) / "summary.json").read_text())["final_test_accuracy"]
            print(f"[{i}/{len(todo)}] {path}: accuracy {acc:.3f} in {secs:.0f} s", flush=True)
    df = summarise(out, [k for k, _ in runs])
    # rounds.csv columns of every run, for the figures
    df_runs = df.copy()
    df_runs["run"] = [str(Path(r) / "rounds.csv") for r in df["run"]]
    figures(df_runs, out)
    curves(df_runs, out)
    print(tables(df, out))
    print(f"total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
