"""Generalisation benchmark: mixnet-bids against ANTs Atropos and a Gaussian mixture on the
T1w images users bring.

Conditions, each a small BIDS dataset (T1w only) built under ``--work`` (never committed):

- ``mrbrains``: the MRBrainS subjects with a 3D T1 (1, 4, 5, 14), resampled to 1 mm
  isotropic (linear; the manual labels by nearest neighbour onto the same grid);
- ``mrbrains-stripped``: the same, 0 outside the manual brain mask dilated by 2 mm;
- ``mrbrains-bias``: the same whole head with a gamma of 0.6 on its intensities and a strong
  smooth multiplicative bias field (a factor of e = 2.7 from one side of the head to the
  other);
- ``brainweb``: the held-out BrainWeb anatomies (``recipes.BRAINWEB_HELD_OUT``) rendered as
  1 mm MPRAGE-like T1w heads by ``synth.render_volume`` (fixed contrast, partial volume, a
  mild bias field, Rician noise; not the training synthesis);
- ``brainweb-stripped``: the same, 0 outside the brain;
- ``brainweb-coronal``: the skull-stripped heads in 1.5 mm coronal slices (1 x 1.5 x 1 mm,
  partial volume over each slice's thickness), scored on that grid: the kind of input of the
  real scans from another site that the generalisation issue reports.

Methods, each on one thread, wall time measured:

- ``mixnet-bids``: the app's CLI end to end in its own process (``--task wholebrain`` when
  fine networks are installed, else ``--task 3label``), scored from its dseg;
- ``atropos``: ANTs N4 (shrink factor 4) then 3-class k-means Atropos (MRF 0.1, radius 1,
  3 iterations) inside a brain mask, through antspyx;
- ``gmm``: the same N4, then a 3-class Gaussian mixture (scikit-learn) of the corrected
  intensities inside the brain mask.

The peers run twice: inside the app's brain mask (its ``desc-tiv_mask``) and inside the true
brain mask (their ceiling). Their classes are ordered by mean intensity, CSF < GM < WM, as in
a T1w image.

Scoring: Dice of GM, WM and CSF against the reference on the input's grid. BrainWeb labels 1
CSF, 2 GM, 3 WM (cerebellum and brainstem included); MRBrainS 1+2 GM, 3+4 WM, 5+6 CSF, and
its cerebellum (7), brainstem (8), infarction (9) and other (10) voxels are ignored for every
method: MRBrainS does not split the cerebellum and the brainstem into GM and WM.

    python benchmarks/generalisation.py --mrbrains ../shared/data/mrbrains18 \\
        --brainweb ../shared/data/brainweb20 --work runs/bench-generalisation \\
        --out benchmarks/results --results-doc docs/results.md

``--conditions``, ``--mrbrains-subjects`` and ``--brainweb-subjects`` choose a subset.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to, resample_to_output
from scipy import ndimage
from skimage.filters import threshold_otsu

from mixnet_bids.evaluation.markdown import table as markdown_table
from mixnet_bids.evaluation.metrics import dice, tissue_dice
from mixnet_bids.labels import IGNORE_INDEX, TISSUES
from mixnet_bids.preprocessing import head_mask
from mixnet_bids.versions import cpu_name

#: Environment variables that set the thread count of every library involved (OpenMP, BLAS,
#: ITK inside antspyx and the app's ANTs programs); the benchmark runs with all at 1.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS")
CONDITIONS = ("mrbrains", "mrbrains-stripped", "mrbrains-bias", "brainweb",
              "brainweb-stripped", "brainweb-coronal")
TITLES = {"mrbrains": "(a) MRBrainS T1w, 1 mm", "mrbrains-stripped": "(b) (a) skull-stripped",
          "mrbrains-bias": "(c) (a) with bias field and gamma 0.6",
          "brainweb": "(d) BrainWeb held out, MPRAGE-like 1 mm",
          "brainweb-stripped": "(e) (d) skull-stripped",
          "brainweb-coronal": "(f) (e) in 1.5 mm coronal slices"}
#: Voxel size (mm, RAS) of ``brainweb-coronal``: 1.5 mm slices along anterior-posterior.
CORONAL_SLICES_MM = (1.0, 1.5, 1.0)
#: MRBrainS subjects with a 3D T1.
MRBRAINS_T1W = ("1", "4", "5", "14")
#: Tissue codes of the references and predictions (0 background, then ``TISSUES``).
GM, WM, CSF = 1, 2, 3
#: MRBrainS label -> tissue code: cerebellum, brainstem, infarction and other are ignored.
MRBRAINS_TISSUE = {0: 0, 1: GM, 2: GM, 3: WM, 4: WM, 5: CSF, 6: CSF, 7: IGNORE_INDEX,
                   8: IGNORE_INDEX, 9: IGNORE_INDEX, 10: IGNORE_INDEX}
#: MRBrainS labels inside the brain (every label but background): its true brain mask.
MRBRAINS_BRAIN = tuple(range(1, 11))
#: BrainWeb label -> tissue code; the non-brain labels (4-11) are background.
BRAINWEB_TISSUE = {1: CSF, 2: GM, 3: WM}
#: Dilation of the manual brain mask for the skull-stripped MRBrainS images (1 mm voxels).
STRIP_DILATION_MM = 2
#: Gamma and the log-range over the head of the bias field of ``mrbrains-bias``.
GAMMA = 0.6
BIAS_LOG_RANGE = 1.0
#: Atropos settings: MRF smoothing factor and radius, iterations (threshold 0: run them all).
ATROPOS_MRF = "[0.1,1x1x1]"
ATROPOS_CONVERGENCE = "[3,0]"


@dataclass(frozen=True)
class Case:
    """One subject of one condition: its BIDS input and what it is scored against."""

    condition: str
    subject: str        # BIDS label, without "sub-"
    bids_dir: Path
    image: Path         # the T1w of the BIDS dataset
    reference: Path     # tissue codes (0, GM, WM, CSF, IGNORE_INDEX) on the image's grid
    brain_mask: Path    # the true brain mask, same grid


# -- conditions ---------------------------------------------------------------------------


def tissue_codes(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Raw labels -> tissue codes by ``mapping`` (unlisted values: background)."""
    lut = np.zeros(256, np.uint8)
    for label, code in mapping.items():
        lut[label] = code
    return lut[np.asarray(labels, np.uint8)]


