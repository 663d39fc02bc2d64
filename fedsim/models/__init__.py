"""numpy models behind one interface; each module registers its model by name on import."""

from fedsim.models import cnn, mlp, softmax  # noqa: F401  (registration)
from fedsim.models.base import Model

__all__ = ["Model"]
