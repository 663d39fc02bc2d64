"""Callbacks the round loop calls at fixed points of a run; pass your own to ``fedsim.run``.

See :class:`Callback` for the hooks and when they are called, and the README's section
"Callbacks and loggers".
"""

from fedsim.callbacks.base import Callback, CallbackList, RunContext
from fedsim.callbacks.builtin import (
    Checkpointing,
    EvaluationSchedule,
    PrivacyBudget,
    ProgressBar,
    RoundFunction,
    TargetAccuracy,
)
from fedsim.callbacks.loggers import MLflowLogger, TensorBoardLogger

__all__ = [
    "Callback",
    "CallbackList",
    "Checkpointing",
    "EvaluationSchedule",
    "MLflowLogger",
    "PrivacyBudget",
    "ProgressBar",
    "RoundFunction",
    "RunContext",
    "TargetAccuracy",
    "TensorBoardLogger",
]