def brain_mask(labels: np.ndarray, brain_labels: tuple[int, ...]) -> np.ndarray:
    """The voxels of ``brain_labels``, holes filled."""
    return ndimage.binary_fill_holes(np.isin(labels, brain_labels))


def mrbrains_1mm(folder: Path, subject: str) -> tuple[nib.Nifti1Image, np.ndarray]:
    """An MRBrainS subject's 3D T1 resampled to 1 mm isotropic (linear) and its manual labels
    on the same grid (nearest neighbour)."""
    t1_path = folder / subject / "orig" / "reg_T1.nii.gz"
    labels_path = folder / subject / "segm.nii.gz"
    for path in (t1_path, labels_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: MRBrainS subjects with a 3D T1 are "
                                    f"{', '.join(MRBRAINS_T1W)}; check --mrbrains")
    t1 = nib.load(str(t1_path))
    image = resample_to_output(nib.Nifti1Image(t1.get_fdata(dtype=np.float32), t1.affine),
                               voxel_sizes=(1.0, 1.0, 1.0), order=1)
    labels = resample_from_to(nib.load(str(labels_path)), image, order=0)
    data = np.clip(image.get_fdata(dtype=np.float32), 0, None)
    return nib.Nifti1Image(data, image.affine), np.asarray(labels.dataobj).astype(np.uint8)


def skull_strip(data: np.ndarray, mask: np.ndarray, dilation: int) -> np.ndarray:
    """``data`` with everything outside ``mask`` dilated by ``dilation`` voxels set to 0."""
    keep = ndimage.binary_dilation(mask, iterations=dilation) if dilation else mask
    return np.where(keep, data, 0).astype(np.float32)


