"""One subject's self-contained QC page: flags, figures, methods, volumes, settings."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from mixnet_bids.conventions import STRUCTURES, class_table
from mixnet_bids.inference.predict import mirrored_planes
from mixnet_bids.io import atomic_write_text
from mixnet_bids.labels import CONVENTIONS, TISSUES
from mixnet_bids.preprocessing import load_3d
from mixnet_bids.refinement import PRIOR_EXPONENT
from mixnet_bids.reports import figures
from mixnet_bids.reports.html import esc, figure_html, page, scalar, table
from mixnet_bids.reports.qc import (
    CHECKS,
    Flag,
    flag_lines,
    image_flags,
    image_measures,
    table_flags,
)
from mixnet_bids.templates import TEMPLATE
from mixnet_bids.volumes import TIV_SOURCES, column_descriptions, tissue_margin

LOGGER = logging.getLogger(__name__)

#: References of the methods paragraph.
CITATIONS = (
    "Chen L, Merhof D. MixNet: multi-modality mix network for brain segmentation. "
    "BrainLes 2018 (MICCAI workshop), LNCS 11383:367-377, Springer, 2019.",
    "Tustison NJ, Avants BB, Cook PA, Zheng Y, Egan A, Yushkevich PA, Gee JC. N4ITK: improved "
    "N3 bias correction. IEEE Trans Med Imaging 29(6):1310-1320, 2010.",
    "Avants BB, Tustison NJ, Song G, Cook PA, Klein A, Gee JC. A reproducible evaluation of "
    "ANTs similarity metric performance in brain image registration. NeuroImage "
    "54(3):2033-2044, 2011.",
    "Gorgolewski K, Burns CD, Madison C, Clark D, Halchenko YO, Waskom ML, Ghosh SS. Nipype: "
    "a flexible, lightweight and extensible neuroimaging data processing framework in "
    "Python. Front Neuroinform 5:13, 2011.",
    "Fonov V, Evans AC, Botteron K, Almli CR, McKinstry RC, Collins DL. Unbiased average "
    "age-appropriate atlases for pediatric studies. NeuroImage 54(1):313-327, 2011; "
    f"TemplateFlow identifier {TEMPLATE}.",
)
#: Reference of the label maps the fine networks' synthetic training images come from.
BRAINWEB_CITATION = (
    "Aubert-Broche B, Griffin M, Pike GB, Evans AC, Collins DL. Twenty new digital brain "
    "phantoms for creation of validation image data bases. IEEE Trans Med Imaging "
    "25(11):1410-1416, 2006.")


def load_checked(path: Path, reference: nib.Nifti1Image, name: str) -> nib.Nifti1Image:
    """``path`` as a 3D image on ``reference``'s grid, or a ValueError naming both."""
    img = load_3d(path)
    if img.shape != reference.shape:
        raise ValueError(f"{name} shape {img.shape} differs from the reference "
                         f"{reference.shape}: resample it on the reference grid first")
    if not np.allclose(img.affine, reference.affine, atol=1e-3):
        raise ValueError(f"{name} affine differs from the reference's:\n{img.affine}\n"
                         f"vs\n{reference.affine}")
    return img


def methods_html(*, task: str, networks: str | None, modalities: Sequence[str],
                 settings: Mapping, versions: Mapping[str, str],
                 skull_stripped: bool = False) -> str:
    """What ran, with the software versions and the references to cite;
    ``skull_stripped``: whether the inputs' non-zero voxels were taken as the brain and the
    TIV (``conventions.stripping_rule``)."""
    def v(name: str) -> str:
        return esc(versions.get(name, "unknown version"))

    planes = settings.get("planes") or ["sagittal", "coronal", "axial"]
    weights = settings.get("plane_weights") or {}
    fusion = ", ".join(f"{p} {weights[p]:g}" for p in planes if p in weights)
    mirrored = mirrored_planes(planes, bool(settings.get("mirror")))
    text = (
        f"Segmented with mixnet-bids {v('mixnet-bids')}. Each input image "
        f"({esc(', '.join(modalities))}) was corrected for intensity non-uniformity with N4 "
        f"[2] as implemented in ANTs [3] (antspyx {v('antspyx')})"
        + ("; the other modalities were registered rigidly to the first with ANTs"
           if len(modalities) > 1 else "")
        + ". Images were z-scored inside the head "
        f"and segmented by MixNet [1] (model {esc(settings.get('model_version', 'v3'))}, "
        f"{esc(networks or task)} networks"
        + (", trained on MRBrainS18 and on images synthesised from BrainWeb label maps [6]"
           if networks == "fine" else "")
        + f") on {esc(', '.join(planes))} slices"
        + (f" (the {esc(' and '.join(mirrored))} network also on the left-right mirrored "
           "head, its two outputs averaged)" if mirrored else "")
        + f", whose class probabilities were averaged with weights {esc(fusion or 'equal')} "
        f"(PyTorch {v('torch')})"
        + ("; the split of the brain between GM, WM and CSF was then refined by one Gaussian "
           "per tissue of the N4-corrected reference image, fitted by EM with the fused "
           f"tissue probabilities raised to the power {PRIOR_EXPONENT:g} as the prior"
           if settings.get("refine") else "")
        + ("; the inputs were skull-stripped, so every voxel the stripping did not set to 0 "
           "was taken as GM, WM or CSF" if skull_stripped else "")
        + f". Labels follow the {esc(task)} convention. The total intracranial volume (TIV) "
        + (f"consists of {esc(TIV_SOURCES['skull-stripping'])}" if skull_stripped else
           f"consists of {esc(TIV_SOURCES['networks'])} (template [5], ANTs registration)")
        + "; tissue volumes are probability-weighted inside it. "
        f"The workflow ran in Nipype [4] {v('nipype')} with Python {v('python')}, nibabel "
        f"{v('nibabel')} and nilearn {v('nilearn')}.")
    citations = CITATIONS + ((BRAINWEB_CITATION,) if networks == "fine" else ())
    refs = "".join(f"<li>{esc(c)}</li>" for c in citations)
    return f"<p>{text}</p>\n<ol>{refs}</ol>"


