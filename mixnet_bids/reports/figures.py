"""Figures of the reports, drawn by nilearn and matplotlib on ``Figure`` objects with the Agg
canvas (no pyplot state, nothing to leak).

Subject figures are mosaics of sagittal, coronal and axial cuts in world orientation (RAS,
neurological: left on the left), whatever the orientation of the input files; boundaries are
drawn as outlines over the bias-corrected image, so that the anatomy under them stays
visible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from nibabel.processing import resample_from_to
from nilearn import plotting

from mixnet_bids.conventions import tissue_labels
from mixnet_bids.labels import TISSUES
from mixnet_bids.reports.html import DPI

#: Figure width (inches): FIG_WIDTH_IN x DPI = 1200 px wide PNGs.
FIG_WIDTH_IN = 12.0
#: Cuts per plane in the subject mosaics, and the gap (in) between their rows.
N_CUTS = 7
ROW_GAP_IN = 0.2
#: Padding (mm) kept around the segmented head when cropping the subject figures.
CROP_MARGIN_MM = 8.0
#: The hesitation figure shows the voxels whose two most likely classes are within this of
#: each other (``volumes.tissue_margin``). Against manual labels (MRBrainS 1, BrainWeb 05,
#: as is and degraded), 1 - margin ranks the wrong voxels above the right ones better than
#: the normalised entropy (ROC AUC 0.75-0.83 against 0.62-0.75); below 0.2 are 20-30 % of
#: the tissue voxels, 30-69 % of them wrong.
NEAR_TIE = 0.2
#: Outline colours of the segmentation: outer edge of the tissue, pial and white surfaces.
SURFACE_COLORS = ("#3ee0d0", "#ff9f1c", "#2f7bff")
#: Outline width (points) of the subject figures.
LINE_WIDTH = 0.9
#: The three mosaic rows, sagittal, coronal, axial: nilearn display mode, world axis.
_PLANES = (("x", 0), ("y", 1), ("z", 2))


def is_oblique(affine: np.ndarray) -> bool:
    """True unless the voxel axes are a permutation/flip of the world axes."""
    rot = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return not np.all((np.abs(rot) > 1e-3).sum(axis=0) == 1)


def _display_grid(dseg: nib.Nifti1Image,
                  reference: nib.Nifti1Image) -> tuple[tuple[int, ...], np.ndarray, bool]:
    """Shape and affine to draw on: the head's bounding box, axis-aligned if oblique.

    Returns ``(shape, affine, resample)``; without obliquity the grid is a crop of the
    input (no interpolation), otherwise an axis-aligned grid covering the crop with the
    input's voxel sizes along the closest world axes.
    """
    mask = np.asanyarray(dseg.dataobj) > 0
    if not mask.any():
        mask = np.asanyarray(reference.dataobj) != 0
    zooms = np.sqrt((reference.affine[:3, :3] ** 2).sum(axis=0))
    if mask.any():
        pad = np.ceil(CROP_MARGIN_MM / zooms).astype(int)
        nonzero = np.nonzero(mask)
        lo = np.maximum([a.min() for a in nonzero] - pad, 0)
        hi = np.minimum([a.max() for a in nonzero] + pad + 1, mask.shape)
    else:
        lo, hi = np.zeros(3, int), np.array(mask.shape)
    affine = reference.affine.copy()
    affine[:3, 3] = affine[:3, :3] @ lo + affine[:3, 3]
    shape = tuple(int(n) for n in hi - lo)
    if not is_oblique(affine):
        return shape, affine, False
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    closest = np.abs(affine[:3, :3] / zooms).argmax(axis=1)   # voxel axis per world axis
    step = zooms[closest]
    target = np.diag([*step, 1.0])
    target[:3, 3] = world.min(axis=1)
    target_shape = tuple(int(n) for n in np.ceil(np.ptp(world, axis=1) / step) + 1)
    return target_shape, target, True


class Scene:
    """The subject's images on one display grid, with cut positions and extents."""

    def __init__(self, reference: nib.Nifti1Image, dseg: nib.Nifti1Image):
        self.shape, self.affine, self.resample = _display_grid(dseg, reference)
        self.dseg = self.put(dseg, order=0)
        labels = np.asanyarray(self.dseg.dataobj)
        self.head = labels > 0
        self.reference = self.windowed(reference)
        corners = np.array(np.meshgrid(*[[0, n - 1] for n in self.shape],
                                       indexing="ij")).reshape(3, -1)
        world = self.affine[:3, :3] @ corners + self.affine[:3, 3:4]
        self.extent = np.ptp(world, axis=1)
        ijk = np.argwhere(labels > 0)
        if len(ijk) == 0:
            ijk = np.argwhere(np.ones(self.shape, bool))
        coords = ijk[:: max(1, len(ijk) // 200_000)] @ self.affine[:3, :3].T + self.affine[:3, 3]
        low, high = np.percentile(coords, [5, 95], axis=0)
        self.cuts = {mode: list(np.linspace(low[axis], high[axis], N_CUTS))
                     for mode, axis in _PLANES}

    def put(self, img: nib.Nifti1Image, order: int) -> nib.Nifti1Image:
        """``img`` (on the input grid) on the display grid."""
        if self.resample:
            return resample_from_to(img, (self.shape, self.affine), order=order, cval=0.0)
        lo = np.rint(np.linalg.solve(img.affine, self.affine)[:3, 3]).astype(int)
        box = tuple(slice(a, a + n) for a, n in zip(lo, self.shape))
        return nib.Nifti1Image(np.asanyarray(img.dataobj)[box], self.affine)

    def mask(self, img: nib.Nifti1Image) -> nib.Nifti1Image:
        """A mask (on the input grid) on the display grid, as float 0/1 for contours."""
        data = np.asanyarray(self.put(img, order=0).dataobj) > 0.5
        return nib.Nifti1Image(data.astype(np.float32), self.affine)

    def windowed(self, img: nib.Nifti1Image) -> nib.Nifti1Image:
        """``img`` on the display grid, capped at its 99.5th percentile in the head.

        Keeps a few bright voxels (vessels, fat, artefacts) from darkening the view.
        """
        data = np.nan_to_num(np.asanyarray(self.put(img, order=1).dataobj, dtype=np.float32))
        inside = data[self.head] if self.head.any() else data.ravel()
        return nib.Nifti1Image(np.minimum(data, np.percentile(inside, 99.5)), self.affine)

    def row_height(self, axis: int) -> float:
        """Height (in) of a row of ``N_CUTS`` cuts across the figure, perpendicular to ``axis``."""
        across, up = {0: (1, 2), 1: (0, 2), 2: (0, 1)}[axis]
        return FIG_WIDTH_IN / N_CUTS * self.extent[up] / max(self.extent[across], 1e-6)


def _mosaic(scene: Scene, draw: Callable[[Figure, Axes, str, list[float]], None],
            footer_in: float) -> Figure:
    """Three rows (sagittal, coronal, axial) of ``N_CUTS`` cuts; ``draw`` fills a row."""
    heights = [scene.row_height(axis) for _, axis in _PLANES]
    total = sum(heights) + ROW_GAP_IN * len(heights) + footer_in
    fig = Figure(figsize=(FIG_WIDTH_IN, total), facecolor="black")
    FigureCanvasAgg(fig)
    top = total
    for (mode, _), height in zip(_PLANES, heights):
        top -= height + ROW_GAP_IN
        ax = fig.add_axes((0.0, top / total, 1.0, height / total))
        draw(fig, ax, mode, scene.cuts[mode])
    return fig


def _outlines(background: nib.Nifti1Image, masks: Sequence[nib.Nifti1Image],
              colors: Sequence[str], labels: Sequence[str], scene: Scene) -> Figure:
    """A mosaic of ``background`` with the outline of each mask, and a legend."""
    def draw(fig, ax, mode, cuts):
        display = plotting.plot_anat(background, display_mode=mode, cut_coords=cuts,
                                     figure=fig, axes=ax, colorbar=False, dim=0,
                                     black_bg=True, draw_cross=False)
        for mask, color in zip(masks, colors):
            if np.asanyarray(mask.dataobj).any():
                display.add_contours(mask, levels=[0.5], colors=[color],
                                     linewidths=LINE_WIDTH)

    fig = _mosaic(scene, draw, footer_in=0.45)
    handles = [Line2D([], [], color=c, lw=2, label=name) for c, name in zip(colors, labels)]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 5),
               frameon=False, labelcolor="white", fontsize=11)
    return fig


