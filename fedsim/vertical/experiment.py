"""A vertical run: align IDs, train over epochs on the simulated clock, compare baselines.

The runner calls :func:`prepare` (validation; nothing written) and then ``Job.run``. The
baselines train the same model family on the same aligned rows and batches, in plaintext
and in one place: ``centralised`` (every party's columns) and ``active_only`` (the active
party's columns): the value of federating is the gap between them.
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
from fedsim.vertical import costs, psi, records
from fedsim.vertical.config import VerticalConfig
from fedsim.vertical.data import Table, assign_columns, holdings, load_table
from fedsim.vertical.hetero_lr import HeteroLR, keypair, require_phe
from fedsim.vertical.splitnn import SplitNN

Options = VerticalConfig
_VARIANTS = ("federated", "centralised", "active_only")


def prepare(experiment: ExperimentConfig, options: VerticalConfig, base_dir: Path | None) -> Job:
    """Load and split the data among the parties; raise ConfigError on what cannot run."""
    if options.algorithm == "hetero_lr":
        require_phe()
    table = load_table(options, experiment.seed)
    cols = assign_columns(options, table.columns)
    held = holdings(options, len(table.y), experiment.seed)
    # The active party first: models and costs treat party 0 as the one with the labels.
    order = sorted(range(len(options.parties)), key=lambda k: options.parties[k].role != "active")
    return Job(experiment, options, table, [cols[k] for k in order], [held[k] for k in order],
               [options.parties[k].name for k in order], order)  # fmt: skip


@dataclass
class Job:
    experiment: ExperimentConfig
    cfg: VerticalConfig
    table: Table
    cols: list[np.ndarray]
    held: list[np.ndarray]
    names: list[str]
    order: list[int]

    def run(
        self, out: Path | None, progress: bool, on_round: records.OnRound | None
    ) -> records.Outcome:
        cfg, seed = self.cfg, self.experiment.seed
        profs = costs.profiles(cfg.parties, seed)
        ledger = costs.Ledger.of([profs[k] for k in self.order], cfg.mulmod_s)
        log = records.Log(out, self.names, ledger, on_round)

        aligned, psi_s = self._align(ledger)
        log.record(0, psi_s, {})
        train, test = _split(aligned, cfg.test_fraction, seed)
        xs_train, xs_test = _standardise(self.table.x, self.cols, train, test)
        y_train, y_test = self.table.y[train].astype(float), self.table.y[test].astype(float)
        model = self._model(self.cols, "federated")

        def epoch(e: int) -> tuple[float, dict[str, float]]:
            loss, sim = self._epoch(model, xs_train, y_train, e, ledger)
            sim += self._step_s(ledger, len(y_test), train=False)
            return sim, {"train_loss": loss, **records.evaluate(model.logits(xs_test), y_test)}

        frame = records.train(log, epoch, cfg.epochs, "test_auc", self.experiment.name, progress)
        summary = self._summary(frame, len(aligned), psi_s)
        summary.update(self._baselines(xs_train, y_train, xs_test, y_test))
        return frame, summary, model.parameters()

    def _align(self, ledger: costs.Ledger) -> tuple[np.ndarray, float]:
        """Private set intersection; the aligned rows of the table, in the active party's order."""
        idx, psi_s = align_ids(ledger, self.names, [self.table.ids[h] for h in self.held])
        rows = [h[i] for h, i in zip(self.held, idx, strict=True)]
        if not all(np.array_equal(rows[0], r) for r in rows[1:]):
            raise AssertionError("private set intersection misaligned the parties' rows")
        return rows[0], psi_s

    def _model(self, cols: list[np.ndarray], variant: str) -> SplitNN | HeteroLR:
        cfg = self.cfg
        dims = [len(c) for c in cols]
        if cfg.algorithm == "splitnn":
            rng = generator(self.experiment.seed, Purpose.VERTICAL_INIT, _VARIANTS.index(variant))
            return SplitNN(dims, cfg.hidden, cfg.embedding, cfg.top_hidden, cfg.learning_rate,
                           cfg.l2, rng)  # fmt: skip
        keys = keypair(cfg.key_length) if variant == "federated" else None
        return HeteroLR(dims, cfg.learning_rate, cfg.l2, keys)

    def _step_s(self, ledger: costs.Ledger, batch: int, train: bool) -> float:
        cfg = self.cfg
        if cfg.algorithm == "splitnn":
            return costs.splitnn_step_s(ledger, self.names, batch, cfg.embedding, train)
        dims = [len(c) for c in self.cols]
        return costs.hetero_lr_step_s(ledger, self.names, dims, batch, cfg.key_length, train)

    def _epoch(
        self,
        model: SplitNN | HeteroLR,
        xs: list[np.ndarray],
        y: np.ndarray,
        epoch: int,
        ledger: costs.Ledger | None,
    ) -> tuple[float, float]:
        """One pass over the training rows in keyed minibatches: mean loss, simulated s."""
        perm = generator(self.experiment.seed, Purpose.VERTICAL_SHUFFLE, epoch).permutation(len(y))
        losses, sim = [], 0.0
        for start in range(0, len(y), self.cfg.batch_size):
            b = perm[start : start + self.cfg.batch_size]
            losses.append(model.step([x[b] for x in xs], y[b]) * len(b))
            if ledger is not None:
                sim += self._step_s(ledger, len(b), train=True)
        return float(np.sum(losses) / len(y)), sim

    def _baselines(self, xs_train: list, y_train: np.ndarray, xs_test: list, y_test: np.ndarray
                   ) -> dict[str, float]:  # fmt: skip
        """Centralised (all columns in one place) and active-only, same epochs and batches."""
        out: dict[str, float] = {}
        for variant, keep in (("centralised", slice(None)), ("active_only", slice(0, 1))):
            t0 = time.perf_counter()
            tr = [np.concatenate(xs_train[keep], axis=1)]
            te = [np.concatenate(xs_test[keep], axis=1)]
            model = self._model([np.arange(tr[0].shape[1])], variant)
            for epoch in range(1, self.cfg.epochs + 1):
                self._epoch(model, tr, y_train, epoch, None)
            metrics = records.evaluate(model.logits(te), y_test)
            out.update({f"{variant}_{k.removeprefix('test_')}": v for k, v in metrics.items()})
            out[f"{variant}_wall_time_s"] = time.perf_counter() - t0
        return out

    def _summary(self, frame: pd.DataFrame, aligned: int, psi_s: float) -> dict[str, Any]:
        last = frame.iloc[-1]
        out: dict[str, Any] = {
            "experiment": self.experiment.name,
            "kind": "vertical",
            "seed": self.experiment.seed,
            "algorithm": self.cfg.algorithm,
            "dataset": self.cfg.dataset,
            "parties": self.names,
            "aligned_ids": aligned,
            "psi_sim_time_s": psi_s,
            "psi_bytes": int(frame["cum_bytes"].iloc[0]),
            "test_auc": float(last["test_auc"]),
            **records.totals(frame, self.names),
        }
        return out


