"""Models behind one interface; each module registers its model by name on import.

The numpy models need nothing more; the PyTorch backend (:mod:`fedsim.models.torch_models`)
imports torch only when a torch model is built.
"""

from fedsim.models import cnn, mlp, softmax, torch_models  # noqa: F401  (registration)
from fedsim.models.base import Model
from fedsim.registry import MODELS

# A model plug-in may return a Model or a torch nn.Module (wrapped by the torch backend).
MODELS.adapt = torch_models.adapt_plugin

__all__ = ["Model"]
