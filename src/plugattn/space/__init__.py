"""The design space: every attention module as squeeze → excite → gate → reweight (DESIGN.md, "The idea").

The four primitive kinds are :class:`Squeeze`, :class:`Excite`, :class:`Gate` and :class:`Reweight`
(their implementations live in :mod:`.squeeze`, :mod:`.excite`, :mod:`.gate`, :mod:`.reweight`);
:func:`compose` puts four parts together (:mod:`.compose`), :func:`preset` builds the named modules from
parts (:mod:`.presets`). Importing this package registers the composed variants ``cluster_se`` and
``eca_ms`` (:mod:`.variants`).

Examples:
    >>> import torch
    >>> from plugattn.space import compose
    >>> m = compose(64, squeeze="avg+std", excite="conv1d", gate="hard_sigmoid")  # a new variant, one line
    >>> m(torch.randn(2, 64, 9, 7)).shape
    torch.Size([2, 64, 9, 7])
"""

from .compose import ComposedAttention, compose
from .excite import (
    MLP,
    AxialMLP,
    ChannelConv,
    ChannelSelfAttention,
    ChannelwiseFC,
    Excite,
    Identity,
    MultiScale,
    SpatialConv,
)
from .gate import Gate, SpatialSoftmax, make_gate
from .presets import PRESETS, list_presets, load_named_state_dict, preset, space_table
from .reweight import Add, Multiply, Parallel, Residual, Reweight, Series
from .squeeze import AttentionPool, ClusterPool, ConvPool, DCTPool, GeMPool, LinearPool, Pool, Squeeze
from .variants import ClusterSE, MultiScaleECA

__all__ = [
    # the four primitive kinds and the composer
    "Squeeze", "Excite", "Gate", "Reweight", "compose", "ComposedAttention",
    # presets
    "preset", "list_presets", "load_named_state_dict", "PRESETS", "space_table",
    # squeezes
    "Pool", "GeMPool", "DCTPool", "ConvPool", "LinearPool", "AttentionPool", "ClusterPool",
    # excites
    "MLP", "ChannelConv", "ChannelSelfAttention", "SpatialConv", "MultiScale", "AxialMLP", "ChannelwiseFC", "Identity",
    # gates
    "SpatialSoftmax", "make_gate",
    # reweights
    "Multiply", "Add", "Residual", "Series", "Parallel",
    # registered variants
    "ClusterSE", "MultiScaleECA",
]