def segmentation_figure(scene: Scene, task: str) -> Figure:
    """The tissue surfaces of the dseg over the bias-corrected reference: the outer edge of
    the segmented tissue (CSF), the pial surface (GM + WM) and the white-matter surface.

    Nested outlines rather than one outline per class: neighbouring classes share their
    boundaries, so each line is drawn once and the anatomy between lines stays visible.
    """
    labels = tissue_labels(np.asanyarray(scene.dseg.dataobj).astype(np.uint8), task)
    gm, wm = 1 + TISSUES.index("GM"), 1 + TISSUES.index("WM")
    masks = [nib.Nifti1Image(m.astype(np.float32), scene.affine)
             for m in (labels > 0, np.isin(labels, (gm, wm)), labels == wm)]
    return _outlines(scene.reference, masks, SURFACE_COLORS,
                     ["outer edge of tissue (CSF)", "pial surface (GM + WM)",
                      "white-matter surface"], scene)


def template_figure(scene: Scene, template_mask: nib.Nifti1Image) -> Figure:
    """The template brain mask registered to the subject, and the segmented tissue, as
    outlines over the reference."""
    tissue = nib.Nifti1Image(scene.head.astype(np.float32), scene.affine)
    return _outlines(scene.reference, [scene.mask(template_mask), tissue],
                     ["#ff3030", "#3ee0d0"],
                     ["template brain mask (MNI152, registered)", "segmented tissue (dseg > 0)"],
                     scene)


