"""MixNet: multi-modality mix network for brain segmentation (2D, per plane).

Chen et al., "MixNet: Multi-modality Mix Network for Brain Segmentation",
BrainLes / MICCAI 2018. The network is semantic-wise: residual units with dilated
convolutions and no pooling or deconvolution inside; an optional 2x2 max pooling in the
InitUnit halves the working resolution and the OutputUnit upscales back.

Tensor shapes (all versions)
----------------------------
input   ``(N, M, H, W)`` float, ``M = len(MODALITIES) = 3`` channels in the fixed order
        T1w, IR, FLAIR; an absent modality is an all-zero channel. Any ``H, W >= 1``.
output  ``(N, n_classes, H, W)`` raw logits (no softmax).
"""

from __future__ import annotations

import copy
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: Input channel order shared by training and inference.
MODALITIES: tuple[str, ...] = ("T1w", "IR", "FLAIR")

#: Dilation of the five DilateResUnit levels (Table 1 of the paper).
DILATIONS: tuple[int, ...] = (2, 1, 4, 1, 8)

#: Pyramid pooling bins of the OutputUnit.
PYRAMID_BINS: tuple[int, ...] = (2, 4, 6, 12)


def _is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is laid out channels-last (and not also in the default layout)."""
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class _ConcatChannels(torch.autograd.Function):
    """``torch.cat(tensors, dim=1)`` whose backward hands each input a dense gradient in
    channels-last when the concatenation is in channels-last.

    The gradient of each input is a channel slice of the concatenation's gradient; in
    channels-last such a slice is strided, and the addition that accumulates it with the
    input's other gradient (the next level's) ran 4.6x slower than on dense tensors (3.3
    against 0.7 ms for 16 x 72 x 72 x 24 in bfloat16, one thread: 32 ms of a 380 ms
    training step). Copying each slice first costs less than that difference.
    """

    @staticmethod
    def forward(ctx, *tensors):
        out = torch.cat(tensors, dim=1)
        ctx.sizes = [t.shape[1] for t in tensors]
        ctx.channels_last = _is_channels_last(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        parts = grad.split(ctx.sizes, dim=1)
        if ctx.channels_last:
            parts = [p.contiguous(memory_format=torch.channels_last) for p in parts]
        return tuple(parts)


def concat_channels(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``torch.cat(tensors, dim=1)``, with dense gradients in channels-last
    (``_ConcatChannels``)."""
    return _ConcatChannels.apply(*tensors)


class GroupedDilatedConv2d(nn.Conv2d):
    """A grouped, dilated convolution that trains group by group in channels-last under
    bfloat16 autocast.

    With torch 2.13.0 on an AMD EPYC (AVX-512 BF16), the bfloat16 weight gradient of a
    grouped dilated 3x3 convolution in channels-last was NaN (from 32 x 32 feature maps up)
    while every other layer was right, ungrouped dilated convolutions included. So in
    training under autocast in channels-last, each group (one MixNetv3 stream) runs as its
    own ungrouped convolution, and the outputs are concatenated: the same function and
    parameters, finite gradients that agree with float64 as closely as the default layout's
    (relative error 0.0023 for the weight gradient and 0.0029 for the input gradient, in
    both), and half
    the time of the default layout that this class used before (15 against 34 ms forward
    and backward for 8 x 36 x 64 x 64, one thread; 12 against 22 ms for 16 x 36 x 72 x 24).
    Without gradients (inference) or outside autocast it is a plain ``nn.Conv2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and torch.is_autocast_enabled("cpu") and
                x.is_contiguous(memory_format=torch.channels_last)):
            return super().forward(x)
        streams = zip(x.split(self.in_channels // self.groups, dim=1),
                      self.weight.split(self.out_channels // self.groups, dim=0),
                      (self.bias.split(self.out_channels // self.groups) if self.bias is not None
                       else [None] * self.groups))
        return concat_channels([F.conv2d(part, weight, bias, self.stride, self.padding,
                                         self.dilation) for part, weight, bias in streams])


def _bn_relu_conv(c_in: int, c_out: int, kernel: int, dilation: int = 1,
                  groups: int = 1) -> nn.Sequential:
    """Pre-activation block: BN -> ReLU -> conv (same spatial size)."""
    padding = dilation * (kernel - 1) // 2
    conv = GroupedDilatedConv2d if groups > 1 and dilation > 1 else nn.Conv2d
    return nn.Sequential(
        nn.BatchNorm2d(c_in),
        nn.ReLU(inplace=True),
        conv(c_in, c_out, kernel, padding=padding, dilation=dilation, groups=groups,
             bias=False),
    )


class InitUnit(nn.Module):
    """A 5x5 convolution, then an optional 2x2 max pooling with stride 2.

    ``(N, c_in, H, W) -> (N, filters, H', W')`` with ``H' = H // 2`` when pooling;
    ``groups`` splits input and filters into that many independent streams.
    """

    def __init__(self, c_in: int, filters: int, pool: bool = True, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, filters, 5, padding=2, groups=groups, bias=True)
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv(x))


class DilateResUnit(nn.Module):
    """Residual bottleneck with a clear identity path: DilateResUnit(c1, c2, f, d).

    body: BN-ReLU-1x1 (f/2), BN-ReLU-3x3 dilated d (f/2), BN-ReLU-1x1 (c2);
    shortcut: identity when ``c1 == c2``, else a 1x1 convolution.
    ``(N, c1, H, W) -> (N, c2, H, W)``. With ``groups = g`` every convolution is split into
    g independent streams (each of c1/g, f/2g and c2/g channels).
    """

    def __init__(self, c1: int, c2: int, filters: int, dilation: int, groups: int = 1) -> None:
        super().__init__()
        half = filters // 2
        self.body = nn.Sequential(
            _bn_relu_conv(c1, half, 1, groups=groups),
            _bn_relu_conv(half, half, 3, dilation, groups=groups),
            _bn_relu_conv(half, c2, 1, groups=groups),
        )
        self.shortcut = (nn.Identity() if c1 == c2
                         else nn.Conv2d(c1, c2, 1, groups=groups, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.body(x)


def _bins(size: int, bins: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(bins, size)`` 0/1 matrix whose row i marks the positions of bin i of adaptive
    average pooling (from ``floor(i * size / bins)`` to ``ceil((i + 1) * size / bins)``, end
    excluded), in ``x``'s dtype and on its device; and each bin's size."""
    i = torch.arange(bins, device=x.device).unsqueeze(1)
    start, end = i * size // bins, ((i + 1) * size + bins - 1) // bins
    position = torch.arange(size, device=x.device)
    return ((position >= start) & (position < end)).to(x.dtype), (end - start).squeeze(1)


