"""Federated training as an iterative process, with the loop in the researcher's hands.

``process = build_weighted_fed_avg(model_fn, client_optimizer_fn, server_optimizer_fn, ...)``,
``state = process.initialize()``, then ``state, metrics = process.next(state, clients)`` for
as many rounds as wanted (the shape TensorFlow Federated made familiar). ``next`` runs one round
of the engine ``fedsim run`` uses (:meth:`fedsim.runtime.server.Server.run_round` with the
given cohort): the clock, the clients' work on the executor (Ray workers after
:func:`init`, in-process otherwise), aggregation, the server step, evaluation. ``next`` is a
pure function of its inputs: the state carries everything a round changes (model, server
optimiser and strategy state, client-state rows, round, simulated clock, byte counters) and is
loaded into the server before the round and read back after it.
"""

from fedsim.learning.build import build_fed_opt, build_fed_prox, build_weighted_fed_avg, from_config
from fedsim.learning.process import IterativeProcess, init
from fedsim.learning.state import RoundMetrics, State, evaluate
from fedsim.strategies.optimizer_specs import SGD, Adagrad, Adam, Yogi

__all__ = [
    "SGD",
    "Adagrad",
    "Adam",
    "IterativeProcess",
    "RoundMetrics",
    "State",
    "Yogi",
    "build_fed_opt",
    "build_fed_prox",
    "build_weighted_fed_avg",
    "evaluate",
    "from_config",
    "init",
]
