"""Quality-control reports: one HTML page per subject and one per cohort.

Each report is a single self-contained file: figures are PNGs embedded as base64 ``data:``
URIs, the style sheet is inline, there is no JavaScript, and a Content-Security-Policy in
the page forbids loading anything else, so a report opens offline and can be archived or
mailed as is. Figures are drawn by nilearn on matplotlib ``Figure`` objects with the Agg
canvas (no pyplot state, nothing to leak) and show world orientation (RAS, neurological:
left on the left), whatever the orientation of the input files.

The cohort report flags outliers with robust z-scores, ``(x - median) / (1.4826 * MAD)``;
``|z| > OUTLIER_Z`` (3.5, the cut-off of Iglewicz and Hoaglin's modified z-score) flags a
subject. Volumes and fractions count both ways; ``mean_uncertainty`` only when high and the
registration scores ``nmi_<modality>`` only when low.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from nibabel.processing import resample_from_to
from nilearn import plotting

from mixnet_bids.conventions import STRUCTURES, class_table, tissue_labels
from mixnet_bids.io import atomic_write_text
from mixnet_bids.labels import CONVENTIONS, TISSUES
from mixnet_bids.volumes import column_descriptions

LOGGER = logging.getLogger(__name__)

#: Robust z-score beyond which a measure flags a subject (Iglewicz & Hoaglin, 1993).
OUTLIER_Z = 3.5
#: MAD -> standard deviation for normally distributed data.
MAD_SCALE = 1.4826
#: Mean absolute deviation -> standard deviation (sqrt(pi/2)), used where the MAD is 0.
MEAN_AD_SCALE = 1.2533
#: Smaller cohorts are not flagged: their median and MAD mean little.
MIN_COHORT = 5
#: Measures flagged in both directions (present columns only).
TWO_SIDED = (*(f"{t}_ml" for t in TISSUES), *(f"{t}_fraction" for t in TISSUES),
             *(f"{s}_ml" for s in STRUCTURES), "brain_ml", "TIV_ml")
#: Measures flagged only when high (a worse segmentation).
HIGH_IS_BAD = ("mean_uncertainty",)
#: Prefix of registration-quality columns, flagged only when low.
LOW_IS_BAD_PREFIX = "nmi_"

#: Figure width (inches) and resolution: 12 in x 100 dpi = 1200 px wide PNGs.
FIG_WIDTH_IN = 12.0
DPI = 100
#: Cuts per plane in the subject mosaics, and the gap (in) between their rows.
N_CUTS = 7
ROW_GAP_IN = 0.2
#: Padding (mm) kept around the segmented head when cropping the subject figures.
CROP_MARGIN_MM = 8.0
#: Uncertainty below this is left transparent in the overlay.
UNCERTAINTY_FLOOR = 0.05
#: Overlay colours per convention, one per class after background (dseg order).
LABEL_COLORS: dict[str, tuple[str, ...]] = {
    "wholebrain": ("#ff9f1c", "#2f7bff", "#3ee0d0"),
    "3label": ("#ff9f1c", "#2f7bff", "#3ee0d0"),
    "8label": ("#ff9f1c", "#ffe14d", "#2f7bff", "#ff2d55", "#3ee0d0", "#2ecc40",
               "#b57bff", "#ff85c0"),
}
#: The three mosaic rows, sagittal, coronal, axial: nilearn display mode, world axis.
_PLANES = (("x", 0), ("y", 1), ("z", 2))


# ---------------------------------------------------------------------------------------
# Outlier flags
# ---------------------------------------------------------------------------------------

def robust_z(values: pd.Series) -> pd.Series:
    """Robust z-scores ``(x - median) / (1.4826 * MAD)`` of ``values`` (NaN stays NaN).

    Where the MAD is 0 (more than half the values equal), the mean absolute deviation
    times 1.2533 is the spread instead; where that is 0 too, every z is 0.
    """
    x = pd.to_numeric(values, errors="coerce").astype(float)
    median = x.median()
    spread = MAD_SCALE * (x - median).abs().median()
    if not spread > 0:
        spread = MEAN_AD_SCALE * (x - median).abs().mean()
    if not spread > 0:
        return x.where(x.isna(), 0.0)
    return (x - median) / spread


def _directions(columns: Sequence[str]) -> dict[str, str]:
    """Flagged measures present in ``columns`` -> ``"both"``, ``"high"`` or ``"low"``."""
    out = {c: "both" for c in TWO_SIDED if c in columns}
    out.update({c: "high" for c in HIGH_IS_BAD if c in columns})
    out.update({c: "low" for c in columns if c.startswith(LOW_IS_BAD_PREFIX)})
    return out


def report_key(participant_id: str, session_id: str | None = None) -> str:
    """``sub-01`` or ``sub-01_ses-1``: the key of a row for ``report_links``."""
    parts = [str(participant_id)]
    if session_id is not None and not pd.isna(session_id) and str(session_id):
        parts.append(str(session_id))
    return "_".join(parts)


def _row_keys(table: pd.DataFrame) -> list[str]:
    sessions = table["session_id"] if "session_id" in table else [None] * len(table)
    return [report_key(p, s) for p, s in zip(table["participant_id"], sessions)]


def outlier_flags(table: pd.DataFrame) -> pd.DataFrame:
    """One row per flagged (subject, measure) of a cohort table.

    ``table`` has a ``participant_id`` column, optionally ``session_id``, and any of the
    measures in ``TWO_SIDED``, ``HIGH_IS_BAD`` or starting with ``nmi_``. The result has
    the columns ``participant_id``, ``session_id``, ``measure``, ``value``, ``median``,
    ``robust_z`` and ``reason`` (a sentence); it is empty (with those columns) when nothing
    is flagged or the cohort has fewer than ``MIN_COHORT`` rows.
    """
    if "participant_id" not in table:
        raise ValueError("the cohort table needs a participant_id column; it has "
                         f"{list(table.columns)}")
    columns = ["participant_id", "session_id", "measure", "value", "median", "robust_z",
               "reason"]
    rows = []
    if len(table) >= MIN_COHORT:
        for measure, direction in _directions(list(table.columns)).items():
            values = pd.to_numeric(table[measure], errors="coerce").astype(float)
            z = robust_z(values)
            median = values.median()
            bad = {"both": z.abs(), "high": z, "low": -z}[direction] > OUTLIER_Z
            for i in np.flatnonzero(bad.to_numpy()):
                side = "high" if z.iloc[i] > 0 else "low"
                rows.append({
                    "participant_id": table["participant_id"].iloc[i],
                    "session_id": table["session_id"].iloc[i] if "session_id" in table
                    else None,
                    "measure": measure, "value": values.iloc[i], "median": median,
                    "robust_z": z.iloc[i],
                    "reason": f"{measure} = {_fmt(values.iloc[i])} is {side} "
                              f"(robust z {z.iloc[i]:+.1f}; cohort median {_fmt(median)})",
                })
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------------------------------
# Images and figures
# ---------------------------------------------------------------------------------------

def _load3d(path: Path) -> nib.Nifti1Image:
    img = nib.funcs.squeeze_image(nib.load(str(path)))
    if img.ndim != 3:
        raise ValueError(f"{path} is not a 3D image: shape {img.shape}")
    return nib.Nifti1Image(np.asanyarray(img.dataobj), img.affine)


def _check_grid(name: str, img: nib.Nifti1Image, reference: nib.Nifti1Image) -> None:
    if img.shape != reference.shape:
        raise ValueError(f"{name} shape {img.shape} differs from the reference "
                         f"{reference.shape}: resample it on the reference grid first")
    if not np.allclose(img.affine, reference.affine, atol=1e-3):
        raise ValueError(f"{name} affine differs from the reference's:\n{img.affine}\n"
                         f"vs\n{reference.affine}")


def _is_oblique(affine: np.ndarray) -> bool:
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
    if not _is_oblique(affine):
        return shape, affine, False
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in shape], indexing="ij")).reshape(3, -1)
    world = affine[:3, :3] @ corners + affine[:3, 3:4]
    closest = np.abs(affine[:3, :3] / zooms).argmax(axis=1)   # voxel axis per world axis
    step = zooms[closest]
    target = np.diag([*step, 1.0])
    target[:3, 3] = world.min(axis=1)
    target_shape = tuple(int(n) for n in np.ceil(np.ptp(world, axis=1) / step) + 1)
    return target_shape, target, True


class _Scene:
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


def _mosaic(scene: _Scene, draw: Callable[[Figure, Axes, str, list[float]], None],
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


def _png(fig: Figure) -> tuple[str, int, int]:
    """``(data URI, width, height)`` of ``fig`` as a PNG (no metadata)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, facecolor=fig.get_facecolor(),
                metadata={"Software": None})
    width, height = (round(v * DPI) for v in fig.get_size_inches())
    fig.clear()
    return ("data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"),
            width, height)


