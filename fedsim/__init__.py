"""fedsim: fast, honest simulation of federated learning over heterogeneous client populations."""

from fedsim import callbacks, learning
from fedsim.config import Config, ConfigError, load
from fedsim.learning import init
from fedsim.runner import RunResult, resume, run

__all__ = [
    "Config",
    "ConfigError",
    "RunResult",
    "callbacks",
    "init",
    "learning",
    "load",
    "resume",
    "run",
]
__version__ = "0.1.0"
