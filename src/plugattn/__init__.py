"""plugattn: plug-and-play attention for convolutional networks.

Every module reweights a feature map; each is faithful to its paper and its official code, and
:func:`from_official` loads official checkpoints.
"""

from . import modules as _modules  # noqa: F401  (registers every module)
from ._layers import LayerType
from .modules.eca import EfficientChannelAttention
from .modules.se import SqueezeExcite
from .official import from_official, list_official
from .registry import ModuleInfo, create, get, info, list_modules, register

__version__ = "0.1.0"

__all__ = [
    "LayerType",
    "ModuleInfo",
    "create",
    "from_official",
    "get",
    "info",
    "list_modules",
    "list_official",
    "register",
    # module classes
    "EfficientChannelAttention",
    "SqueezeExcite",
]