def _segmentation_figure(scene: _Scene, task: str) -> Figure:
    colors = LABEL_COLORS[task]
    n = len(colors)
    cmap = ListedColormap(colors)

    def draw(fig, ax, mode, cuts):
        plotting.plot_roi(scene.dseg, bg_img=scene.reference, display_mode=mode,
                          cut_coords=cuts, figure=fig, axes=ax, cmap=cmap, vmin=0.5,
                          vmax=n + 0.5, alpha=0.45, colorbar=False, dim=0,
                          black_bg=True, draw_cross=False)

    fig = _mosaic(scene, draw, footer_in=0.45)
    handles = [Patch(color=c, label=name.split(" = ")[0])
               for c, (_, name) in zip(colors, class_table(task)[1:])]
    fig.legend(handles=handles, loc="lower center", ncol=min(n, 5), frameon=False,
               labelcolor="white", fontsize=11)
    return fig


def _uncertainty_figure(scene: _Scene, uncertainty: nib.Nifti1Image) -> Figure:
    overlay = scene.put(uncertainty, order=1)
    overlay = nib.Nifti1Image(np.nan_to_num(np.asanyarray(overlay.dataobj, dtype=np.float32)),
                              overlay.affine)
    cmap = "YlOrRd"

    def draw(fig, ax, mode, cuts):
        display = plotting.plot_anat(scene.reference, display_mode=mode, cut_coords=cuts,
                                     figure=fig, axes=ax, colorbar=False, dim=0,
                                     black_bg=True, draw_cross=False)
        display.add_overlay(overlay, cmap=cmap, vmin=0.0, vmax=1.0,
                            threshold=UNCERTAINTY_FLOOR, transparency=0.85)

    fig = _mosaic(scene, draw, footer_in=0.75)
    height = fig.get_size_inches()[1]
    cax = fig.add_axes((0.3, 0.25 / height, 0.4, 0.12 / height))
    bar = fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap), cax=cax,
                       orientation="horizontal")
    bar.ax.set_title(f"uncertainty (below {UNCERTAINTY_FLOOR} transparent)", color="white",
                     fontsize=11)
    bar.ax.tick_params(colors="white")
    return fig


