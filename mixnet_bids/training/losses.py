"""The training loss: cross-entropy of targets that may cover several output classes."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mixnet_bids.labels import IGNORE_INDEX


def brain_edge(targets: torch.Tensor, width: int) -> torch.Tensor:
    """Pixels within ``width`` pixels (a square neighbourhood) of the brain/background border.

    ``targets (N, H, W)``: target code 0 is background; every other code, ignored pixels
    included (lesions and other labels inside the brain), is brain. True on both sides of
    the border; the image's own edge is no border.
    """
    brain = (targets != 0).float().unsqueeze(1)
    size = 2 * width + 1
    grown = F.max_pool2d(brain, size, stride=1, padding=width)
    shrunk = -F.max_pool2d(-brain, size, stride=1, padding=width)
    return (grown != shrunk).squeeze(1)


class CoarseLabelLoss(nn.Module):
    """Negative log of the summed probability of the classes a target covers.

    ``membership``: ``(n_targets, n_classes)`` booleans, row t = the output classes target t
    covers. With one class per target (the identity) this is the usual cross-entropy. Pixels
    whose target is ``IGNORE_INDEX`` do not count; ``weights`` (one per target) weight each
    pixel's term, and the mean is taken over the weights, as ``nn.CrossEntropyLoss`` does.
    ``edge_weight`` multiplies the weight of the pixels within ``edge_width`` pixels of the
    brain/background border (``brain_edge``); 1: no such weighting. ``edge_targets`` (one
    boolean per target) limits it to the pixels of those targets, e.g. only the CSF on the
    brain's side of the border; None: every pixel near the border, on both sides.

    ``forward(logits (N, C, H, W), targets (N, H, W) int64) -> scalar``.
    """

    def __init__(self, membership: np.ndarray, weights: list[float] | None = None,
                 edge_weight: float = 1.0, edge_width: int = 0,
                 edge_targets: list[bool] | None = None) -> None:
        super().__init__()
        member = torch.as_tensor(np.asarray(membership, dtype=bool))
        # log(1) = 0 for a covered class, -inf for the others
        log_member = torch.zeros(member.shape).masked_fill(~member, float("-inf"))
        self.register_buffer("log_member", log_member)
        weight = torch.ones(len(member)) if weights is None else torch.tensor(weights)
        if weight.shape != (len(member),):
            raise ValueError(f"{len(weight)} class weights for {len(member)} targets")
        self.register_buffer("weight", weight.float())
        if edge_weight != 1.0 and edge_width < 1:
            raise ValueError(f"an edge weight ({edge_weight}) needs an edge width of at "
                             f"least 1 pixel, not {edge_width}")
        self.edge_weight, self.edge_width = edge_weight, edge_width
        edge_of = torch.tensor([True] * len(member) if edge_targets is None else edge_targets)
        if edge_of.shape != (len(member),):
            raise ValueError(f"{len(edge_of)} edge targets for {len(member)} targets")
        self.register_buffer("edge_of", edge_of)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        valid = targets != IGNORE_INDEX
        codes = targets[valid]                                   # (P,)
        log_probs = F.log_softmax(logits.float(), dim=1)
        log_probs = log_probs.permute(0, 2, 3, 1)[valid]         # (P, C)
        covered = torch.logsumexp(log_probs + self.log_member[codes], dim=1)
        weight = self.weight[codes]
        if self.edge_weight != 1.0:
            near = brain_edge(targets, self.edge_width)[valid] & self.edge_of[codes]
            weight = torch.where(near, weight * self.edge_weight, weight)
        return -(weight * covered).sum() / weight.sum().clamp_min(1e-12)