def pyramid_pool(x: torch.Tensor, bins: Sequence[int]) -> list[torch.Tensor]:
    """``[F.adaptive_avg_pool2d(x, b) for b in bins]``, up to rounding, as matrix products.

    Pooling sums over rows, then over columns, then divides by the bin's size: one product
    sums the rows of every bin at once (a single pass over ``x``), a small product per bin
    sums its columns, and the small result is divided in float32 at least (the 0/1
    matrices are exact in bfloat16; reciprocals such as 1/15 are not). Its backward is two
    products as well. Four adaptive poolings had read ``x`` four times, and their backward
    zero-filled and summed a gradient of ``x``'s size per bin: on the 432-channel features
    of MixNetv3 that took 35 ms of a training step against 16 ms for the products (batch 8
    of 64 x 64, bfloat16 channels-last, 2 threads).
    """
    n, c, h, w = x.shape
    rows, row_sizes = zip(*(_bins(h, b, x) for b in bins))
    cols, col_sizes = zip(*(_bins(w, b, x) for b in bins))
    channels_last = _is_channels_last(x)
    if channels_last:  # (N, H, W * C) in memory: bin rows as (N, sum(bins), W, C)
        by_rows = (torch.cat(rows) @ x.permute(0, 2, 3, 1).reshape(n, h, w * c)
                   ).reshape(n, -1, w, c)
    else:  # (N, C, sum(bins), W)
        by_rows = torch.cat(rows) @ x
    pooled = []
    # split, not slices: the backward of a split is one concatenation, that of each slice a
    # zero-filled gradient of the whole
    for part, col, row_size, col_size in zip(by_rows.split(bins, dim=1 if channels_last else 2),
                                             cols, row_sizes, col_sizes):
        if channels_last:  # (N, b, b, C) in memory is (N, C, b, b) channels-last
            sums = (col @ part).permute(0, 3, 1, 2)
        else:
            sums = part @ col.T
        wide = torch.promote_types(sums.dtype, torch.float32)
        size = row_size[:, None] * col_size[None, :]
        pooled.append((sums.to(wide) / size.to(wide)).to(sums.dtype))
    return pooled


