"""QC reports: self-contained pages with real PNGs, outlier flags on synthetic cohorts."""

import base64
import html
import io
import re

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mixnet_bids.reports import group_report, outlier_flags, robust_z, subject_report
from mixnet_bids.reports.figures import FIG_WIDTH_IN, Scene
from mixnet_bids.reports.html import DPI
from mixnet_bids.reports.outliers import MIN_COHORT, OUTLIER_Z
from mixnet_bids.reports.subject import methods_html
from mixnet_bids.volumes import TIV_SOURCES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMG_SRC = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]* alt="([^"]+)"')


def rotation(deg_x: float, deg_z: float) -> np.ndarray:
    a, b = np.deg2rad([deg_x, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def head_phantom(folder, shape=(56, 64, 24), zooms=(2.0, 2.0, 4.0), rotate=None):
    """Ellipsoid 'head' (WM core, GM shell, CSF rim and a midline ventricle) on one grid.

    Writes reference, dseg (3-label), GM/WM/CSF probabilities (the labels blurred, so that
    classes hesitate along their boundaries), FLAIR and IR; returns their paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.eye(4)
    affine[:3, :3] = (np.eye(3) if rotate is None else rotate) @ np.diag(zooms)
    centre = (np.array(shape) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre
    mm = [(np.arange(n) - c) * z for n, c, z in zip(shape, centre, zooms)]
    x, y, z = np.meshgrid(*mm, indexing="ij")
    r = np.sqrt((x / 45) ** 2 + (y / 55) ** 2 + (z / 40) ** 2)
    dseg = np.zeros(shape, np.uint8)
    dseg[r < 1.0] = 3
    dseg[r < 0.9] = 1
    dseg[r < 0.7] = 2
    dseg[(np.abs(x) < 4) & (r < 0.45)] = 3
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 3, shape)
    images = {
        "reference": np.choose(dseg, [0.0, 60.0, 100.0, 30.0]) + noise,
        "dseg": dseg,
        **blurred_probsegs(dseg),
        "FLAIR": np.choose(dseg, [0.0, 80.0, 60.0, 10.0]) + noise,
        "IR": np.choose(dseg, [0.0, 40.0, 90.0, 5.0]) + noise,
    }
    paths = {}
    for name, data in images.items():
        paths[name] = folder / f"{name}.nii.gz"
        dtype = np.uint8 if name == "dseg" else np.float32
        nib.save(nib.Nifti1Image(data.astype(dtype), affine), str(paths[name]))
    volumes = {"GM_ml": 612.4, "WM_ml": 455.1, "CSF_ml": 210.0, "cerebellum_ml": 131.2,
               "brain_ml": 1277.5, "TIV_ml": 1500.0, "GM_fraction": 0.4083,
               "WM_fraction": 0.3034, "CSF_fraction": 0.14, "mean_uncertainty": 0.081,
               "mean_margin": 0.47, "nmi_FLAIR": 1.06}
    paths["volumes"] = folder / "volumes.tsv"
    pd.DataFrame([volumes]).to_csv(paths["volumes"], sep="\t", index=False)
    return paths


def blurred_probsegs(dseg: np.ndarray) -> dict[str, np.ndarray]:
    """GM, WM and CSF probabilities: the labels of ``dseg`` (1 GM, 2 WM, 3 CSF) blurred."""
    return {f"{t}_probseg": ndimage.gaussian_filter((dseg == label).astype(np.float32), 1.0)
            for label, t in enumerate(("GM", "WM", "CSF"), start=1)}


def write_subject(tmp_path, paths, registered=("FLAIR", "IR"), warnings=(), task="3label",
                  networks=None):
    return subject_report(
        tmp_path / "sub-01.html", title="sub-01 QC", reference=paths["reference"],
        dseg=paths["dseg"], probsegs=[paths[f"{t}_probseg"] for t in ("GM", "WM", "CSF")],
        registered={m: paths[m] for m in registered}, volumes_tsv=paths["volumes"],
        settings={"task": task, "seed": 0, "planes": ["axial", "coronal"]},
        versions={"mixnet-bids": "0.1.0", "nilearn": "0.14"}, warnings=list(warnings),
        task=task, networks=networks)


def embedded_pngs(page: str) -> list[tuple[np.ndarray, str]]:
    """Every <img>'s decoded pixels and alt text; each must be a data: PNG."""
    assert page.count("<img ") == len(IMG_SRC.findall(page))
    out = []
    for data, alt in IMG_SRC.findall(page):
        raw = base64.b64decode(data, validate=True)
        assert raw.startswith(PNG_SIGNATURE)
        out.append((mpimg.imread(io.BytesIO(raw), format="png"), alt))
    return out


def assert_self_contained(page: str):
    for needle in ("http://", "https://", 'src="//', "<script", "url("):
        assert needle not in page.lower(), needle


def test_subject_report_embeds_one_png_per_figure(tmp_path):
    paths = head_phantom(tmp_path / "in")
    warning = "FLAIR <is> oblique & was resampled"
    out = write_subject(tmp_path, paths, warnings=[warning])
    assert out == tmp_path / "sub-01.html"
    page = out.read_text(encoding="utf-8")

    images = embedded_pngs(page)
    # segmentation, hesitation, one registration check per modality
    assert len(images) == 4
    for pixels, alt in images:
        assert pixels.shape[1] == FIG_WIDTH_IN * DPI
        assert pixels.shape[0] > 300
        assert pixels[..., :3].var() > 0.001
        assert alt.strip()
    assert_self_contained(page)
    assert "FLAIR &lt;is&gt; oblique &amp; was resampled" in page   # escaped, shown
    assert 'class="warnings"' in page
    for text in ("GM_fraction", "0.4083", "612.4", "&quot;seed&quot;: 0", "nilearn",
                 "Gray matter", "<h3>IR</h3>"):
        assert text in page
    assert plt.get_fignums() == []                                # no figure left open
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "sub-01.html"]


def test_subject_report_says_which_voxels_the_tiv_holds(tmp_path):
    paths = head_phantom(tmp_path / "in")
    volumes = pd.read_csv(paths["volumes"], sep="\t")
    for source, said in (("networks", "from the networks"),
                         ("skull-stripping", "every voxel the skull stripping did not set")):
        volumes.assign(TIV_source=source).to_csv(paths["volumes"], sep="\t", index=False)
        page = write_subject(tmp_path, paths, registered=()).read_text()
        assert f"<td>Brain and TIV</td><td>{said}" in page
        assert ("the inputs were skull-stripped" in page) is (source == "skull-stripping")


def test_subject_report_oblique_anisotropic_8label_input(tmp_path):
    paths = head_phantom(tmp_path / "in", shape=(80, 80, 16), zooms=(0.96, 0.96, 3.0),
                         rotate=rotation(15, 10))
    page = write_subject(tmp_path, paths, registered=(), task="8label").read_text()
    images = embedded_pngs(page)
    assert len(images) == 2
    assert "Cortical gray matter" in page
    assert all(pixels[..., :3].var() > 0.001 for pixels, _ in images)
    assert "(oblique)" in page
    assert "Warnings: none" in page
    assert "No other modality was registered" in page


@pytest.mark.parametrize("task", ["wholebrain", "3label"])
def test_subject_report_says_which_voxels_each_class_covers(tmp_path, task):
    page = write_subject(tmp_path, head_phantom(tmp_path / "in"), registered=(), task=task,
                         networks="fine").read_text()
    assert f"{task} (from the fine networks)" in page
    gm = "Gray matter = cerebral cortex + deep gray matter (basal ganglia, thalamus)"
    if task == "wholebrain":
        assert gm + " + cerebellar cortex" in page
        assert "cerebellum: probability-weighted volume inside the TIV mask" in page
        assert "included in GM_ml and WM_ml in this convention" in page
    else:
        assert gm + "</td>" in page
        assert "+ cerebellar cortex + cerebellar white matter + brain stem" in page  # BG
        assert "background in the 3label convention" in page
    assert "more likely brain than background" in page  # how the TIV is defined
    assert "within 3 mm of them" in page


def test_display_grid_keeps_world_positions(tmp_path):
    """Oblique inputs are drawn from an axis-aligned grid: labels stay where they were."""
    paths = head_phantom(tmp_path, shape=(56, 64, 30), zooms=(2.0, 2.0, 3.0),
                         rotate=rotation(20, -30))
    dseg = nib.load(paths["dseg"])
    scene = Scene(nib.load(paths["reference"]), dseg)
    assert scene.resample
    assert np.count_nonzero(scene.affine[:3, :3] - np.diag(np.diag(scene.affine[:3, :3]))) == 0

    def centroid(img, label):
        ijk = np.argwhere(np.asanyarray(img.dataobj) == label)
        return (img.affine[:3, :3] @ ijk.T + img.affine[:3, 3:4]).mean(axis=1)

    for label in (1, 2, 3):
        assert np.allclose(centroid(scene.dseg, label), centroid(dseg, label), atol=1.5)


def test_subject_report_refuses_images_off_the_reference_grid(tmp_path):
    paths = head_phantom(tmp_path / "in")
    other = head_phantom(tmp_path / "other", shape=(50, 64, 24))
    paths["FLAIR"] = other["FLAIR"]
    with pytest.raises(ValueError, match=r"\(50, 64, 24\).*\(56, 64, 24\)"):
        write_subject(tmp_path, paths, registered=("FLAIR",))
    assert not (tmp_path / "sub-01.html").exists()


def cohort(n=10, **columns) -> pd.DataFrame:
    """``n`` similar subjects: each measure evenly spread over +-1.5 SD, in its own order.

    Evenly spread rather than random: ten random draws can have a tiny MAD by chance and
    flag a subject (see outlier_flags' false-alarm rate). ``columns`` replaces columns.
    """
    rng = np.random.default_rng(1)
    typical = {"GM_ml": (600, 15), "WM_ml": (450, 12), "CSF_ml": (200, 10),
               "brain_ml": (1250, 25), "TIV_ml": (1500, 30), "GM_fraction": (0.40, 0.01),
               "WM_fraction": (0.30, 0.01), "CSF_fraction": (0.13, 0.007),
               "mean_uncertainty": (0.08, 0.005), "mean_margin": (0.45, 0.01),
               "nmi_FLAIR": (1.06, 0.005)}
    table = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, n + 1)]})
    for name, (mean, sd) in typical.items():
        table[name] = mean + sd * rng.permutation(np.linspace(-1.5, 1.5, n))
    for name, values in columns.items():
        table[name] = values
    return table


