"""The server's evaluations of the global model, run where the model is (the server).

Which evaluations a round runs is decided outside the server (the loop's callbacks, see
:class:`fedsim.callbacks.EvaluationSchedule`) and handed to the round; here they are run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from threadpoolctl import threadpool_limits

from fedsim.config import Config
from fedsim.data.base import FederatedDataset
from fedsim.evaluation import (
    CLIENT_ACC_COLUMNS,
    CLIENTS,
    TEST,
    TRAIN,
    Schedule,
    check_evaluations,
    client_accuracy_percentiles,
    sample_eval_clients,
)
from fedsim.models.base import Model

#: The test-set scores a round may record (the model's task decides which are filled).
_TEST_KEYS = ("test_accuracy", "test_loss", "test_mae", "test_rmse")


class ServerEvaluation:
    """Scores the server's model ``w``: on the test set, on training data, per client."""

    cfg: Config
    dataset: FederatedDataset
    model: Model
    w: np.ndarray
    _train_eval: tuple[np.ndarray, np.ndarray] | None = None

    def _due(self, r: int, evaluate: Iterable[str] | None) -> tuple[str, ...]:
        """The evaluations to run after round ``r``: those asked for, or the config's."""
        if evaluate is None:
            return Schedule.from_config(self.cfg.server).due(r)
        return check_evaluations(evaluate, "evaluate")

    def _evaluate(self, due: tuple[str, ...]) -> dict[str, float]:
        """Run the evaluations named in ``due``; the columns of the others are NaN."""
        out = dict.fromkeys(
            (*_TEST_KEYS, "global_train_loss", "global_train_accuracy", *CLIENT_ACC_COLUMNS),
            math.nan,
        )
        if TEST in due:
            out.update(self.evaluate())
        if TRAIN in due:
            out["global_train_loss"], out["global_train_accuracy"] = self.evaluate_train()
        if CLIENTS in due:
            out.update(self.evaluate_clients())
        return out

    def evaluate(self) -> dict[str, float]:
        """The global model's scores on the central test set, keyed ``test_<score>``."""
        x, y = self.dataset.test_set()
        with threadpool_limits(limits=1):
            found = self.model.metrics(self.w, x, y)
        return {f"test_{k}": v for k, v in found.items()}

    def evaluate_clients(self) -> dict[str, float]:
        """Percentiles of per-client accuracy over a fixed sample of clients (fairness)."""
        srv = self.cfg.server
        ids = sample_eval_clients(
            self.cfg.experiment.seed, self.dataset.num_clients, srv.client_eval_clients
        )
        with threadpool_limits(limits=1):
            found = client_accuracy_percentiles(self.model, self.w, self.dataset, ids)
        # Same columns whichever data the dataset offers; the README says which is used.
        prefix = "client_acc" if "client_acc_p50" in found else "client_train_acc"
        return {key: found[key.replace("client_acc", prefix)] for key in CLIENT_ACC_COLUMNS}

    def evaluate_train(self) -> tuple[float, float]:
        """(loss, accuracy) of the global model on training data: the global objective."""
        if self._train_eval is None:
            self._train_eval = self.dataset.train_eval_set()
        x, y = self._train_eval
        with threadpool_limits(limits=1):
            return self.model.evaluate(self.w, x, y)
