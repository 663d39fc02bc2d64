"""Traffic scenario: next-interval flow forecasting per city, federated against alone/pooled.

For every seed (each seed generates other cities): FedAvg and FedProx (mu = 0.01, 0.1) over
the 8 cities of federated.toml, every city trained alone (``data.cities = [c]``) and all
cities pooled (``data.pooled = true``), all with the same model and 100 epochs over each
sample; and the persistence forecast (next flow = last flow), which needs no training. Every
final model is scored on each city's held-out week. Writes runs/<run>/ (config, rounds,
summary), per_city.csv (one row per seed, method and city), summary.csv and summary.md
(means over cities, then over seeds) and traffic.png.

Usage: python experiments/traffic/run.py [--seeds 3] [--out results/traffic]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "federated.toml"
CITIES = 8
ONE_CLIENT = ["population.num_clients=1", "server.clients_per_round=1"]
METHODS = [
    "persistence",
    "local only",
    "FedAvg",
    "FedProx mu=0.01",
    "FedProx mu=0.1",
    "centralised",
]


def variants() -> list[tuple[str, str, list[str]]]:
    """(method, run folder stem, overrides of federated.toml) of every run of one seed."""
    out = [
        ("FedAvg", "FedAvg", []),
        ("FedProx mu=0.01", "FedProx_mu0.01", ["strategy.name='fedprox'", "strategy.mu=0.01"]),
        ("FedProx mu=0.1", "FedProx_mu0.1", ["strategy.name='fedprox'", "strategy.mu=0.1"]),
        ("centralised", "centralised", ["data.pooled=true", *ONE_CLIENT]),
    ]
    for c in range(CITIES):
        out.append(("local only", f"local_city{c}", [f"data.cities=[{c}]", *ONE_CLIENT]))
    return out


def city_scores(model, w: np.ndarray | None, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """MAE and RMSE of a model (or of persistence when ``w`` is None) on one city's week."""
    if w is None:
        err = x[:, model] - y  # model = the column of the newest lag
        return {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt(np.mean(err**2)))}
    found = model.metrics(w, x, y)
    return {"mae": found["mae"], "rmse": found["rmse"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/traffic"))
    ap.add_argument("--tables-only", action="store_true", help="re-tabulate the CSVs, no runs")
    args = ap.parse_args()
    if args.tables_only:
        tabulate(
            pd.read_csv(args.out / "per_city.csv"), pd.read_csv(args.out / "runs.csv"), args.out
        )
        return
    import fedsim
    from fedsim.runner import prepare

    rows, runs = [], []
    for seed in range(args.seeds):
        seed_over = [f"experiment.seed={seed}"]
        full = prepare(fedsim.config.load(CONFIG, seed_over), HERE)
        newest_lag = full.cfg.data.options.window - 1
        for i, city in enumerate(full.dataset.cities):
            x, y = full.dataset.city_test(i)
            rows.append(
                {
                    "seed": seed,
                    "method": "persistence",
                    "city": int(city),
                    **city_scores(newest_lag, None, x, y),
                }
            )
        for method, slug, over in variants():
            out = args.out / "runs" / f"{slug}-seed{seed}"
            if out.exists():
                shutil.rmtree(out)
            result = fedsim.run(CONFIG, overrides=[*over, *seed_over], out_dir=out)
            s = result.summary
            exp = prepare(result.config, HERE)
            for i, city in enumerate(exp.dataset.cities):
                x, y = exp.dataset.city_test(i)
                rows.append(
                    {
                        "seed": seed,
                        "method": method,
                        "city": int(city),
                        **city_scores(exp.model, result.model, x, y),
                    }
                )
            runs.append(
                {
                    "seed": seed,
                    "method": method,
                    "overrides": " ".join(over),
                    "bytes_MB": (s["bytes_up_total"] + s["bytes_down_total"]) / 1e6,
                    "sim_time_s": s["sim_time_s"],
                    "run_dir": str(out.relative_to(args.out)),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    per_city = pd.DataFrame(rows)
    per_city.to_csv(args.out / "per_city.csv", index=False, float_format="%.6g")
    pd.DataFrame(runs).to_csv(args.out / "runs.csv", index=False, float_format="%.6g")
    tabulate(per_city, pd.DataFrame(runs), args.out)


def tabulate(per_city: pd.DataFrame, runs: pd.DataFrame, out: Path) -> None:
    """summary.csv, summary.md and traffic.png from the per-city scores and the runs."""
    table = summarise(per_city, runs)
    table.to_csv(out / "summary.csv", index=False, float_format="%.6g")
    write_markdown(table, per_city, out / "summary.md", per_city["seed"].nunique())
    plot(per_city, out / "traffic.png")


def summarise(per_city: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean over cities of MAE and RMSE, and the worst city, averaged over seeds."""
    by_seed = per_city.groupby(["method", "seed"]).agg(
        mae=("mae", "mean"), rmse=("rmse", "mean"), worst_city_mae=("mae", "max")
    )
    # Only federated runs move models; local and pooled runs are one-client simulations.
    federated = runs[runs["method"].str.startswith("Fed")]
    cost = federated.groupby(["method", "seed"]).agg(bytes_MB=("bytes_MB", "sum"))
    by_seed = by_seed.join(cost)
    stats = by_seed.groupby("method")
    table = stats.mean()
    table["mae_sd"] = stats["mae"].std(ddof=1)
    table["rmse_sd"] = stats["rmse"].std(ddof=1)
    return table.loc[METHODS].reset_index()


def write_markdown(table: pd.DataFrame, per_city: pd.DataFrame, path: Path, seeds: int) -> None:
    lines = [
        f"Next-half-hour flow, 8 cities x 4 sensors, held-out last week; means over cities, "
        f"then over {seeds} seeds (sd over seeds in brackets). Errors are fractions of a "
        "sensor's mean flow.",
        "",
        "| method | MAE | RMSE | worst city MAE | MB moved |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in table.itertuples():
        moved = "-" if np.isnan(r.bytes_MB) else f"{r.bytes_MB:.2f}"
        lines.append(
            f"| {r.method} | {r.mae:.4f} ({r.mae_sd:.4f}) | {r.rmse:.4f} ({r.rmse_sd:.4f}) | "
            f"{r.worst_city_mae:.4f} | {moved} |"
        )
    seed0 = per_city[per_city["seed"] == 0]
    wide = seed0.pivot(index="city", columns="method", values="mae")[METHODS]
    lines += [
        "",
        "MAE per city, seed 0:",
        "",
        "| city | " + " | ".join(METHODS) + " |",
        "| --- |" + " ---: |" * len(METHODS),
    ]
    for city, r in wide.iterrows():
        lines.append(f"| {city} | " + " | ".join(f"{v:.4f}" for v in r) + " |")
    path.write_text("\n".join(lines) + "\n")


def plot(per_city: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed0 = per_city[per_city["seed"] == 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    width = 0.8 / len(METHODS)
    for ax, metric in zip(axes, ("mae", "rmse"), strict=True):
        wide = seed0.pivot(index="city", columns="method", values=metric)[METHODS]
        for j, method in enumerate(METHODS):
            ax.bar(
                wide.index + (j - len(METHODS) / 2 + 0.5) * width, wide[method], width, label=method
            )
        ax.set_xlabel("city")
        ax.set_ylabel(f"test {metric.upper()} (fraction of mean flow)")
        ax.set_xticks(wide.index)
    axes[0].legend(fontsize=7, ncols=2)
    fig.suptitle("Next-half-hour traffic flow per city (seed 0)")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
