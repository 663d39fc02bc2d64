"""Models behind one interface; each module registers its model by name on import.

The numpy models need nothing more; the PyTorch backend (:mod:`fedsim.models.torch_models`)
imports torch only when a torch model is built.
"""

from fedsim.models import cnn, mlp, softmax, torch_models  # noqa: F401  (registration)
from fedsim.models.base import Model

__all__ = ["Model"]
