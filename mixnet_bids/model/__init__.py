"""MixNet v1/v2/v3 in pure PyTorch (Chen et al., BrainLes 2018)."""

from mixnet_bids.model.mixnet import (
    MODALITIES,
    DilateResUnit,
    InitUnit,
    MixNet,
    MixNetV1,
    MixNetV2,
    MixNetV3,
    OutputUnit,
    build_mixnet,
    fold_batchnorm,
)

__all__ = [
    "MODALITIES",
    "DilateResUnit",
    "InitUnit",
    "MixNet",
    "MixNetV1",
    "MixNetV2",
    "MixNetV3",
    "OutputUnit",
    "build_mixnet",
    "fold_batchnorm",
]
