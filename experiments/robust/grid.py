"""The robust-aggregation grid: aggregators, attacks and Byzantine fractions (run.py runs it,
table.py tabulates it)."""

from pathlib import Path

OUT = Path("results/robust")

#: Each aggregator with its options: the server assumes up to 30% Byzantine clients (f = 6 of
#: the 20 per round for Krum, trim 30% from each end), and bounds norms near an honest update's.
KRUM = "aggregator.num_byzantine=6"
AGGREGATORS = {"mean": [], "median": [], "trimmed_mean": ["aggregator.trim_fraction=0.3"],
               "krum": [KRUM], "multi_krum": [KRUM],
               "norm_bounded_mean": ["aggregator.norm_bound=1.0"]}  # fmt: skip
#: Each attack with its scale: -10 x the honest update, mu - 1.0 sigma, N(0, 1) per coordinate,
#: 10 x the honest update.
ATTACKS = {"sign_flip": 10.0, "little_is_enough": 1.0, "gaussian": 1.0, "scaled": 10.0}
FRACTIONS = [0.0, 0.1, 0.2, 0.3]
