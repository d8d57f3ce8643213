"""plugattn: plug-and-play attention for convolutional networks.

Every module reweights a feature map; each is faithful to its paper and its official code, and
:func:`from_official` loads official checkpoints. :mod:`plugattn.space` composes new variants from
squeeze, excite, gate and reweight parts.
"""

from . import models  # noqa: F401  (registers the networks and their official converters)
from . import modules as _modules  # noqa: F401  (registers every named module)
from ._layers import LayerType
from .analysis.capture import capture
from .integrate import insert, inserted
from .modules.bam import BottleneckAttention
from .modules.cbam import CBAM, CBAMChannelGate, CBAMSpatialGate
from .modules.coord import CoordAttention
from .modules.danet import DANetChannelAttention, DANetHead, DualAttention, PositionAttention
from .modules.eca import CircularECA, EfficientChannelAttention
from .modules.ema import EfficientMultiScaleAttention
from .modules.fca import MultiSpectralChannelAttention
from .modules.gather_excite import GatherExcite
from .modules.gc import GlobalContextBlock
from .modules.non_local import NonLocal
from .modules.scse import SpatialChannelSqueezeExcite
from .modules.se import EffectiveSqueezeExcite, SqueezeExcite
from .modules.seaformer import SeaAttention, SeaFormerBlock
from .modules.sge import SpatialGroupEnhance
from .modules.shuffle import ShuffleAttention
from .modules.simam import SimAM
from .modules.sk import SelectiveKernel
from .modules.srm import StyleRecalibration
from .modules.triplet import TripletAttention
from .official import from_official, list_official
from .registry import ModuleInfo, create, get, info, list_modules, register
from .space import ClusterSE, Excite, Gate, MultiScaleECA, Reweight, Squeeze, compose  # registers the space variants

__version__ = "0.1.0"

__all__ = [
    # registry and checkpoints
    "LayerType", "ModuleInfo", "create", "from_official", "get", "info", "list_modules", "list_official", "register",
    # networks and inspection
    "insert", "inserted", "capture",
    # the design space
    "compose", "Squeeze", "Excite", "Gate", "Reweight", "ClusterSE", "MultiScaleECA",
    # named modules
    "BottleneckAttention", "CBAM", "CBAMChannelGate", "CBAMSpatialGate", "CircularECA", "DANetChannelAttention",
    "CoordAttention", "DANetHead", "DualAttention", "EffectiveSqueezeExcite", "EfficientChannelAttention",
    "EfficientMultiScaleAttention", "GatherExcite", "GlobalContextBlock", "MultiSpectralChannelAttention", "NonLocal",
    "PositionAttention", "SeaAttention", "SeaFormerBlock", "SelectiveKernel", "ShuffleAttention", "SimAM",
    "SpatialChannelSqueezeExcite", "SpatialGroupEnhance", "SqueezeExcite", "StyleRecalibration", "TripletAttention",
]