def bias_and_gamma(data: np.ndarray, head: np.ndarray, rng: np.random.Generator,
                   gamma: float = GAMMA, log_range: float = BIAS_LOG_RANGE) -> np.ndarray:
    """A contrast change and a strong bias: intensities scaled to the 99.5th percentile of the
    ``head`` (a mask), raised to ``gamma``, times a smooth field, on a 0-1000 scale.

    The field is exp of a random quadratic polynomial of the voxel coordinates (-1 to 1
    across the field of view), scaled so that its log spans ``log_range`` over the head.
    """
    scale = float(np.percentile(data[head], 99.5))
    contrast = np.clip(data / scale, 0, None) ** gamma
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n, dtype=np.float32) for n in data.shape),
                          indexing="ij", sparse=True)
    linear, quadratic = rng.normal(0, 1, 3), rng.normal(0, 0.5, 3)
    log_field = (linear[0] * x + linear[1] * y + linear[2] * z
                 + quadratic[0] * x ** 2 + quadratic[1] * y ** 2 + quadratic[2] * z ** 2)
    low, high = float(log_field[head].min()), float(log_field[head].max())
    log_field = log_range * (log_field - (low + high) / 2) / (high - low)
    return (1000.0 * contrast * np.exp(log_field)).astype(np.float32)


def subject_seed(condition: str, subject: str) -> int:
    """A fixed seed per condition and subject (the same on every run and machine)."""
    return sum(ord(c) * (i + 1) for i, c in enumerate(f"{condition}/{subject}"))


def condition_volume(condition: str, subject: str, mrbrains: Path, brainweb: Path,
                     ) -> tuple[nib.Nifti1Image, np.ndarray, np.ndarray]:
    """``(T1w image, tissue codes, true brain mask)`` of one subject of ``condition``."""
    if condition.startswith("mrbrains"):
        image, labels = mrbrains_1mm(mrbrains, subject)
        data = image.get_fdata(dtype=np.float32)
        mask = brain_mask(labels, MRBRAINS_BRAIN)
        if condition == "mrbrains-stripped":
            data = skull_strip(data, mask, STRIP_DILATION_MM)
        elif condition == "mrbrains-bias":
            # Otsu's head mask: the rule the condition was defined with, kept so that its
            # images stay the same whatever the app's head mask
            data = bias_and_gamma(data, head_mask(data, threshold_otsu),
                                  np.random.default_rng(subject_seed(condition, subject)))
        return (nib.Nifti1Image(data, image.affine), tissue_codes(labels, MRBRAINS_TISSUE),
                mask)
    from mixnet_bids.training.synth import BRAIN_LABELS, load_label_volumes, render_volume

    (volume,) = load_label_volumes(brainweb, [subject])
    spacing = CORONAL_SLICES_MM if condition == "brainweb-coronal" else 1.0
    data, labels, affine = render_volume(volume, np.random.default_rng(0), spacing, "mprage",
                                         skull_stripped=condition != "brainweb")
    return (nib.Nifti1Image(data, affine), tissue_codes(labels, BRAINWEB_TISSUE),
            brain_mask(labels, BRAIN_LABELS))