def registration_figure(scene: Scene, modality: nib.Nifti1Image, task: str) -> Figure:
    """A registered modality with the brain outline and white-matter boundary of the dseg."""
    labels = tissue_labels(np.asanyarray(scene.dseg.dataobj).astype(np.uint8), task)
    brain = nib.Nifti1Image((labels > 0).astype(np.float32), scene.affine)
    wm = nib.Nifti1Image((labels == 1 + TISSUES.index("WM")).astype(np.float32), scene.affine)
    return _outlines(scene.windowed(modality), [brain, wm], ["#ff3030", "#30ff60"],
                     ["brain outline (dseg > 0)", "white-matter boundary"], scene)


def hesitation_figure(scene: Scene, margin: nib.Nifti1Image) -> Figure:
    """Where the networks hesitate: ``1 - margin`` over the reference, in the tissue
    voxels whose two most likely classes are within ``NEAR_TIE`` of each other."""
    data = 1.0 - np.nan_to_num(np.asanyarray(scene.put(margin, order=0).dataobj,
                                             dtype=np.float32), nan=1.0)
    overlay = nib.Nifti1Image(np.where(scene.head, data, 0.0).astype(np.float32), scene.affine)
    low, cmap = 1.0 - NEAR_TIE, "YlOrRd"
    shown = bool((np.asanyarray(overlay.dataobj) > low).any())

    def draw(fig, ax, mode, cuts):
        display = plotting.plot_anat(scene.reference, display_mode=mode, cut_coords=cuts,
                                     figure=fig, axes=ax, colorbar=False, dim=0,
                                     black_bg=True, draw_cross=False)
        if shown:
            display.add_overlay(overlay, cmap=cmap, vmin=low, vmax=1.0, threshold=low,
                                transparency=0.85)

    fig = _mosaic(scene, draw, footer_in=0.75)
    height = fig.get_size_inches()[1]
    cax = fig.add_axes((0.3, 0.25 / height, 0.4, 0.12 / height))
    bar = fig.colorbar(ScalarMappable(Normalize(low, 1.0), cmap), cax=cax,
                       orientation="horizontal")
    bar.ax.set_title(f"1 - margin (first minus second class probability below {NEAR_TIE})",
                     color="white", fontsize=11)
    bar.ax.tick_params(colors="white")
    return fig


def distribution_figure(table: pd.DataFrame, measures: Sequence[str], keys: Sequence[str],
                        flagged: set[tuple[str, str]]
                        ) -> tuple[Figure, list[tuple[str, str, float, float]]]:
    """One box + points panel per measure; flagged points red and labelled.

    Returns the figure and, per plotted point, ``(key, measure, x, y)``: its position in
    pixels from the top left of the PNG, for an image map that names each point.
    """
    per_row = 5   # fixed, so that panels have one size across figures
    n_rows = -(-len(measures) // per_row)
    fig = Figure(figsize=(FIG_WIDTH_IN, 3.2 * n_rows), facecolor="white", dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, per_row, squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(table))
    points = []
    for ax, measure in zip(axes.flat, measures):
        values = pd.to_numeric(table[measure], errors="coerce").to_numpy(float)
        finite = np.isfinite(values)
        ax.boxplot(values[finite], widths=0.5, showfliers=False,
                   medianprops={"color": "black"})
        bad = np.array([(k, measure) in flagged for k in keys])
        ax.scatter(1 + jitter[~bad & finite], values[~bad & finite], s=14, color="#3070b0",
                   alpha=0.7, zorder=3)
        ax.scatter(1 + jitter[bad & finite], values[bad & finite], s=30, color="#d62728",
                   zorder=4)
        for i in np.flatnonzero(bad & finite):
            ax.annotate(keys[i], (1 + jitter[i], values[i]), xytext=(5, 0),
                        textcoords="offset points", fontsize=8, color="#d62728")
        ax.set_title(measure, fontsize=11)
        ax.set_xticks([])
        ax.set_xlim(0.4, 2.1)
        ax.grid(axis="y", alpha=0.3)
        points += [(keys[i], measure, ax, 1 + jitter[i], values[i])
                   for i in np.flatnonzero(finite)]
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    fig.tight_layout()
    height = fig.get_size_inches()[1] * DPI
    pixels = []
    for key, measure, ax, x, y in points:
        px, py = ax.transData.transform((x, y))
        pixels.append((key, measure, float(px), float(height - py)))
    return fig, pixels