def _registration_figure(scene: _Scene, modality: nib.Nifti1Image, task: str) -> Figure:
    background = scene.windowed(modality)
    labels = tissue_labels(np.asanyarray(scene.dseg.dataobj).astype(np.uint8), task)
    brain = nib.Nifti1Image((labels > 0).astype(np.float32), scene.affine)
    wm = nib.Nifti1Image((labels == 1 + TISSUES.index("WM")).astype(np.float32), scene.affine)

    def draw(fig, ax, mode, cuts):
        display = plotting.plot_anat(background, display_mode=mode, cut_coords=cuts,
                                     figure=fig, axes=ax, colorbar=False, dim=0,
                                     black_bg=True, draw_cross=False)
        display.add_contours(brain, levels=[0.5], colors=["#ff3030"], linewidths=1.0)
        display.add_contours(wm, levels=[0.5], colors=["#30ff60"], linewidths=1.0)

    fig = _mosaic(scene, draw, footer_in=0.45)
    handles = [Line2D([], [], color="#ff3030", label="brain outline (dseg > 0)"),
               Line2D([], [], color="#30ff60", label="white-matter boundary")]
    fig.legend(handles=handles, loc="lower center", ncol=2, frameon=False,
               labelcolor="white", fontsize=11)
    return fig


# ---------------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------------