class OutputUnit(nn.Module):
    """Pyramid pooling (2, 4, 6, 12 bins) as a global prior, a 3x3 conv to the logits.

    ``(N, c_in, h, w) -> (N, n_classes, h * s, w * s)`` with ``s = 2`` when
    ``upscale`` (the InitUnit pooled), else 1.

    The 3x3 conv (``classify``) reads the features and the priors, each prior a bin grid
    upsampled bilinearly to ``h x w``. It runs as a 1x1 conv to ``9 * n_classes`` tap
    channels (channel ``c * 9 + t`` mixes the inputs by tap t of class c's kernel) and a
    fixed one-hot 3x3 kernel that sums each class's nine shifted taps: the same function
    up to rounding. The priors' taps are mixed before the upsampling (mixing channels
    commutes with a per-channel linear interpolation), on the small bin grids, and added to
    the features' taps, so the priors are never upsampled themselves (4 x 36 upsampled
    channels instead of 4 x 108 for 4 classes) and never concatenated to the features. A 3x3
    conv with 4 outputs is a thin matrix product; the 1x1 conv to 36 tap channels does the
    same multiplications at a better rate: on one 208 x 256 axial slice (bfloat16, one
    thread), the whole 3x3 conv had taken 17.5 ms (of 60 ms), then its features' part 9.7 ms
    (of 43 ms); the 1x1 conv takes 3.4 ms.

    Each branch keeps its ``nn.AdaptiveAvgPool2d`` as the first module, so that the
    parameters keep their names (``branches.<i>.1`` and ``.2``), but ``forward`` pools all
    bins at once with ``pyramid_pool``.
    """

    def __init__(self, c_in: int, n_classes: int, upscale: bool = True,
                 bins: Sequence[int] = PYRAMID_BINS) -> None:
        super().__init__()
        branch = max(c_in // len(bins), 1)
        self.bins = tuple(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(c_in, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )
            for b in self.bins
        )
        self.pre = nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True))
        self.classify = nn.Conv2d(c_in + branch * len(self.bins), n_classes, 3, padding=1)
        #: the classify conv's input channels: the features', then each prior's
        self.classify_splits = (c_in,) + (branch,) * len(self.bins)
        self.upscale = upscale
        # taps[c, t]: the one-hot 3x3 kernel of tap t (row-major), for the group of class c
        self.register_buffer("taps", torch.eye(9).reshape(1, 9, 3, 3).repeat(n_classes, 1, 1, 1),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        n_classes = self.classify.out_channels
        # (classes * 9, channels, 1, 1) per input: output channel c * 9 + t mixes by tap t
        mixes = self.classify.weight.permute(0, 2, 3, 1).reshape(n_classes * 9, -1, 1, 1)
        mixes = mixes.split(self.classify_splits, dim=1)
        taps = F.conv2d(self.pre(x), mixes[0])
        # the branches' first module, the bin's adaptive pooling, runs for all bins at once
        for branch, pooled, mix in zip(self.branches, pyramid_pool(x, self.bins), mixes[1:]):
            taps = taps + F.interpolate(F.conv2d(branch[1:](pooled), mix), size=size,
                                        mode="bilinear", align_corners=False)
        logits = F.conv2d(taps, self.taps.to(taps.dtype), self.classify.bias, padding=1,
                          groups=n_classes)
        if self.upscale:
            logits = F.interpolate(logits, scale_factor=2.0, mode="bilinear",
                                   align_corners=False)
        return logits


class MixNet(nn.Module):
    """Common frame: even padding, streams (subclass), multi-scale aggregation, output.

    Subclasses implement :meth:`features`, returning the concatenation of the InitUnit
    and level features at the working resolution.
    """

    version: str = ""

    def __init__(self, n_classes: int, n_features: int, pool: bool) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.pool = pool
        self.output = OutputUnit(n_features, n_classes, upscale=pool)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> ``(N, n_classes, H, W)`` logits."""
        if x.ndim != 4 or x.shape[1] != len(MODALITIES):
            raise ValueError(
                f"MixNet expects (N, {len(MODALITIES)}, H, W) input, got {tuple(x.shape)}"
            )
        height, width = x.shape[-2:]
        pad_h, pad_w = (height % 2, width % 2) if self.pool else (0, 0)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        logits = self.output(self.features(x))
        return logits[..., :height, :width]


class MixNetV1(MixNet):
    """v1: modalities stacked as channels, one stream of 72 filters.

    ``groups`` splits every convolution into that many independent streams (MixNetV3).
    """

    version = "v1"

    def __init__(self, n_classes: int = 4, filters: int = 72, pool: bool = True,
                 dilations: Sequence[int] = DILATIONS, groups: int = 1) -> None:
        super().__init__(n_classes, filters * (len(dilations) + 1), pool)
        self.init = InitUnit(len(MODALITIES), filters, pool, groups=groups)
        self.levels = nn.ModuleList(
            DilateResUnit(filters, filters, filters, d, groups=groups) for d in dilations
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feats = [self.init(x)]
        for level in self.levels:
            feats.append(level(feats[-1]))
        return concat_channels(feats)


class MixNetV3(MixNetV1):
    """v3: one independent stream of 24 filters per modality, joined at the output.

    The streams run side by side as grouped convolutions (one group per modality): stream
    m owns channels ``m * filters ... (m + 1) * filters - 1`` of the InitUnit and of every
    level, and no weight crosses streams, so each is the paper's separate network; one
    grouped call replaces three small ones (1.4x faster training under bfloat16 here, when
    measured; the dilated 3x3 convolutions train group by group again in channels-last,
    see ``GroupedDilatedConv2d``).
    ``features``: InitUnit and levels 1-5, each ``3 * filters`` channels in stream blocks.
    """

    version = "v3"

    def __init__(self, n_classes: int = 4, filters: int = 24, pool: bool = True,
                 dilations: Sequence[int] = DILATIONS) -> None:
        n_streams = len(MODALITIES)
        super().__init__(n_classes, n_streams * filters, pool, dilations, groups=n_streams)


class MixNetV2(MixNet):
    """v2: three streams of 24 filters, periodically summarised.

    At the summary levels (1, 3, 5) every stream's unit receives the concatenation of
    all streams' current features (3 x 24 = 72 channels; its first 1x1 conv mixes them).
    After a summary level, a 1x1 conv mixes the three outputs into a 24-channel summary
    that is fed back, beside the stream's own features, into the next level
    (24 + 24 = 48 channels). Level inputs: 72, 48, 72, 48, 72; outputs: 24.
    """

    version = "v2"

    def __init__(self, n_classes: int = 4, filters: int = 24, pool: bool = True,
                 dilations: Sequence[int] = DILATIONS,
                 summary_levels: Sequence[int] = (0, 2, 4)) -> None:
        n_streams = len(MODALITIES)
        super().__init__(n_classes, n_streams * filters * (len(dilations) + 1), pool)
        self.summary_levels = tuple(summary_levels)
        self.inits = nn.ModuleList(InitUnit(1, filters, pool) for _ in range(n_streams))
        self.streams = nn.ModuleList(
            nn.ModuleList(
                DilateResUnit(
                    n_streams * filters if i in self.summary_levels else 2 * filters,
                    filters, filters, d,
                )
                for i, d in enumerate(dilations)
            )
            for _ in range(n_streams)
        )
        self.mixers = nn.ModuleDict({
            str(i): _bn_relu_conv(n_streams * filters, filters, 1)
            for i in self.summary_levels if i + 1 < len(dilations)
        })

    def features(self, x: torch.Tensor) -> torch.Tensor:
        hs = [init(x[:, m:m + 1]) for m, init in enumerate(self.inits)]
        feats = list(hs)
        summary = None
        for i in range(len(self.streams[0])):
            if i in self.summary_levels:
                joint = concat_channels(hs)
                hs = [levels[i](joint) for levels in self.streams]
                if str(i) in self.mixers:
                    summary = self.mixers[str(i)](concat_channels(hs))
            else:
                hs = [levels[i](concat_channels([h, summary]))
                      for h, levels in zip(hs, self.streams)]
            feats.extend(hs)
        return concat_channels(feats)


_VERSIONS: dict[str, type[MixNet]] = {"v1": MixNetV1, "v2": MixNetV2, "v3": MixNetV3}


def fold_batchnorm(model: MixNet) -> MixNet:
    """An inference copy of ``model`` (eval mode) in which every BatchNorm that reads a
    convolution's output alone (the second and third of each DilateResUnit body, and the
    one of each OutputUnit branch) is folded into that convolution's weights and bias.

    In eval mode a BatchNorm is a per-channel ``scale * x + shift``, so the convolution
    that feeds it can compute it: ``W * scale`` per output channel, bias ``(b - mean) *
    scale + beta``. The first BatchNorm of each body reads the residual stream and the
    OutputUnit's ``pre`` the concatenated features: those stay. The same function up to
    rounding, with 14 of the 20 BatchNorm passes of MixNetv3 gone (BatchNorm took 17 % of a
    bfloat16 inference step). ``model`` itself is unchanged.
    """
    model = copy.deepcopy(model).eval()
    for unit in model.modules():
        if isinstance(unit, DilateResUnit):
            for before, block in zip(unit.body[:-1], unit.body[1:]):
                _fold_into(before[-1], block[0])
                block[0] = nn.Identity()
        elif isinstance(unit, OutputUnit):
            for branch in unit.branches:
                _fold_into(branch[1], branch[2])
                branch[2] = nn.Identity()
    return model


def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1))
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + norm.bias)


def build_mixnet(version: Literal["v1", "v2", "v3"], n_classes: int, pool: bool = True) -> MixNet:
    """Build a MixNet of the given version with the paper's widths and dilations."""
    try:
        cls = _VERSIONS[version]
    except KeyError:
        raise ValueError(f"unknown MixNet version {version!r}; choose v1, v2 or v3") from None
    return cls(n_classes=n_classes, pool=pool)
