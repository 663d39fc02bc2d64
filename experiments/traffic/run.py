"""Traffic scenario: next-interval flow forecasting per city, federated against alone/pooled.

For every seed (each seed generates other cities): FedAvg and FedProx (mu = 0.01, 0.1) over
the 8 cities of federated.toml, every city trained alone (``data.cities = [c]``) and all
cities pooled (``data.pooled = true``), all with the same model and 100 epochs over each
sample; and the persistence forecast (next flow = last flow). Every final model is scored on
each city's held-out week: runs/<run>/, runs.csv, per_city.csv (a row per seed, method and
city), summary.csv and .md (means over cities, then over seeds) and traffic.png.

Usage: python experiments/traffic/run.py [--seeds 3] [--out results/traffic]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim import config as config_mod
from fedsim.analysis.sweep import RunOutcome, SweepPoint, sweep
from fedsim.runner import prepare
from fedsim.tables import markdown_table

HERE = Path(__file__).resolve().parent
CONFIG = HERE / "federated.toml"
CITIES = 8
FLOAT = "%.6g"
ONE_CLIENT = ["population.num_clients=1", "server.clients_per_round=1"]
METHODS = ["persistence", "local only", "FedAvg", "FedProx mu=0.01", "FedProx mu=0.1",
           "centralised"]  # fmt: skip


def points(seeds: int) -> list[SweepPoint]:
    """Every training run: per seed, the federated ones, the pooled one, each city alone."""
    runs = [
        ("FedAvg", "FedAvg", []),
        ("FedProx mu=0.01", "FedProx_mu0.01", ["strategy.name='fedprox'", "strategy.mu=0.01"]),
        ("FedProx mu=0.1", "FedProx_mu0.1", ["strategy.name='fedprox'", "strategy.mu=0.1"]),
        ("centralised", "centralised", ["data.pooled=true", *ONE_CLIENT]),
    ] + [("local only", f"local_city{c}", [f"data.cities=[{c}]", *ONE_CLIENT])
         for c in range(CITIES)]  # fmt: skip
    return [SweepPoint(f"{slug}-seed{seed}", (*over, f"experiment.seed={seed}"),
                       {"seed": seed, "method": method, "overrides": " ".join(over)})
            for seed in range(seeds) for method, slug, over in runs]  # fmt: skip


def city_rows(seed: int, method: str, cfg: config_mod.Config, w: np.ndarray | None) -> list[dict]:
    """MAE and RMSE on each city's week of a final model, or of persistence when ``w`` is None."""
    exp, rows = prepare(cfg, HERE), []
    for i, city in enumerate(exp.dataset.cities):
        x, y = exp.dataset.city_test(i)
        if w is None:
            err = x[:, cfg.data.options.window - 1] - y  # the column of the newest lag
            found = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt(np.mean(err**2)))}
        else:
            found = exp.model.metrics(w, x, y)
        rows.append({"seed": seed, "method": method, "city": int(city),
                     "mae": found["mae"], "rmse": found["rmse"]})  # fmt: skip
    return rows


def run_row(o: RunOutcome) -> dict:
    s = o.summary
    return {**o.values, "bytes_MB": (s["bytes_up_total"] + s["bytes_down_total"]) / 1e6,
            "sim_time_s": s["sim_time_s"], "run_dir": f"runs/{o.run.name}"}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("results/traffic"))
    ap.add_argument("--tables-only", action="store_true", help="re-tabulate the CSVs, no runs")
    args = ap.parse_args()
    if args.tables_only:
        tabulate(pd.read_csv(args.out / "per_city.csv"), pd.read_csv(args.out / "runs.csv"),
                 args.out)  # fmt: skip
        return
    # Every run again: the tables score the final models, which run folders do not keep.
    done = sweep(CONFIG, points=points(args.seeds), out_dir=args.out / "runs", fresh=True,
                 models=True, tables=False, plots=False)  # fmt: skip
    rows = []
    for seed in range(args.seeds):
        cfg = config_mod.load(CONFIG, [f"experiment.seed={seed}"])
        rows += city_rows(seed, "persistence", cfg, None)
        for o in (o for o in done.runs if o.values["seed"] == seed):
            rows += city_rows(seed, o.values["method"], o.run.config, o.model)
    per_city, runs = pd.DataFrame(rows), pd.DataFrame(run_row(o) for o in done.runs)
    per_city.to_csv(args.out / "per_city.csv", index=False, float_format=FLOAT)
    runs.to_csv(args.out / "runs.csv", index=False, float_format=FLOAT)
    # From the files as written, so a full run and --tables-only give the same tables.
    tabulate(pd.read_csv(args.out / "per_city.csv"), pd.read_csv(args.out / "runs.csv"), args.out)


