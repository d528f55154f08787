"""Choose the memory layout and precision of training by a check on this host.

Which combination is fastest, and which is correct, depends on the CPU: on an Intel host with
AMX, bfloat16 in channels-last was the fastest; on an AMD EPYC with AVX-512 BF16 (torch
2.13.0), the weight gradients of MixNetv3's grouped dilated convolutions were NaN in
channels-last under bfloat16. So instead of a fixed rule, each candidate runs a few training
steps of the recipe's network, freshly initialised (``train.check_network``), on a random
batch: its gradients must be finite and agree with float32 in the default layout, and the
fastest that does is used (a restart keeps the run's previous choice while it is nearly as
fast: ``pick``). The choice and the times go to the log and the sidecar. Under "auto", a CPU
without native bfloat16 (no AVX-512 BF16, no AMX) checks float32 only, as inference does:
there the emulated bfloat16 took 5-16 times float32's step, and timing it cost about 100 s
per start.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from mixnet_bids.inference.precision import native_bfloat16

LOGGER = logging.getLogger(__name__)

LAYOUTS = {"default": torch.contiguous_format, "channels_last": torch.channels_last}
#: candidates per recipe precision: (bfloat16 autocast, layout name)
CANDIDATES: dict[str, tuple[tuple[bool, str], ...]] = {
    "float32": ((False, "default"), (False, "channels_last")),
    "bfloat16": ((True, "default"), (True, "channels_last")),
}
CANDIDATES["auto"] = CANDIDATES["float32"] + CANDIDATES["bfloat16"]
#: largest relative L2 difference of all gradients from float32 that counts as agreement;
#: bfloat16 keeps 8 bits of mantissa, and its gradients differ from float32 by 1-2 % here.
GRADIENT_TOLERANCE = 0.1
#: a run's previous choice is kept while its step takes at most this many times the time of
#: the fastest candidate that passes; beyond that the host has likely changed (a host without
#: AVX-512 ran bfloat16 five times slower than float32) and the fastest is taken.
PREFER_SLOWDOWN = 1.5


@dataclass(frozen=True)
class Precision:
    """What a run trains in: bfloat16 autocast or not, and the tensors' memory layout."""

    bf16: bool
    layout: str

    @property
    def memory_format(self) -> torch.memory_format:
        return LAYOUTS[self.layout]

    def describe(self) -> str:
        return f"{'bfloat16' if self.bf16 else 'float32'} {self.layout}"


def gradients(model: nn.Module, loss_fn: Callable, images: torch.Tensor,
              targets: torch.Tensor, precision: Precision) -> torch.Tensor:
    """All parameter gradients of one forward and backward pass, as one float32 vector."""
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision.bf16):
        logits = model(images.to(memory_format=precision.memory_format))
    loss_fn(logits.float(), targets).backward()
    return torch.cat([p.grad.reshape(-1).float() for p in model.parameters()
                      if p.grad is not None])


def choose_precision(model: nn.Module, loss_fn: Callable, images: torch.Tensor,
                     targets: torch.Tensor, precision: str, steps: int = 2,
                     prefer: str | None = None) -> tuple[Precision, dict]:
    """The candidate of ``precision`` ("float32", "bfloat16" or "auto") that ``pick`` takes
    among those whose gradients on ``images``/``targets`` are finite and agree with float32
    (``prefer`` is a candidate's ``describe()``); and a report (seconds per forward +
    backward and gradient difference of each candidate; null where not finite)."""
    options = {c.describe(): c for c in (Precision(bf16, layout)
                                         for bf16, layout in candidates(precision))}
    reference = copy.deepcopy(model).train()
    ref = gradients(reference, loss_fn, images, targets, Precision(False, "default"))
    report = {}
    for candidate in options.values():
        net = copy.deepcopy(model).to(memory_format=candidate.memory_format).train()
        grads = gradients(net, loss_fn, images, targets, candidate)  # warm-up
        t0 = time.perf_counter()
        for _ in range(steps):
            grads = gradients(net, loss_fn, images, targets, candidate)
        seconds = (time.perf_counter() - t0) / steps
        difference = float((grads - ref).norm() / ref.norm().clamp_min(1e-30))
        ok = bool(torch.isfinite(grads).all()) and difference <= GRADIENT_TOLERANCE
        report[candidate.describe()] = {
            "seconds": round(seconds, 4), "ok": ok,
            "gradient_difference": round(difference, 5) if math.isfinite(difference) else None}
        LOGGER.info("precision check: %s %.3f s per step, gradient difference %.4f%s",
                    candidate.describe(), seconds, difference, "" if ok else " (rejected)")
    chosen = pick(report, prefer)
    if chosen is None:
        raise FloatingPointError(
            f"no {precision} candidate gave finite gradients that agree with float32 on this "
            f"host ({report}); use a recipe with precision float32")
    if prefer in report and report[prefer]["ok"] and chosen != prefer:
        LOGGER.warning("the run's previous %s takes %.1f times the time of %s on this host: "
                       "switching (the run no longer resumes bit for bit)", prefer,
                       report[prefer]["seconds"] / max(report[chosen]["seconds"], 1e-9), chosen)
    elif prefer and prefer not in report:
        LOGGER.warning("the run's previous %s is not a candidate on this host: switching to %s "
                       "(the run no longer resumes bit for bit)", prefer, chosen)
    return options[chosen], report


def candidates(precision: str) -> tuple[tuple[bool, str], ...]:
    """The (bfloat16, layout) candidates that the check times for a recipe's ``precision``:
    under "auto" the bfloat16 ones only on a CPU that computes bfloat16 natively."""
    if precision not in CANDIDATES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(CANDIDATES)}")
    if precision == "auto" and not native_bfloat16(torch.device("cpu")):
        LOGGER.info("precision check: this CPU has no native bfloat16 (AVX-512 BF16 or AMX): "
                    "float32 candidates only")
        return CANDIDATES["float32"]
    return CANDIDATES[precision]


def pick(report: dict, prefer: str | None = None) -> str | None:
    """The fastest candidate of a check's ``report`` that passed, or ``prefer`` when it
    passed and its step takes at most ``PREFER_SLOWDOWN`` times the fastest's time; None if
    none passed."""
    passed = {name: row["seconds"] for name, row in report.items() if row["ok"]}
    if not passed:
        return None
    fastest = min(passed, key=passed.get)
    if prefer in passed and passed[prefer] / PREFER_SLOWDOWN <= passed[fastest]:
        return prefer
    return fastest
