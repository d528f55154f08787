"""Intensity refinement: the networks' tissue probabilities as the prior of a Gaussian model
of the image's own intensities.

The networks place the borders between tissues where the images they were trained on put
them. On a scan whose contrast differs (another scanner, sequence or site), the intensity at
which GM turns into CSF or WM differs too, while a Gaussian mixture fitted to the scan itself
finds it. The refinement combines the two, in the spirit of the tissue priors of SPM's unified
segmentation and of Atropos' prior probability maps, with the networks in place of a template:

- one Gaussian per tissue (GM, WM, CSF) of the N4-corrected reference image, fitted by EM;
- the tissue of a voxel is the most likely under ``p ** PRIOR_EXPONENT * N(y; mu, sd)``,
  where ``p`` is the networks' tissue probability. The exponent is a temperature: the
  networks' probabilities are soft at borders, and a sharpened prior lets the intensities
  decide only where the networks hesitate (measured in ``docs/results.md``, "Intensity
  refinement"). The probabilities written are ``p * N(y; mu, sd) ** (1 / PRIOR_EXPONENT)``,
  normalised: the same labels, as soft as the networks' own;
- the networks' brain (1 - background) is kept as it is: only its split between the tissues
  changes, and each tissue's fine classes keep their shares of it.
"""

from __future__ import annotations

import numpy as np

#: The networks' tissue probabilities are raised to this power before the intensity
#: likelihood multiplies them (chosen on the generalisation benchmark: docs/results.md).
PRIOR_EXPONENT = 6.0
#: EM stops when no tissue mean moves by more than this many intensity SDs, or after
#: ``MAX_ITERATIONS``.
TOLERANCE = 1e-3
MAX_ITERATIONS = 50
#: Voxels whose brain probability is below this take no part (they carry no tissue).
MIN_BRAIN = 1e-3


def _log_likelihood(z: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``(n, T)`` Gaussian log-likelihoods (up to a constant) of ``z`` under each tissue."""
    return -0.5 * (z[:, None] - mean) ** 2 / var - 0.5 * np.log(var)


def _normalised(log_p: np.ndarray) -> np.ndarray:
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def fit_tissues(y: np.ndarray, prior: np.ndarray, mass: np.ndarray,
                exponent: float = PRIOR_EXPONENT) -> tuple[np.ndarray, dict]:
    """EM for one Gaussian per tissue, with a fixed prior per voxel raised to ``exponent``.

    ``y``: ``(n,)`` intensities; ``prior``: ``(n, T)`` the networks' tissue probabilities
    given brain (rows sum to 1); ``mass``: ``(n,)`` each voxel's brain probability, its
    weight in the fits. Returns the ``(n, T)`` log-likelihood of each voxel under each
    fitted tissue, and ``{"mean", "sd", "iterations"}`` (in the units of ``y``).
    """
    centre = np.average(y, weights=mass)
    scale = max(float(np.sqrt(np.average((y - centre) ** 2, weights=mass))), 1e-12)
    z = (y - centre) / scale
    with np.errstate(divide="ignore"):
        log_prior = exponent * np.log(prior)        # -inf where the networks say 0
    posterior, mean = prior, None
    for iteration in range(1, MAX_ITERATIONS + 1):
        weights = posterior * mass[:, None]
        total = np.maximum(weights.sum(axis=0), 1e-12)
        new_mean = weights.T @ z / total
        var = np.maximum((weights * (z[:, None] - new_mean) ** 2).sum(axis=0) / total, 1e-6)
        log_likelihood = _log_likelihood(z, new_mean, var)
        posterior = _normalised(log_prior + log_likelihood)
        converged = mean is not None and np.abs(new_mean - mean).max() < TOLERANCE
        mean = new_mean
        if converged:
            break
    return log_likelihood, {"mean": (centre + scale * mean).tolist(),
                            "sd": (scale * np.sqrt(var)).tolist(), "iterations": iteration}


def refine(fused: np.ndarray, image: np.ndarray, groups: np.ndarray,
           exponent: float = PRIOR_EXPONENT) -> tuple[np.ndarray, dict]:
    """The networks' fused class probabilities ``(..., C)`` refined, in place, by the
    intensities of ``image`` (same grid, N4-corrected). ``groups``: ``(C, 4)`` 0/1 matrix
    putting each class in one of background, GM, WM, CSF.

    The tissue probabilities become ``p * L ** (1 / exponent)`` (normalised), ``L`` the
    fitted Gaussians' likelihood: the same labels as ``p ** exponent * L``, with the
    networks' own softness (a flat ``L`` leaves ``p`` as it is). Each brain class is scaled
    by its tissue's change, so the background and each tissue's split into classes are kept.
    Returns ``fused``, refined, and the fit (``fit_tissues``; ``{}`` when no voxel is brain).
    """
    if image.shape != fused.shape[:-1]:
        raise ValueError(f"image shape {image.shape} differs from the probabilities "
                         f"{fused.shape[:-1]}")
    tissue = fused @ groups                          # (..., 4): background, GM, WM, CSF
    brain = tissue[..., 1:].sum(axis=-1)
    voxels = brain > MIN_BRAIN
    if not voxels.any():
        return fused, {}
    mass = brain[voxels].astype(np.float64)
    prior = tissue[voxels][:, 1:].astype(np.float64) / mass[:, None]
    log_likelihood, fit = fit_tissues(image[voxels].astype(np.float64), prior, mass, exponent)
    with np.errstate(divide="ignore"):
        refined_tissue = _normalised(np.log(prior) + log_likelihood / exponent)
        ratio = np.where(prior > 0, refined_tissue / np.where(prior > 0, prior, 1.0), 0.0)
    # background (column 0) keeps ratio 1; each brain class takes its tissue's ratio
    scale = np.concatenate([np.ones((len(mass), 1)), ratio], axis=1).astype(np.float32)
    fused[voxels] *= scale @ groups.T.astype(np.float32)
    return fused, fit
