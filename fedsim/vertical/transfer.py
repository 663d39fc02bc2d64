"""A transfer run: find the overlap, train FTL over epochs on the simulated clock, compare.

The source party holds labelled samples, the target party samples with other features; they
share some sample IDs. Round 0 finds the overlap (private set intersection, or known IDs
when ``psi = false``); round e >= 1 is the e-th pass over the overlap in minibatches of the
federated-transfer objective (:mod:`fedsim.vertical.ftl`) and the scoring of the target-only
samples after it. The baseline ``overlap_only`` trains the target's model on the overlap's
labels alone (target features only), with the same epochs and batches, and is scored on the
same target-only samples. Records are those of a vertical run (:mod:`.records`), the source
in the place of the active party.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedsim.config import ExperimentConfig
from fedsim.rng import Purpose, generator
from fedsim.vertical import costs, records
from fedsim.vertical.experiment import align_ids
from fedsim.vertical.ftl import FTL, TargetAlone
from fedsim.vertical.transfer_config import TransferConfig
from fedsim.vertical.transfer_data import PartyData, party_data, standardise

Options = TransferConfig


def prepare(experiment: ExperimentConfig, options: TransferConfig, base_dir: Path | None) -> Job:
    """The two parties' data, generated or read; ConfigError on files that cannot be used."""
    source, target = party_data(options, experiment.seed, base_dir)
    return Job(experiment, options, source, target)


@dataclass
class Job:
    experiment: ExperimentConfig
    cfg: TransferConfig
    source: PartyData
    target: PartyData

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.cfg.parties]

    def run(
        self, out: Path | None, progress: bool, on_round: records.OnRound | None
    ) -> records.Outcome:
        cfg, seed = self.cfg, self.experiment.seed
        ledger = costs.Ledger.of(costs.profiles(cfg.parties, seed), cfg.mulmod_s)
        log = records.Log(out, self.names, ledger, on_round)

        (pos_a, pos_b), psi_s = self._align(ledger)
        log.record(0, psi_s, {})
        x_a, y_a, x_b = standardise(self.source.x), self.source.y, standardise(self.target.x)
        test = np.setdiff1d(np.arange(len(x_b)), pos_b)  # the target-only samples
        x_test, y_test = x_b[test], self.target.y[test] > 0
        model = FTL((x_a.shape[1], x_b.shape[1]), cfg.hidden, cfg.embedding, cfg.learning_rate,
                    cfg.l2, cfg.gamma, generator(seed, Purpose.TRANSFER_INIT, 0))  # fmt: skip

        def epoch(e: int) -> tuple[float, dict[str, float]]:
            loss, sim = 0.0, 0.0
            for b in self._batches(e, len(pos_a)):
                loss += model.step(x_a, y_a, pos_a[b], x_b[pos_b[b]]) * len(b)
                sim += costs.ftl_step_s(ledger, self.names, len(y_a), len(b), cfg.embedding, True)
            sim += costs.ftl_step_s(ledger, self.names, len(y_a), len(test), cfg.embedding, False)
            metrics = records.evaluate(model.scores(model.phi_a(x_a, y_a), x_test), y_test)
            return sim, {"train_loss": loss / len(pos_a), **metrics}

        shown = "test_accuracy"
        frame = records.train(log, epoch, cfg.epochs, shown, self.experiment.name, progress)
        summary = self._summary(frame, len(pos_a), psi_s)
        summary.update(self._baseline(x_b[pos_b], y_a[pos_a], x_test, y_test))
        return frame, summary, model.parameters()

    def _align(self, ledger: costs.Ledger) -> tuple[list[np.ndarray], float]:
        """Positions of the shared samples in each party's rows, in the same order."""
        ids = [self.source.ids, self.target.ids]
        if self.cfg.psi:
            idx, psi_s = align_ids(ledger, self.names, ids)
        else:
            _, pos_a, pos_b = np.intersect1d(*ids, assume_unique=True, return_indices=True)
            order = np.argsort(pos_a)  # the shared samples in the source's row order
            idx, psi_s = [pos_a[order], pos_b[order]], 0.0
        if not np.array_equal(ids[0][idx[0]], ids[1][idx[1]]):
            raise AssertionError("the overlap was misaligned between the parties")
        return idx, psi_s

    def _batches(self, epoch: int, n: int) -> list[np.ndarray]:
        """The epoch's minibatches: positions in the overlap, in a keyed random order."""
        perm = generator(self.experiment.seed, Purpose.TRANSFER_SHUFFLE, epoch).permutation(n)
        return [perm[s : s + self.cfg.batch_size] for s in range(0, n, self.cfg.batch_size)]

    def _baseline(
        self, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
    ) -> dict[str, float]:
        """The target's model on the overlap's labels alone, scored on the target-only samples."""
        cfg, t0 = self.cfg, time.perf_counter()
        model = TargetAlone(x.shape[1], cfg.hidden, cfg.embedding, cfg.learning_rate, cfg.l2,
                            generator(self.experiment.seed, Purpose.TRANSFER_INIT, 1))  # fmt: skip
        for epoch in range(1, cfg.epochs + 1):
            for b in self._batches(epoch, len(y)):
                model.step(x[b], y[b])
        metrics = records.evaluate(model.scores(x_test), y_test)
        out = {f"overlap_only_{k.removeprefix('test_')}": v for k, v in metrics.items()}
        out["overlap_only_wall_time_s"] = time.perf_counter() - t0
        return out

    def _summary(self, frame: pd.DataFrame, overlap: int, psi_s: float) -> dict[str, Any]:
        last = frame.iloc[-1]
        return {
            "experiment": self.experiment.name,
            "kind": "transfer",
            "seed": self.experiment.seed,
            "algorithm": "ftl",
            "secure": False,
            "parties": self.names,
            "source_samples": len(self.source.ids),
            "target_samples": len(self.target.ids),
            "overlap": overlap,
            "test_samples": len(self.target.ids) - overlap,
            "psi_sim_time_s": psi_s,
            "psi_bytes": int(frame["cum_bytes"].iloc[0]),
            "test_accuracy": float(last["test_accuracy"]),
            "final_test_auc": float(last["test_auc"]),
            **records.totals(frame, self.names),
        }
