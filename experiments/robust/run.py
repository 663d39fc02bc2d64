"""Robust aggregation against Byzantine clients: accuracy per aggregator, attack and fraction.

Every run is ``fmnist_2nn.toml`` (Fashion-MNIST 2NN, 100 IID clients, 20 per round) with the
aggregator, the attack and its scale, the Byzantine fraction, the seed and the rounds set.
Finished runs are skipped (``fedsim.analysis.sweep``). A run the attack makes diverge gets
diverged.json. ``--table`` collects every run folder into the tables and figures (table.py).

Usage: python experiments/robust/run.py [--attacks A --fractions F --rounds 30 --seeds 0] [--table]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from fedsim.analysis.sweep import SweepPoint, sweep

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from grid import AGGREGATORS, ATTACKS, FRACTIONS, OUT  # noqa: E402  (beside this file)


def points(args: argparse.Namespace) -> list[SweepPoint]:
    """Without Byzantine clients the attack is irrelevant: one run per aggregator, first; then
    attack by attack, so that an interrupted grid leaves whole panels of the figure."""
    plan = [(args.attacks[0], f) for f in args.fractions if f == 0]
    plan += [(a, f) for a in args.attacks for f in args.fractions if f > 0]
    out = []
    for seed, (attack, fraction), agg in itertools.product(args.seeds, plan, args.aggregators):
        name = f"{'none' if fraction == 0 else f'{attack}_f{fraction:g}'}_{agg}_s{seed}"
        name += f"_r{args.rounds}"
        over = [f"aggregator.name='{agg}'", *AGGREGATORS[agg],
                f"faults.byzantine_fraction={fraction}", f"faults.byzantine_attack='{attack}'",
                f"faults.byzantine_scale={ATTACKS[attack]}", f"experiment.seed={seed}",
                f"server.rounds={args.rounds}", f"experiment.name='{name}'"]  # fmt: skip
        out.append(SweepPoint(name, tuple(over)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=list(ATTACKS))
    ap.add_argument("--aggregators", nargs="+", default=list(AGGREGATORS))
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--table", action="store_true", help="collect summary.csv and the figure")
    if not (args := ap.parse_args()).table:
        sweep(HERE / "fmnist_2nn.toml", points=points(args), out_dir=args.out / "runs",
              tables=False, plots=False)  # fmt: skip
        return
    from table import tabulate  # beside this file

    tabulate(args.out)


if __name__ == "__main__":
    main()