def test_robust_z_uses_median_and_mad():
    z = robust_z(pd.Series([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert z.tolist() == pytest.approx(
        [(v - 3.0) / (1.4826 * 1.0) for v in (1.0, 2.0, 3.0, 4.0, 100.0)])
    # MAD 0: the mean absolute deviation is the spread; all equal: every z is 0
    z = robust_z(pd.Series([0.45] * 9 + [0.60]))
    assert z.iloc[-1] == pytest.approx(0.15 / (1.2533 * 0.015))
    assert robust_z(pd.Series([2.0] * 6 + [np.nan])).tolist()[:6] == [0.0] * 6


def test_homogeneous_cohort_has_no_flags():
    flags = outlier_flags(cohort())
    assert flags.empty
    assert {"participant_id", "measure", "robust_z", "reason"} <= set(flags.columns)


def test_far_gm_fraction_is_flagged():
    table = cohort()
    table.loc[6, "GM_fraction"] = 0.60   # others ~0.40
    flags = outlier_flags(table)
    assert flags["participant_id"].tolist() == ["sub-07"]
    assert flags["measure"].tolist() == ["GM_fraction"]
    assert flags["robust_z"].iloc[0] > OUTLIER_Z
    assert "GM_fraction = 0.6 is high" in flags["reason"].iloc[0]


def test_mad_zero_cohort_still_flags_the_odd_one():
    table = cohort(GM_fraction=[0.45] * 9 + [0.60])
    flags = outlier_flags(table)
    assert flags[["participant_id", "measure"]].values.tolist() == [["sub-10", "GM_fraction"]]


def test_uncertainty_is_flagged_only_when_high():
    high = cohort()
    high.loc[2, "mean_uncertainty"] = 0.30
    flags = outlier_flags(high)
    assert flags[["participant_id", "measure"]].values.tolist() == [
        ["sub-03", "mean_uncertainty"]]
    low = cohort()
    low.loc[2, "mean_uncertainty"] = 0.001
    assert outlier_flags(low).empty


def test_registration_score_is_flagged_only_when_low():
    low = cohort()
    low.loc[4, "nmi_FLAIR"] = 1.0
    assert outlier_flags(low)["measure"].tolist() == ["nmi_FLAIR"]
    high = cohort()
    high.loc[4, "nmi_FLAIR"] = 1.2
    assert outlier_flags(high).empty


def test_small_cohorts_get_no_z_scores():
    """Below MIN_COHORT a plausibly large head is not an outlier, however far it is."""
    table = cohort(n=MIN_COHORT - 1)
    table.loc[0, ["TIV_ml", "brain_ml"]] = [2050.0, 1700.0]   # robust z about +20
    assert outlier_flags(table).empty
    assert outlier_flags(cohort(n=MIN_COHORT, TIV_ml=[1500.0] * 9 + [2050.0]))[
        "measure"].tolist() == ["TIV_ml"]


def test_group_report_links_the_flagged_subject(tmp_path):
    table = cohort()
    table.insert(1, "session_id", ["ses-1"] * 5 + ["ses-2"] * 5)
    table.loc[6, "GM_fraction"] = 0.60
    links = {f"{p}_{s}": f"{p}/{p}_{s}.html"
             for p, s in zip(table["participant_id"], table["session_id"])}
    out = group_report(tmp_path / "group.html", table, task="3label", report_links=links)
    page = out.read_text(encoding="utf-8")
    flagged = page.split('id="flags"')[1].split("</section>")[0]
    assert '<a href="sub-07/sub-07_ses-2.html">sub-07_ses-2</a>' in flagged
    assert "GM_fraction = 0.6 is high" in flagged
    assert "sub-06" not in flagged
    assert 'href="sub-01/sub-01_ses-1.html"' in page             # cohort table links all
    images = embedded_pngs(page)
    assert len(images) == 3                                       # volumes, fractions, scores
    assert all(pixels[..., :3].var() > 0.001 for pixels, _ in images)
    assert_self_contained(page)
    assert plt.get_fignums() == []


def test_margin_is_flagged_only_when_low():
    low = cohort()
    low.loc[5, "mean_margin"] = 0.30
    assert outlier_flags(low)[["participant_id", "measure"]].values.tolist() == [
        ["sub-06", "mean_margin"]]
    high = cohort()
    high.loc[5, "mean_margin"] = 0.70
    assert outlier_flags(high).empty


def test_group_report_of_a_small_cohort_flags_volumes_above_the_tiv(tmp_path):
    """Five subjects: no z-scores (a large head is not an outlier), but a tissue volume
    above the TIV and a hesitating run are flagged whatever the cohort's size."""
    table = cohort(n=5)
    table.loc[1, ["TIV_ml", "brain_ml"]] = [2050.0, 1700.0]          # large, plausible
    table.loc[3, "CSF_ml"] = 1600.0                                   # > TIV 1500
    table.loc[4, "mean_margin"] = 0.38
    out = group_report(tmp_path / "group.html", table, task="3label",
                       report_links={p: f"{p}.html" for p in table["participant_id"]})
    page = out.read_text(encoding="utf-8")
    flagged = page.split('id="flags"')[1].split("</section>")[0]
    assert "3 flagged" not in flagged and "2 flagged" in flagged
    assert '<a href="sub-04.html">sub-04</a>' in flagged
    assert "CSF_ml 1600.0 mL" in flagged and "&gt; TIV" in flagged
    assert '<a href="sub-05.html">sub-05</a>' in flagged and "mean_margin 0.380" in flagged
    assert "sub-02" not in flagged
    assert f"Cohort outliers not computed: 5 rows, fewer than {MIN_COHORT}" in page
    cohort_table = page.split('id="cohort"')[1].split("</section>")[0]
    row = next(r for r in cohort_table.split("<tr>") if "sub-04.html" in r)
    assert '<td class="num flag">1600</td>' in row


def test_group_report_warns_when_the_tiv_is_defined_two_ways(tmp_path):
    table = cohort(n=5)
    table.insert(6, "TIV_source", "networks")
    page = group_report(tmp_path / "same.html", table, task="wholebrain").read_text()
    assert "TIV is not defined the same way" not in page
    assert "<td>networks</td>" in page                  # the column is in the cohort table
    table.loc[[1, 3], "TIV_source"] = "skull-stripping"
    page = group_report(tmp_path / "mixed.html", table, task="wholebrain").read_text()
    summary = page.split('id="summary"')[1].split("</section>")[0]
    assert "(TIV_source: 3 networks, 2 skull-stripping)" in summary


def test_group_report_names_every_point(tmp_path):
    """Each point of the distributions is an image-map area: its subject on hover and a
    link to its report, inside the image."""
    table = cohort(n=12)
    out = group_report(tmp_path / "group.html", table, task="3label",
                       report_links={p: f"{p}.html" for p in table["participant_id"]})
    page = out.read_text(encoding="utf-8")
    images = embedded_pngs(page)
    maps = re.findall(r'<map name="([^"]+)">(.*?)</map>', page)
    assert len(maps) == len(images) == 3
    # volumes (GM, WM, CSF, brain, TIV), fractions (3), scores (uncertainty, margin, nmi)
    for (name, areas), (pixels, _), n_measures in zip(maps, images, [5, 3, 3]):
        assert f'usemap="#{name}"' in page
        found = re.findall(r'coords="(\d+),(\d+),\d+" title="(sub-\d+) \(([^)]+)\)" '
                           r'alt="sub-\d+" href="(sub-\d+)\.html"', areas)
        assert len(found) == 12 * n_measures
        for x, y, key, _, href in found:
            assert key == href
            red, _, blue = pixels[int(y), int(x), :3]
            assert blue > red + 0.15          # the area is centred on a (blue) point


def test_group_report_refuses_links_outside_its_folder(tmp_path):
    table = cohort()
    for link in ("https://example.org/sub-01.html", "/abs/sub-01.html", "//host/x.html"):
        with pytest.raises(ValueError, match="relative path"):
            group_report(tmp_path / "group.html", table, task="3label",
                         report_links={"sub-01": link})
    assert not (tmp_path / "group.html").exists()


def test_methods_cite_brainweb_only_for_networks_trained_on_it():
    kwargs = dict(task="wholebrain", modalities=["T1w"], settings={"planes": ["axial"]},
                  versions={"mixnet-bids": "0.2.0"})
    fine = methods_html(networks="fine", **kwargs)
    assert "synthesised from BrainWeb label maps [6]" in fine
    assert fine.count("<li>") == 6 and "Aubert-Broche B" in fine
    older = methods_html(networks="3label", **dict(kwargs, task="3label"))
    assert "BrainWeb" not in older and older.count("<li>") == 5
    assert "mirrored" not in fine
    mirrored = methods_html(networks="fine", **dict(kwargs, settings={"mirror": True}))
    assert "(the axial network also on the left-right mirrored head" in mirrored
    assert "refined" not in mirrored
    refined = methods_html(networks="fine", **dict(kwargs, settings={"refine": True}))
    assert "refined by one Gaussian per tissue of the N4-corrected reference image" in refined
    assert "raised to the power 6 as the prior" in refined
    assert "skull-stripped" not in refined
    # the TIV is defined in the volumes JSON's words, which the TIV mask's sidecar uses too
    assert f"(TIV) consists of {TIV_SOURCES['networks']} (template [5]" in html.unescape(refined)
    stripped = methods_html(networks="fine", skull_stripped=True, **kwargs)
    assert "every voxel the stripping did not set to 0 was taken as GM, WM or CSF" in stripped
    assert "(TIV) consists of every voxel the skull stripping left non-zero" in stripped
    assert "template [5]" not in stripped
