"""What error feedback carries, round by round: an instrumented top-k 1% + EF run.

    python experiments/compression/ef_diagnostics.py full10 30
    python experiments/compression/ef_diagnostics.py partial 30

Runs ``base.toml`` with top-k 1% and error feedback for the given number of rounds, either
with all 10 of 10 clients every round (``full10``, 20 shards) or the grid's 10 of 100
(``partial``), and records, per round, means over the round's clients of: the L2 norm of the
fresh update ``delta`` (``w_k - w_global``), of the residual added to it, of what is sent and
of the residual kept; the cosine between ``delta`` and the residual added (clients that have
one); and the share of the sent values that lie in the first layer's weights. Writes
``results/compression/ef_diagnostics_<setting>.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fedsim import runner
from fedsim.pipeline import compression

ROOT = Path(__file__).resolve().parents[2]
FIRST_LAYER = 784 * 200  # the 2NN's first weight matrix leads the flat parameter vector
SETTINGS = {
    "full10": [
        "population.num_clients=10",
        "server.clients_per_round=10",
        "partition.num_shards=20",
    ],
    "partial": [],
}


def _norms(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x.astype(np.float64), axis=1)


def main(setting: str, rounds: int) -> int:
    records: list[dict[str, float]] = []
    plain_apply = compression.Compress.apply

    def recording_apply(self, rows, batch):  # type: ignore[no-untyped-def]
        delta, before = rows.copy(), batch.state[compression.RESIDUAL].copy()
        sent = plain_apply(self, rows, batch)
        held = _norms(before) > 0
        cos = (delta * before).sum(axis=1)[held] / (_norms(delta) * _norms(before))[held]
        kept = sent != 0
        records.append(
            {
                "round": batch.round,
                "clients": len(delta),
                "with_residual": int(held.sum()),
                "delta_norm": _norms(delta).sum(),
                "residual_in_norm": _norms(before).sum(),
                "sent_norm": _norms(sent).sum(),
                "residual_out_norm": _norms(batch.state[compression.RESIDUAL]).sum(),
                "cos_delta_residual": cos.sum(),
                "first_layer_share": kept[:, :FIRST_LAYER].sum() / kept.sum() * len(delta),
            }
        )
        return sent

    compression.Compress.apply = recording_apply
    try:
        runner.run(
            ROOT / "experiments" / "compression" / "base.toml",
            overrides=[
                *SETTINGS[setting],
                "compression.up='topk'",
                "compression.fraction=0.01",
                "compression.error_feedback=true",
                f"server.rounds={rounds}",
                f"server.eval_every={rounds}",
            ],
        )
    finally:
        compression.Compress.apply = plain_apply
    df = pd.DataFrame(records).groupby("round", as_index=False).sum()  # stacks of a round
    means = [c for c in df.columns if c not in ("round", "clients", "with_residual")]
    df[means] = df[means].div(df["clients"], axis=0)
    held = df["with_residual"].replace(0, np.nan)
    df["cos_delta_residual"] *= df["clients"] / held  # over the clients that had one
    out = ROOT / "results" / "compression" / f"ef_diagnostics_{setting}.csv"
    df.to_csv(out, index=False, float_format="%.4f")
    print(df.iloc[[0, 1, 4, 9, 19, -1]].to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
