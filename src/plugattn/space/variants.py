"""Registered variants: points of the design space not in a paper, worth a name (``cluster_se``, ``eca_ms``).

Each is a :class:`~plugattn.space.compose.ComposedAttention` with the module contract's constructor, so the
registry's contract tests cover it.
"""

from __future__ import annotations

import torch

from .._layers import LayerType, check_positive, factory_kwargs
from ..registry import register
from .compose import ComposedAttention
from .excite import MLP, ChannelConv, MultiScale
from .gate import make_gate
from .reweight import Multiply
from .squeeze import ClusterPool, Pool

__all__ = ["ClusterSE", "MultiScaleECA"]

_SPACE_PAPER = "plugattn design space (docs/space.md): an unexplored variant, not in a paper"


@register(
    "cluster_se", paper=_SPACE_PAPER + "; soft-cluster squeeze after NetVLAD and EM attention", year=2026,
    url="https://arxiv.org/abs/1511.07247", kind="channel", official="none (composed: plugattn.space)",
)
class ClusterSE(ComposedAttention):
    r"""SE with a soft-cluster squeeze: k learned centres pool the positions, one shared MLP excites each pool.

    .. math::
        y = x \cdot \sigma\Big(\sum_{j=1}^{k} \mathrm{MLP}(d_j)\Big), \qquad
        d_j = \frac{\sum_i a_{ij} x_i}{\sum_i a_{ij}},\ a_{ij} = \mathrm{softmax}_j(\langle x_i, \mu_j\rangle/\sqrt{C})

    CBAM's channel gate shares its MLP between two fixed pools (avg, max); here the pools are k learned,
    content-dependent soft means (:class:`~plugattn.space.squeeze.ClusterPool`), so the gate can respond
    to what kinds of positions a channel is active at, not only to its mean. With k = 1 it is SE.
    Not in a paper (the seed's open question). Descriptor permutation-invariant over positions.

    Args:
        channels: C, input channels.
        num_clusters: k. Default: 4.
        rd_ratio: 1/r of the MLP. Default: 1/16.
        rd_channels: hidden width, overriding ``rd_ratio``. Default: None.
        rd_divisor: ``None`` floors C·rd_ratio; an int rounds to a multiple. Default: None.
        act_layer: δ. Default: ReLU.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = ClusterSE(32, num_clusters=3)
        >>> m(torch.randn(2, 32, 7, 5)).shape
        torch.Size([2, 32, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        num_clusters: int = 4,
        rd_ratio: float = 1 / 16,
        rd_channels: int | None = None,
        rd_divisor: int | None = None,
        act_layer: LayerType = "relu",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive(type(self).__name__, channels=channels)
        dd = factory_kwargs(device, dtype)
        sq = ClusterPool(channels, num_clusters=num_clusters, merge="shared", **dd)
        ex = MLP(channels, channels, rd_ratio=rd_ratio, rd_channels=rd_channels, rd_divisor=rd_divisor,
                 act_layer=act_layer, **dd)
        super().__init__(channels, sq, ex, make_gate(gate_layer), Multiply())

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, num_clusters={self.squeeze.num_clusters}, "
                f"rd_channels={self.excite.rd_channels}")


@register(
    "eca_ms", paper=_SPACE_PAPER + "; multi-scale ECA (max over several 1-D kernels)", year=2026,
    url="https://arxiv.org/abs/1910.03151", kind="channel", official="none (composed: plugattn.space)",
)
class MultiScaleECA(ComposedAttention):
    r"""ECA with several kernel sizes at once, fused by the elementwise max of their logits.

    :math:`y = x \cdot \sigma(\max_k \mathrm{conv1d}_k(\mathrm{GAP}(x)))`. A sum of the branches would be one
    conv with the largest kernel (linear, re-parameterisable); the max is not: each channel keeps the
    scale that excites it most. Not in a paper.

    Args:
        channels: C, input channels.
        kernel_sizes: the odd kernel sizes. Default: (3, 5, 7).
        fuse: ``"max"``, ``"sum"`` or ``"mean"``. Default: ``"max"``.
        gate_layer: σ. Default: sigmoid.

    Shape:
        (N, C, H, W) → (N, C, H, W).

    Examples:
        >>> m = MultiScaleECA(64)
        >>> m(torch.randn(2, 64, 7, 5)).shape
        torch.Size([2, 64, 7, 5])
    """

    def __init__(
        self,
        channels: int,
        *,
        kernel_sizes: tuple[int, ...] = (3, 5, 7),
        fuse: str = "max",
        gate_layer: LayerType = "sigmoid",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        check_positive(type(self).__name__, channels=channels)
        if isinstance(kernel_sizes, int) or not kernel_sizes:
            raise ValueError(f"{type(self).__name__}: kernel_sizes must be a non-empty tuple of odd ints, "
                             f"got {kernel_sizes!r}")
        ex = MultiScale([ChannelConv(channels, kernel_size=k, device=device, dtype=dtype) for k in kernel_sizes],
                        fuse=fuse)
        super().__init__(channels, Pool(channels), ex, make_gate(gate_layer), Multiply())
        self.kernel_sizes = tuple(kernel_sizes)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_sizes={self.kernel_sizes}, fuse={self.excite.fuse!r}"