_CSS = """
body { font-family: sans-serif; margin: 0 auto; max-width: 1260px; padding: 0 16px 40px;
       color: #222; background: #fff; line-height: 1.4; }
h1 { font-size: 1.6em; border-bottom: 2px solid #444; padding-bottom: 6px; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #bbb; }
nav a { margin-right: 1em; }
figure { margin: 0.5em 0 1.5em; }
figure img { max-width: 100%; height: auto; display: block; background: #000; }
figcaption { font-size: 0.9em; color: #555; margin-top: 4px; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.flag { background: #ffd6d6; font-weight: bold; }
.warnings { background: #fff3cd; border: 2px solid #e0a800; padding: 8px 14px; }
.warnings li { margin: 3px 0; }
.ok { background: #e8f5e9; border: 1px solid #81c784; padding: 8px 14px; }
.flagged { background: #fde2e2; border: 2px solid #d9534f; padding: 8px 14px; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 10px; overflow-x: auto; }
.scroll { overflow-x: auto; }
"""
#: Nothing but inline styles and data: images may load.
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    """Numbers for tables: integers as is, 4 significant digits, 1 decimal from 1000."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(value)
    if isinstance(value, (float, np.floating)):
        if np.isnan(value):
            return "n/a"
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.1f}" if abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))


def _table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; cells are escaped, numbers formatted and right-aligned."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for value in row:
            cls = ' class="num"' if _is_number(value) else ""
            cells.append(f"<td{cls}>{_esc(_fmt(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _figure_html(fig: Figure, alt: str, caption: str) -> str:
    uri, width, height = _png(fig)
    return (f'<figure><img src="{uri}" width="{width}" height="{height}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_esc(title)}</h2>\n{body}\n</section>'


def _page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A complete HTML page from ``(anchor, title, body HTML)`` sections."""
    nav = " ".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t, _ in sections)
    body = "\n".join(_section(*s) for s in sections)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{_esc(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n")


def _warnings_html(warnings: Sequence[str]) -> str:
    if not warnings:
        return '<div class="ok">Warnings: none</div>'
    items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
    return (f'<div class="warnings"><strong>Warnings ({len(warnings)})</strong>'
            f"<ul>{items}</ul></div>")


def _relative_href(link: str) -> str:
    """``link`` escaped for an href; absolute or remote links are refused."""
    parts = urlsplit(link)
    if parts.scheme or parts.netloc or link.startswith(("/", "\\")):
        raise ValueError(f"report link {link!r} must be a relative path like 'sub-01.html' "
                         "(reports never point outside their folder)")
    return _esc(link)


# ---------------------------------------------------------------------------------------
# Subject report
# ---------------------------------------------------------------------------------------

def subject_report(out_html: Path, *, title: str, reference: Path, dseg: Path,
                   uncertainty: Path, registered: Mapping[str, Path], volumes_tsv: Path,
                   settings: Mapping, versions: Mapping[str, str], warnings: Sequence[str],
                   task: str, networks: str | None = None) -> Path:
    """Write one subject's self-contained QC page to ``out_html`` (atomically).

    Inputs, all on the reference grid (any orientation, oblique allowed): ``reference``
    (bias-corrected image), ``dseg`` (labels of the output convention ``task``; the
    networks that gave it: ``networks``), ``uncertainty`` (0-1),
    ``registered`` (modality name -> image resampled on the reference grid, may be empty);
    ``volumes_tsv`` is the one-row volumes table, ``settings`` the run settings (dumped as
    JSON), ``versions`` software name -> version, ``warnings`` lines shown highlighted.

    The page has a summary with the warnings, a segmentation mosaic, an uncertainty
    mosaic, one registration check per modality (its image with the brain outline and the
    white-matter boundary of the segmentation drawn over it), the volumes, the settings and
    the versions. Returns ``out_html``.
    """
    if task not in CONVENTIONS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(CONVENTIONS)}")
    start = time.perf_counter()
    out_html = Path(out_html)
    ref_img = _load3d(reference)
    dseg_img = _load3d(dseg)
    unc_img = _load3d(uncertainty)
    _check_grid("dseg", dseg_img, ref_img)
    _check_grid("uncertainty", unc_img, ref_img)
    reg_imgs = {}
    for name, path in registered.items():
        reg_imgs[name] = _load3d(path)
        _check_grid(name, reg_imgs[name], ref_img)
    volumes = pd.read_csv(volumes_tsv, sep="\t")
    if len(volumes) != 1:
        raise ValueError(f"{volumes_tsv} has {len(volumes)} rows; a subject's volumes "
                         "table has one")
    row = volumes.iloc[0]

    scene = _Scene(ref_img, dseg_img)
    figures = []
    figures.append(("segmentation", "Segmentation", _figure_html(
        _segmentation_figure(scene, task),
        alt=f"{task} segmentation over the reference: sagittal, coronal and axial cuts",
        caption=f"Labels of the {task} convention over the bias-corrected reference; rows: "
                "sagittal, coronal, axial cuts (world coordinates in mm, L = left).")))
    figures.append(("uncertainty", "Uncertainty", _figure_html(
        _uncertainty_figure(scene, unc_img),
        alt="uncertainty map over the reference: sagittal, coronal and axial cuts",
        caption="Voxel uncertainty (normalised entropy of the fused probabilities) over "
                "the reference; high values mark where the planes or classes disagree.")))
    registration = [
        _figure_html(_registration_figure(scene, image, task),
                     alt=f"registration check: {name} with the segmentation boundaries",
                     caption=f"{name} resampled on the reference grid, with the brain outline "
                             "(red) and the white-matter boundary (green) of the "
                             "segmentation: edges should follow the same anatomy.")
        for name, image in reg_imgs.items()]
    if registration:
        figures.append(("registration", "Registration", "\n".join(
            f"<h3>{_esc(name)}</h3>\n{fig}" for name, fig in zip(reg_imgs, registration))))
    else:
        figures.append(("registration", "Registration",
                        "<p>No other modality was registered to the reference.</p>"))

    zooms = np.sqrt((ref_img.affine[:3, :3] ** 2).sum(axis=0))
    facts = [
        ("Task", f"{task}" + (f" (from the {networks} networks)" if networks else "")),
        *((f"dseg {i}", name) for i, (_, name) in enumerate(class_table(task))),
        ("Reference", Path(reference).name),
        ("Grid", " x ".join(str(n) for n in ref_img.shape)
         + f" voxels of {' x '.join(f'{z:.3g}' for z in zooms)} mm, orientation "
         + "".join(nib.aff2axcodes(ref_img.affine))
         + (" (oblique)" if _is_oblique(ref_img.affine) else "")),
        ("Other modalities", ", ".join(reg_imgs) or "none"),
    ]
    facts += [(c, row[c]) for c in ("TIV_ml", "brain_ml", *(f"{t}_fraction" for t in TISSUES),
                                    *(f"{s}_ml" for s in STRUCTURES), "mean_uncertainty")
              if c in row.index]
    summary = _table(["", "value"], facts) + "\n" + _warnings_html(warnings)

    descriptions = {k: v.get("Description", "") + (f" ({v['Units']})" if "Units" in v else "")
                    for k, v in column_descriptions(task).items()}
    volume_rows = [(c, _scalar(row[c]), descriptions.get(c, "")) for c in volumes.columns]
    sections = [
        ("summary", "Summary", summary),
        *figures,
        ("volumes", "Volumes", _table(["measure", "value", "description"], volume_rows)),
        ("settings", "Settings",
         f"<pre>{_esc(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre>"),
        ("versions", "Software versions",
         _table(["software", "version"], sorted(versions.items()))),
    ]
    atomic_write_text(out_html, _page(title, sections))
    LOGGER.debug("subject report %s written in %.1f s", out_html, time.perf_counter() - start)
    return out_html


def _scalar(value: object) -> object:
    """pandas/numpy scalars as Python numbers (kept as strings when not numeric)."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------------------------------
# Group report
# ---------------------------------------------------------------------------------------

def _distribution_figure(table: pd.DataFrame, measures: Sequence[str], keys: Sequence[str],
                         flagged: set[tuple[str, str]]) -> Figure:
    """One box + points panel per measure; flagged points red and labelled."""
    per_row = 5   # fixed, so that panels have one size across figures
    n_rows = -(-len(measures) // per_row)
    fig = Figure(figsize=(FIG_WIDTH_IN, 3.2 * n_rows), facecolor="white")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n_rows, per_row, squeeze=False)
    jitter = np.random.default_rng(0).uniform(-0.12, 0.12, len(table))
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
    for ax in axes.flat[len(measures):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def group_report(out_html: Path, table: pd.DataFrame, *, task: str,
                 report_links: Mapping[str, str] | None = None) -> Path:
    """Write the cohort's self-contained QC page to ``out_html`` (atomically).

    ``table`` has one row per subject (and session): ``participant_id``, optional
    ``session_id``, and the volumes columns. ``report_links`` maps ``report_key`` values
    (``sub-01`` or ``sub-01_ses-1``; a bare ``sub-01`` also serves its sessions) to subject
    reports, as paths relative to ``out_html``'s folder. The page shows the flagged
    subjects (``outlier_flags``) with their reasons and links, the distributions of the
    volumes, fractions and quality scores, and the whole table. Returns ``out_html``.
    """
    start = time.perf_counter()
    out_html = Path(out_html)
    hrefs = {key: _relative_href(link) for key, link in (report_links or {}).items()}
    flags = outlier_flags(table)
    keys = _row_keys(table)

    def link(key: str, participant: str) -> str:
        href = hrefs.get(key, hrefs.get(str(participant)))
        return _esc(key) if href is None else f'<a href="{href}">{_esc(key)}</a>'

    flag_keys = _row_keys(flags) if len(flags) else []
    flagged = set(zip(flag_keys, flags["measure"]))
    rule = (f"Robust z-score = (value - cohort median) / (1.4826 x MAD), flagged when "
            f"|z| > {OUTLIER_Z} for tissue volumes, fractions, brain and TIV; "
            f"mean_uncertainty only when high, {LOW_IS_BAD_PREFIX}* registration scores "
            f"only when low. Cohorts under {MIN_COHORT} rows are not flagged.")
    summary = (f"<p>{len(table)} rows ({table['participant_id'].nunique()} participants), "
               f"task {_esc(task)}.</p><p>{_esc(rule)}</p>")

    if len(flags):
        by_subject: dict[str, list[str]] = {}
        first: dict[str, str] = {}
        for key, (_, flag) in zip(flag_keys, flags.iterrows()):
            by_subject.setdefault(key, []).append(flag["reason"])
            first.setdefault(key, flag["participant_id"])
        rows = "".join(
            f"<tr><td>{link(key, first[key])}</td><td><ul>"
            + "".join(f"<li>{_esc(r)}</li>" for r in reasons) + "</ul></td></tr>"
            for key, reasons in by_subject.items())
        flagged_html = (f'<div class="flagged"><strong>{len(by_subject)} flagged</strong>'
                        f"<table><tr><th>subject</th><th>reasons</th></tr>{rows}</table>"
                        "</div>")
    elif len(table) < MIN_COHORT:
        flagged_html = (f'<div class="ok">Not checked: {len(table)} rows, fewer than '
                        f"{MIN_COHORT}.</div>")
    else:
        flagged_html = '<div class="ok">No outliers.</div>'

    def plotted(columns):
        return [c for c in columns if c in table
                and pd.to_numeric(table[c], errors="coerce").notna().any()]

    groups = [
        ("Tissue volumes (mL)", plotted([*(f"{t}_ml" for t in TISSUES),
                                         *(f"{s}_ml" for s in STRUCTURES), "brain_ml",
                                         "TIV_ml"])),
        ("Tissue fractions of TIV", plotted([f"{t}_fraction" for t in TISSUES])),
        ("Quality scores", plotted([c for c in table.columns if c in HIGH_IS_BAD
                                    or c.startswith(LOW_IS_BAD_PREFIX)])),
    ]
    plots = "\n".join(
        f"<h3>{_esc(name)}</h3>\n" + _figure_html(
            _distribution_figure(table, measures, keys, flagged),
            alt=f"distributions of {', '.join(measures)} across the cohort",
            caption="Box: median and quartiles; points: subjects; red: flagged.")
        for name, measures in groups if measures) or "<p>No volume columns.</p>"

    header = ["report", *table.columns]
    body = []
    for key, (_, row) in zip(keys, table.iterrows()):
        cells = [f"<td>{link(key, row['participant_id'])}</td>"]
        for column in table.columns:
            value = _scalar(row[column])
            cls = []
            if _is_number(value):
                cls.append("num")
            if (key, column) in flagged:
                cls.append("flag")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{_esc(_fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cohort = ('<div class="scroll"><table><tr>' + "".join(f"<th>{_esc(h)}</th>" for h in header)
              + "</tr>\n" + "\n".join(body) + "</table></div>")

    sections = [("summary", "Summary", summary), ("flags", "Flagged subjects", flagged_html),
                ("distributions", "Distributions", plots), ("cohort", "Cohort", cohort)]
    atomic_write_text(out_html, _page(f"MixNet {task} cohort report", sections))
    LOGGER.debug("group report %s written in %.1f s", out_html, time.perf_counter() - start)
    return out_html