def tabulate(per_city: pd.DataFrame, runs: pd.DataFrame, out: Path) -> None:
    """summary.csv (per method: means over cities of MAE and RMSE and the worst city, averaged
    over seeds), summary.md and traffic.png from the per-city scores and the runs."""
    by_seed = per_city.groupby(["method", "seed"]).agg(
        mae=("mae", "mean"), rmse=("rmse", "mean"), worst_city_mae=("mae", "max")
    )
    # Only federated runs move models; local and pooled runs are one-client simulations.
    federated = runs[runs["method"].str.startswith("Fed")]
    by_seed = by_seed.join(federated.groupby(["method", "seed"]).agg(bytes_MB=("bytes_MB", "sum")))
    stats = by_seed.groupby("method")
    table = stats.mean()
    table["mae_sd"] = stats["mae"].std(ddof=1)
    table["rmse_sd"] = stats["rmse"].std(ddof=1)
    table = table.loc[METHODS].reset_index()
    table.to_csv(out / "summary.csv", index=False, float_format=FLOAT)
    rows = [[r.method, f"{r.mae:.4f} ({r.mae_sd:.4f})", f"{r.rmse:.4f} ({r.rmse_sd:.4f})",
             f"{r.worst_city_mae:.4f}", "-" if np.isnan(r.bytes_MB) else f"{r.bytes_MB:.2f}"]
            for r in table.itertuples()]  # fmt: skip
    wide = per_city[per_city["seed"] == 0].pivot(index="city", columns="method", values="mae")
    cities = [[city, *(f"{v:.4f}" for v in r)] for city, r in wide[METHODS].iterrows()]
    right = ["", "right", "right", "right", "right"]
    (out / "summary.md").write_text(
        f"Next-half-hour flow, 8 cities x 4 sensors, held-out last week; means over cities, "
        f"then over {per_city['seed'].nunique()} seeds (sd over seeds in brackets). Errors are "
        "fractions of a sensor's mean flow.\n\n"
        + markdown_table(["method", "MAE", "RMSE", "worst city MAE", "MB moved"], rows, right)
        + "\n\nMAE per city, seed 0:\n\n"
        + markdown_table(["city", *METHODS], cities, ["", *["right"] * len(METHODS)])
        + "\n"
    )
    plot(per_city, out / "traffic.png")


def plot(per_city: pd.DataFrame, path: Path) -> None:
    import matplotlib.pyplot as plt

    seed0 = per_city[per_city["seed"] == 0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    width = 0.8 / len(METHODS)
    for ax, metric in zip(axes, ("mae", "rmse"), strict=True):
        wide = seed0.pivot(index="city", columns="method", values=metric)[METHODS]
        for j, method in enumerate(METHODS):
            x = wide.index + (j - len(METHODS) / 2 + 0.5) * width
            ax.bar(x, wide[method], width, label=method)
        ax.set(xlabel="city", ylabel=f"test {metric.upper()} (fraction of mean flow)",
               xticks=wide.index)  # fmt: skip
    axes[0].legend(fontsize=7, ncols=2)
    fig.suptitle("Next-half-hour traffic flow per city (seed 0)")
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