def save(data: np.ndarray, affine: np.ndarray, path: Path, dtype: type) -> Path:
    img = nib.Nifti1Image(np.asarray(data, dtype), affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def build_case(condition: str, subject: str, work: Path, mrbrains: Path,
               brainweb: Path) -> Case:
    """Write one subject of ``condition`` into ``<work>/<condition>``: the BIDS T1w, and its
    reference and true brain mask beside the dataset."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; choose from {', '.join(CONDITIONS)}")
    label = subject.removeprefix("sub-")
    image, reference, mask = condition_volume(condition, label, mrbrains, brainweb)
    root = work / condition
    bids = root / "bids"
    bids.mkdir(parents=True, exist_ok=True)
    (bids / "dataset_description.json").write_text(json.dumps(
        {"Name": f"generalisation benchmark: {condition}", "BIDSVersion": "1.9.0"}))
    t1w = save(image.get_fdata(dtype=np.float32), image.affine,
               bids / f"sub-{label}" / "anat" / f"sub-{label}_T1w.nii.gz", np.float32)
    return Case(condition, label, bids, t1w,
                save(reference, image.affine, root / "truth" / f"sub-{label}_dseg.nii.gz",
                     np.uint8),
                save(mask, image.affine, root / "truth" / f"sub-{label}_mask.nii.gz", np.uint8))


# -- scoring ------------------------------------------------------------------------------


# -- methods ------------------------------------------------------------------------------


def app_command(case: Case, out: Path, work: Path, task: str, weights_dir: Path | None,
                app_args: Sequence[str] = ()) -> list[str]:
    """The mixnet-bids participant run of one case, on one thread (``app_args``: more
    options, e.g. ``--no-refine``)."""
    executable = Path(sys.executable).with_name("mixnet-bids")
    command = [str(executable if executable.exists() else "mixnet-bids"), str(case.bids_dir),
               str(out), "participant", "--participant-label", case.subject, "-w", str(work),
               "--task", task, "--nprocs", "1", "--omp-nthreads", "1",
               "--skip-bids-validation", "--no-progress", "--overwrite"]
    if weights_dir is not None:
        command += ["--weights-dir", str(weights_dir)]
    return command + list(app_args)


def run_app(case: Case, root: Path, task: str, weights_dir: Path | None,
            app_args: Sequence[str] = ()) -> tuple[Path, float]:
    """Run mixnet-bids on ``case`` from a fresh work folder: ``(its anat folder, seconds)``."""
    out, work = root / "out", root / "work" / case.subject
    shutil.rmtree(work, ignore_errors=True)
    log = root / f"sub-{case.subject}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.call(app_command(case, out, work, task, weights_dir, app_args),
                               stdout=handle, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if code:
        raise SystemExit(f"mixnet-bids failed on {case.image} (exit {code}); see {log}")
    shutil.rmtree(work, ignore_errors=True)
    return out / f"sub-{case.subject}" / "anat", seconds


def n4_corrected(data: np.ndarray, zooms: tuple[float, ...], mask: np.ndarray) -> np.ndarray:
    """ANTs N4 (antspyx, shrink factor 4, its default schedule) inside ``mask``."""
    import ants

    image = ants.from_numpy(np.asarray(data, np.float32), spacing=tuple(map(float, zooms)))
    weights = image.new_image_like(mask.astype(np.float32))
    return ants.n4_bias_field_correction(image, mask=weights, shrink_factor=4).numpy()


def by_intensity(classes: np.ndarray, intensities: np.ndarray, mask: np.ndarray,
                 ) -> np.ndarray:
    """Three classes numbered 0-2 in ``mask`` -> tissue codes, their mean intensity ordering
    them CSF < GM < WM (a T1w image); 0 outside the mask."""
    means = [intensities[mask][classes[mask] == k].mean() for k in range(3)]
    tissue = np.zeros(3, np.uint8)
    tissue[np.argsort(means)] = (CSF, GM, WM)
    out = np.zeros(mask.shape, np.uint8)
    out[mask] = tissue[classes[mask]]
    return out


def atropos_tissues(corrected: np.ndarray, zooms: tuple[float, ...],
                    mask: np.ndarray) -> np.ndarray:
    """3-class k-means Atropos (MRF 0.1, 3 iterations) inside ``mask`` -> tissue codes.

    antspyx writes Atropos's probability images to ``tempfile.mktemp`` names and leaves them
    there; pointing ``tempfile.tempdir`` at a directory of our own for the call removes them.
    """
    import ants

    image = ants.from_numpy(np.asarray(corrected, np.float32), spacing=tuple(map(float, zooms)))
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="atropos-") as scratch:
        tempfile.tempdir = scratch
        try:
            result = ants.atropos(a=image, x=image.new_image_like(mask.astype(np.float32)),
                                  i="kmeans[3]", m=ATROPOS_MRF, c=ATROPOS_CONVERGENCE)
        finally:
            tempfile.tempdir = previous
    labels = result["segmentation"].numpy().astype(np.int64)   # 1-3 in the mask, else 0
    if (labels[mask] == 0).any():
        raise RuntimeError("Atropos left voxels of the brain mask unlabelled")
    return by_intensity(np.clip(labels - 1, 0, 2), corrected, mask)


def gmm_tissues(corrected: np.ndarray, mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """A 3-class Gaussian mixture of the intensities inside ``mask`` -> tissue codes."""
    from sklearn.mixture import GaussianMixture

    values = corrected[mask].astype(np.float64)[:, None]
    model = GaussianMixture(n_components=3, random_state=seed).fit(values)
    classes = np.zeros(mask.shape, np.int64)
    classes[mask] = model.predict(values)
    return by_intensity(classes, corrected, mask)


def run_peers(case: Case, masks: dict[str, np.ndarray], out: Path) -> list[dict]:
    """Atropos and the Gaussian mixture inside each of ``masks`` (``{"app": .., "true": ..}``):
    one record each, with Dice and seconds (loading the image and N4 counted in both: N4 runs
    once per mask)."""
    reference = np.asarray(nib.load(str(case.reference)).dataobj)
    records = []
    for mask_name, mask in masks.items():
        start = time.perf_counter()
        img = nib.load(str(case.image))
        data = img.get_fdata(dtype=np.float32)
        corrected = n4_corrected(data, img.header.get_zooms()[:3], mask)
        shared = time.perf_counter() - start
        for method in ("atropos", "gmm"):
            start = time.perf_counter()
            if method == "atropos":
                tissues = atropos_tissues(corrected, img.header.get_zooms()[:3], mask)
            else:
                tissues = gmm_tissues(corrected, mask)
            seconds = shared + time.perf_counter() - start
            save(tissues, img.affine,
                 out / f"sub-{case.subject}_method-{method}_mask-{mask_name}_dseg.nii.gz",
                 np.uint8)
            records.append(record(case, method, mask_name, tissue_dice(tissues, reference),
                                  seconds))
    return records


def record(case: Case, method: str, mask: str | None, dice: dict[str, float],
           seconds: float, **extra) -> dict:
    return {"condition": case.condition, "subject": case.subject, "method": method,
            "mask": mask, "dice": {k: round(v, 4) for k, v in dice.items()},
            "seconds": round(seconds, 1), **extra}


def benchmark_case(case: Case, root: Path, task: str, weights_dir: Path | None,
                   app_args: Sequence[str] = ()) -> list[dict]:
    """mixnet-bids, then the peers in its brain mask and in the true one.

    The app's brain mask is the ``desc-tiv_mask`` it writes, the intracranial mask that bounds
    its tissue maps; its record also keeps what its preprocessed T1w's sidecar says of
    ``SkullStripped``."""
    reference = np.asarray(nib.load(str(case.reference)).dataobj)
    truth = np.asarray(nib.load(str(case.brain_mask)).dataobj) > 0
    anat, seconds = run_app(case, root / "mixnet-bids", task, weights_dir, app_args)
    prefix = f"sub-{case.subject}"
    app_mask = np.asarray(nib.load(str(anat / f"{prefix}_desc-tiv_mask.nii.gz")).dataobj) > 0
    prediction = np.asarray(nib.load(str(anat / f"{prefix}_desc-{task}_dseg.nii.gz")).dataobj)
    sidecar = json.loads((anat / f"{prefix}_desc-preproc_T1w.json").read_text())
    records = [record(case, "mixnet-bids", None, tissue_dice(prediction, reference), seconds,
                      mask_dice=round(dice(app_mask, truth), 4),
                      tiv_error=round(float(app_mask.sum()) / float(truth.sum()) - 1.0, 4),
                      skull_stripped=sidecar.get("SkullStripped"))]
    return records + run_peers(case, {"app": app_mask, "true": truth}, root / "peers")


# -- the table ----------------------------------------------------------------------------


def mean_of(records: list[dict], key: str) -> float:
    values = [r[key] for r in records]
    return float(np.mean(values))


def dice_text(records: list[dict]) -> str:
    if not records:
        return "—"
    return " / ".join(f"{np.nanmean([r['dice'][t] for r in records]):.3f}" for t in TISSUES)


def markdown(report: dict) -> str:
    """The table of ``report`` (``main``'s JSON) with its command, date, host and commit."""
    records, meta = report["records"], report["meta"]
    lines = [f"Command: `{meta['command']}`", "",
             f"{meta['date']}, {meta['cpu']} ({meta['cores']} cores, every method on 1 "
             f"thread, niceness {meta['niceness']}), git {meta['commit']}; mixnet-bids "
             f"`{shlex.join(['--task', meta['task'], *meta.get('app_args', [])])}` from the "
             f"{meta['networks']} networks "
             f"(weights: {meta['weights']}).", ""]
    if meta["subset"]:
        lines += ["**A subset** of the benchmark: conditions "
                  f"{', '.join(meta['conditions'])}; the subjects are in the table.", ""]
    rows = []
    for condition in meta["conditions"]:
        here = [r for r in records if r["condition"] == condition]
        ours = [r for r in here if r["method"] == "mixnet-bids"]
        if not ours:
            continue
        our_time = mean_of(ours, "seconds")
        subjects = ", ".join(r["subject"] for r in ours)
        rows.append([TITLES[condition], "mixnet-bids", subjects, dice_text(ours), "—",
                     f"{our_time:.0f}", 1])
        for method, name in (("atropos", "N4 + Atropos"), ("gmm", "N4 + Gaussian mixture")):
            app = [r for r in here if r["method"] == method and r["mask"] == "app"]
            true = [r for r in here if r["method"] == method and r["mask"] == "true"]
            seconds = mean_of(app, "seconds")
            rows.append(["", name, subjects, dice_text(app), dice_text(true), f"{seconds:.0f}",
                         f"{our_time / seconds:.1f}"])
    lines.append(markdown_table(
        ["condition", "method", "subjects", "Dice GM / WM / CSF, app's brain mask",
         "Dice GM / WM / CSF, true brain mask (ceiling)", "wall time (s)",
         "mixnet-bids time / this"], rows))
    masks, stripped = [], []
    for condition in meta["conditions"]:
        ours = [r for r in records
                if r["condition"] == condition and r["method"] == "mixnet-bids"]
        if ours:
            letter = TITLES[condition].split(" ")[0]
            errors = [100 * r["tiv_error"] for r in ours if "tiv_error" in r]
            spread = (f"{min(errors):+.1f} to {max(errors):+.1f}" if len(errors) > 1
                      else f"{errors[0]:+.1f}" if errors else "")
            masks.append(f"{letter} {np.mean([r['mask_dice'] for r in ours]):.3f}"
                         + (f" (volume {spread} %)" if spread else ""))
            said = sorted({str(r.get("skull_stripped")).lower() for r in ours})
            stripped.append(f"{letter} {'/'.join(said)}")
    lines += ["", f"- The app's brain mask (its `desc-tiv_mask`) against the true brain mask, "
                  f"Dice (and the TIV's error against the true intracranial volume): "
                  f"{'; '.join(masks)}. `SkullStripped` in the app's "
                  f"`desc-preproc_T1w.json`: {'; '.join(stripped)}.",
              "- MRBrainS labels the cerebellum (7) and the brainstem (8) as whole structures, "
              "not as GM and WM: those voxels (and 9, 10) are ignored for every method. "
              "BrainWeb's GM and WM include the cerebellum and the brainstem"
              + (", which the 3label networks call background." if meta["task"] == "3label"
                 else "."),
              "- Wall time: mixnet-bids is its whole CLI process (start-up, input checks, N4, "
              "template registration, three planes, outputs, report; BIDS validation skipped); "
              "a peer is loading the image, N4 and its classification, in the benchmark's "
              "process, N4 counted in both peers. Peers' times are those inside the app's mask."]
    return "\n".join(lines) + "\n"


def update_results_doc(doc: Path, table: str) -> None:
    """Put ``table`` between the benchmark's markers in ``doc`` (appended with a heading
    when the markers are missing)."""
    begin, end = "<!-- bench-generalisation:begin -->", "<!-- bench-generalisation:end -->"
    text = doc.read_text() if doc.exists() else "# Results\n"
    block = f"{begin}\n{table}{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n## Generalisation benchmark\n\n{block}\n"
    doc.write_text(text)


# -- running it ---------------------------------------------------------------------------


def git_commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mrbrains", type=Path, required=True, help="MRBrainS18 folder")
    parser.add_argument("--brainweb", type=Path, required=True, help="BrainWeb label maps")
    parser.add_argument("--work", type=Path, default=Path("runs/bench-generalisation"),
                        help="where the datasets and runs go (default %(default)s)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                        help="folder of generalisation.md and .json (default %(default)s)")
    parser.add_argument("--results-doc", type=Path,
                        help="also put the table into this Markdown file (docs/results.md)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS))
    parser.add_argument("--mrbrains-subjects", nargs="+", default=list(MRBRAINS_T1W),
                        choices=MRBRAINS_T1W, metavar="ID")
    parser.add_argument("--brainweb-subjects", nargs="+", metavar="ID",
                        help="BrainWeb anatomies (default: the held-out ones)")
    parser.add_argument("--weights-dir", type=Path,
                        help="mixnet-bids --weights-dir (default: the shipped weights)")
    parser.add_argument("--app-args", type=shlex.split, default=[],
                        help="more mixnet-bids options, one string (e.g. --app-args=--no-refine)")
    return parser.parse_args(argv)


def check_inputs(args: argparse.Namespace) -> None:
    """One line naming the missing folder and the fix."""
    needs = {"mrbrains": any(c.startswith("mrbrains") for c in args.conditions),
             "brainweb": any(c.startswith("brainweb") for c in args.conditions)}
    for name, needed in needs.items():
        folder = getattr(args, name)
        if needed and not folder.is_dir():
            shared = "mrbrains18" if name == "mrbrains" else "brainweb20"
            raise SystemExit(f"{folder}: not a folder; pass --{name} with the team's "
                             f"../shared/data/{shared}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check_inputs(args)
    from mixnet_bids.inference.planes import PLANES
    from mixnet_bids.inference.weights import networks_for
    from mixnet_bids.training.recipes import BRAINWEB_HELD_OUT

    networks, _ = networks_for("3label", list(PLANES), "v3", args.weights_dir)
    task = "wholebrain" if networks == "fine" else "3label"
    brainweb_subjects = args.brainweb_subjects or list(BRAINWEB_HELD_OUT)
    records = []
    for condition in args.conditions:
        subjects = (args.mrbrains_subjects if condition.startswith("mrbrains")
                    else brainweb_subjects)
        for subject in subjects:
            case = build_case(condition, subject, args.work, args.mrbrains, args.brainweb)
            print(f"{condition} sub-{case.subject}: running", flush=True)
            found = benchmark_case(case, args.work / condition, task, args.weights_dir,
                                   args.app_args)
            for r in found:
                print(f"  {r['method']:12s} mask {r['mask'] or '-':5s} Dice "
                      + " / ".join(f"{r['dice'][t]:.3f}" for t in TISSUES)
                      + f"  {r['seconds']:.0f} s", flush=True)
            records += found
    full = (set(args.conditions) == set(CONDITIONS)
            and set(args.mrbrains_subjects) == set(MRBRAINS_T1W)
            and set(brainweb_subjects) == set(BRAINWEB_HELD_OUT))
    meta = {"command": "python benchmarks/generalisation.py " + shlex.join(sys.argv[1:]),
            "date": datetime.date.today().isoformat(), "cpu": cpu_name(),
            "cores": os.cpu_count(), "niceness": os.nice(0), "commit": git_commit(),
            "task": task, "networks": networks,
            "weights": str(args.weights_dir or "shipped"), "app_args": args.app_args,
            "subjects": {"mrbrains": args.mrbrains_subjects, "brainweb": brainweb_subjects},
            "conditions": args.conditions, "subset": not full}
    report = {"meta": meta, "records": records}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "generalisation.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "generalisation.md").write_text("# Generalisation benchmark\n\n" + table)
    if args.results_doc:
        update_results_doc(args.results_doc, table)
    print(table)
    return 0


if __name__ == "__main__":
    if any(os.environ.get(v) != "1" for v in THREAD_VARIABLES):
        # the libraries read these once, when loaded: start again with every one at 1
        os.execve(sys.executable, [sys.executable, *sys.argv],
                  {**os.environ, **{v: "1" for v in THREAD_VARIABLES}})
    raise SystemExit(main())