def flags_html(input_warnings: Sequence[str], flags: Sequence[Flag]) -> str:
    """The warnings of the input checks and the QC flags, each flag with what it means and
    what to do."""
    if not input_warnings and not flags:
        return '<div class="ok">Warnings: none</div>'
    items = [f"<li>{esc(w)}</li>" for w in input_warnings]
    for flag, line in zip(flags, flag_lines(list(flags))):
        check = CHECKS[flag.check]
        items.append(f"<li><strong>{esc(line)}</strong><br>{esc(check.meaning)}<br>"
                     f"<em>What to do:</em> {esc(check.action)}</li>")
    return (f'<div class="warnings"><strong>Warnings ({len(items)})</strong>'
            f"<ul>{''.join(items)}</ul></div>")


def checks_html() -> str:
    """Every automatic check, what it means and what to do."""
    return '<dl class="checks">' + "".join(
        f"<dt>{esc(c.title)}</dt><dd>{esc(c.meaning)} <em>What to do:</em> "
        f"{esc(c.action)}</dd>" for c in CHECKS.values()) + "</dl>"


def subject_report(out_html: Path, *, title: str, reference: Path, dseg: Path,
                   probsegs: Sequence[Path], registered: Mapping[str, Path], volumes_tsv: Path,
                   settings: Mapping, versions: Mapping[str, str], warnings: Sequence[str],
                   task: str, networks: str | None = None, template_mask: Path | None = None,
                   reference_name: str | None = None, command_line: str | None = None) -> Path:
    """Write one subject's self-contained QC page to ``out_html`` (atomically).

    Inputs, all on the reference grid (any orientation, oblique allowed): ``reference``
    (bias-corrected image; ``reference_name``: the input file it came from, shown instead
    of its own name), ``dseg`` (labels of the output convention ``task``; the networks that
    gave it: ``networks``), ``probsegs`` (GM, WM, CSF probabilities), ``registered``
    (modality name -> image
    resampled on the reference grid, may be empty), ``template_mask`` (the template brain
    mask registered to the subject, for the TIV); ``volumes_tsv`` is the one-row volumes
    table, ``settings`` the run settings (dumped as JSON), ``versions`` software name ->
    version, ``warnings`` the input checks' lines, ``command_line`` the command that ran.
    Whether the skull-stripped inputs' non-zero voxels were taken as the brain and the TIV
    comes from the table's ``TIV_source``.

    The page has a summary with the warnings and the QC flags (``qc``: each with what it
    means and what to do), outlines of the segmentation, of the template mask, where the
    networks hesitate,
    one registration check per modality, a methods paragraph, the volumes, the command
    line, the settings and the versions. Returns ``out_html``.
    """
    if task not in CONVENTIONS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(CONVENTIONS)}")
    start = time.perf_counter()
    out_html = Path(out_html)
    ref_img = load_3d(reference)
    dseg_img = load_checked(dseg, ref_img, "dseg")
    if len(probsegs) != len(TISSUES):
        raise ValueError(f"{len(probsegs)} probseg maps; give {', '.join(TISSUES)}")
    tissues = {t: np.asarray(load_checked(p, ref_img, f"{t} probseg").dataobj, np.float32)
               for t, p in zip(TISSUES, probsegs)}
    # the margin is 1 where no tissue is likely (background alone): computed elsewhere only
    likely = (tissues["GM"] + tissues["WM"] + tissues["CSF"]) > 0
    margin = np.ones(likely.shape, np.float32)
    margin[likely] = tissue_margin({t: prob[likely] for t, prob in tissues.items()})
    margin_img = nib.Nifti1Image(margin, ref_img.affine)
    reg_imgs = {name: load_checked(path, ref_img, name) for name, path in registered.items()}
    tpl_img = (load_checked(template_mask, ref_img, "template mask")
               if template_mask is not None else None)
    volumes = pd.read_csv(volumes_tsv, sep="\t")
    if len(volumes) != 1:
        raise ValueError(f"{volumes_tsv} has {len(volumes)} rows; a subject's volumes "
                         "table has one")
    row = volumes.iloc[0]
    skull_stripped = row.get("TIV_source") == "skull-stripping"

    zooms = np.sqrt((ref_img.affine[:3, :3] ** 2).sum(axis=0))
    measures = image_measures(
        np.asanyarray(dseg_img.dataobj),
        None if tpl_img is None else np.asanyarray(tpl_img.dataobj),
        np.asanyarray(ref_img.dataobj), float(np.prod(zooms)) / 1000.0)
    flags = table_flags(row.to_dict()) + image_flags(measures)

    scene = figures.Scene(ref_img, dseg_img)
    sections_figures = [("segmentation", "Segmentation", figure_html(
        figures.segmentation_figure(scene, task),
        alt=f"{task} segmentation outlines over the reference: sagittal, coronal and axial "
            "cuts",
        caption=f"Tissue surfaces of the {task} segmentation over the bias-corrected "
                "reference: each outline should follow an edge of the image. Rows: "
                "sagittal, coronal, axial cuts (world coordinates in mm, L = left)."))]
    if tpl_img is not None:
        sections_figures.append(("template", "Template registration", figure_html(
            figures.template_figure(scene, tpl_img),
            alt="template brain mask outline over the reference",
            caption=f"The {TEMPLATE} brain mask registered (affine) to the subject (red), "
                    "which completes the TIV near the brain, and the segmented tissue (cyan): "
                    "the red outline should follow the inner skull.")))
    sections_figures.append(("hesitation", "Hesitation", figure_html(
        figures.hesitation_figure(scene, margin_img),
        alt="voxels where the networks hesitate, over the reference",
        caption=f"Tissue voxels whose two most likely classes (background, GM, WM, CSF) are "
                f"within {figures.NEAR_TIE} of each other: the labels there are the least "
                "reliable. Along tissue boundaries this is expected; in whole regions (a "
                "cortex, a rim around the brain) it marks a failure. Their mean over the "
                "tissue is mean_margin.")))
    registration = [
        f"<h3>{esc(name)}</h3>\n" + figure_html(
            figures.registration_figure(scene, image, task),
            alt=f"registration check: {name} with the segmentation boundaries",
            caption=f"{name} resampled on the reference grid, with the brain outline (red) "
                    "and the white-matter boundary (green) of the segmentation: edges should "
                    "follow the same anatomy.")
        for name, image in reg_imgs.items()]
    sections_figures.append(("registration", "Registration", "\n".join(registration) or
                             "<p>No other modality was registered to the reference.</p>"))

    facts = [
        ("Task", f"{task}" + (f" (from the {networks} networks)" if networks else "")),
        *((f"dseg {i}", name) for i, (_, name) in enumerate(class_table(task))),
        ("Reference", reference_name or Path(reference).name),
        ("Grid", " x ".join(str(n) for n in ref_img.shape)
         + f" voxels of {' x '.join(f'{z:.3g}' for z in zooms)} mm, orientation "
         + "".join(nib.aff2axcodes(ref_img.affine))
         + (" (oblique)" if figures.is_oblique(ref_img.affine) else "")),
        ("Other modalities", ", ".join(reg_imgs) or "none"),
        ("Brain and TIV", "every voxel the skull stripping did not set to 0" if skull_stripped
         else "from the networks (the TIV with the template's brain mask)"),
    ]
    facts += [(c, scalar(row[c])) for c in ("TIV_ml", "brain_ml",
                                            *(f"{t}_fraction" for t in TISSUES),
                                            *(f"{s}_ml" for s in STRUCTURES),
                                            "mean_uncertainty", "mean_margin")
              if c in row.index]
    facts += [(name, round(value, 4)) for name, value in measures.items()]
    summary = table(["", "value"], facts) + "\n" + flags_html(warnings, flags)

    descriptions = {k: v.get("Description", "") + (f" ({v['Units']})" if "Units" in v else "")
                    for k, v in column_descriptions(task).items()}
    volume_rows = [(c, scalar(row[c]), descriptions.get(c, "")) for c in volumes.columns]
    modalities = [reference_name or Path(reference).name, *reg_imgs]
    sections = [
        ("summary", "Summary", summary),
        *sections_figures,
        ("checks", "Checks", checks_html()),
        ("methods", "Methods", methods_html(task=task, networks=networks,
                                            modalities=modalities, settings=settings,
                                            versions=versions,
                                            skull_stripped=skull_stripped)),
        ("volumes", "Volumes", table(["measure", "value", "description"], volume_rows)),
        ("command", "Command line", f"<pre>{esc(command_line or 'not recorded')}</pre>"),
        ("settings", "Settings",
         f"<pre>{esc(json.dumps(settings, indent=2, sort_keys=True, default=str))}</pre>"),
        ("versions", "Software versions",
         table(["software", "version"], sorted(versions.items()))),
    ]
    atomic_write_text(out_html, page(title, sections))
    LOGGER.debug("subject report %s written in %.1f s", out_html, time.perf_counter() - start)
    return out_html