def align_ids(
    ledger: costs.Ledger, names: list[str], ids: list[np.ndarray]
) -> tuple[list[np.ndarray], float]:
    """Private set intersection of the parties' IDs (the active party first).

    Returns, per party, the positions in its own ID list of the shared IDs, all in the same
    order, and the simulated seconds of the protocol (its bytes are counted in ``ledger``).
    """
    parts = list(zip(names, ids, strict=True))
    idx, transcript = psi.intersect(parts[0], parts[1:])
    sizes = {n: len(i) for n, i in zip(names, ids, strict=True)}
    return idx, costs.psi_time(ledger, transcript.messages, sizes, names[0])


def _split(rows: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = generator(seed, Purpose.VERTICAL_SPLIT).permutation(len(rows))
    n_test = max(1, int(round(test_fraction * len(rows))))
    return rows[np.sort(perm[n_test:])], rows[np.sort(perm[:n_test])]


def _standardise(x: np.ndarray, cols: list[np.ndarray], train: np.ndarray, test: np.ndarray
                 ) -> tuple[list, list]:  # fmt: skip
    """Each party scales its own columns by its training rows' mean and deviation."""
    out_train, out_test = [], []
    for c in cols:
        a, b = x[np.ix_(train, c)], x[np.ix_(test, c)]
        mu, sd = a.mean(0), a.std(0)
        sd[sd == 0] = 1.0
        out_train.append((a - mu) / sd)
        out_test.append((b - mu) / sd)
    return out_train, out_test
