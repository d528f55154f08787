"""The QC reports in a real headless browser: they load offline, whole, from one file.

Needs Debian's chromium (``apt-get install -y chromium``) and Playwright for Python
(``pip install playwright``); Playwright's own browser download is never used.
"""

import io
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mixnet_bids.reports import group_report, subject_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
VIEWPORT = {"width": 1300, "height": 900}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.is_file(),
                       reason=f"{CHROMIUM} not found: apt-get install -y chromium"),
]
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="Playwright not installed: pip install playwright")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                             args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


def phantom(folder: Path) -> dict[str, Path]:
    """A small oblique, anisotropic 'head' (3-label dseg) with its QC inputs."""
    shape, zooms = (64, 64, 20), (1.8, 1.8, 4.0)
    angle = np.deg2rad(12)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)],
                               [0, np.sin(angle), np.cos(angle)]]) @ np.diag(zooms)
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    x, y, z = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * d for n, d in zip(shape, zooms)],
                          indexing="ij")
    r = np.sqrt((x / 45) ** 2 + (y / 52) ** 2 + (z / 36) ** 2)
    dseg = np.select([r < 0.7, r < 0.9, r < 1.0], [2, 1, 3], 0).astype(np.uint8)
    noise = np.random.default_rng(0).normal(0, 3, shape)
    images = {"reference": np.choose(dseg, [0.0, 60.0, 100.0, 30.0]) + noise, "dseg": dseg,
              **{f"{t}_probseg": ndimage.gaussian_filter((dseg == label).astype(np.float32), 1.0)
                 for label, t in enumerate(("GM", "WM", "CSF"), start=1)},
              "FLAIR": np.choose(dseg, [0.0, 80.0, 60.0, 10.0]) + noise,
              "template": r < 1.02}
    folder.mkdir(parents=True)
    paths = {}
    for name, data in images.items():
        paths[name] = folder / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(data.astype(np.uint8 if name in ("dseg", "template")
                                             else np.float32),
                                 affine), str(paths[name]))
    paths["volumes"] = folder / "volumes.tsv"
    pd.DataFrame([{"GM_ml": 610.0, "WM_ml": 450.0, "CSF_ml": 200.0, "TIV_ml": 1500.0,
                   "GM_fraction": 0.41, "mean_uncertainty": 0.08, "mean_margin": 0.45}]).to_csv(
        paths["volumes"], sep="\t", index=False)
    return paths


def open_offline(browser, page_file: Path, screenshot: Path) -> list[dict]:
    """Load ``page_file``, check it asked for nothing else, screenshot it; its images."""
    page = browser.new_page(viewport=VIEWPORT)
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    url = page_file.as_uri()
    response = page.goto(url, wait_until="load")
    assert response is not None and response.ok
    images = page.evaluate("() => Array.from(document.images, img => ({src: img.src.slice(0, "
                           "22), complete: img.complete, width: img.naturalWidth, "
                           "alt: img.alt}))")
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    assert [r for r in requests if r != url and not r.startswith("data:")] == []
    assert errors == []   # a Content-Security-Policy refusal would show here
    return images


def assert_screenshot(path: Path, min_height: int):
    raw = path.read_bytes()
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = mpimg.imread(io.BytesIO(raw), format="png")
    assert pixels.shape[1] == VIEWPORT["width"]
    assert pixels.shape[0] >= min_height
    assert pixels[..., :3].var() > 0.01


def test_subject_report_renders_offline(browser, tmp_path):
    paths = phantom(tmp_path / "in")
    out = subject_report(
        tmp_path / "sub-01.html", title="sub-01", reference=paths["reference"],
        dseg=paths["dseg"], probsegs=[paths[f"{t}_probseg"] for t in ("GM", "WM", "CSF")],
        registered={"FLAIR": paths["FLAIR"]}, volumes_tsv=paths["volumes"],
        settings={"task": "3label"}, versions={"mixnet-bids": "0.1.0"},
        warnings=["FLAIR resampled"], task="3label", template_mask=paths["template"],
        command_line="mixnet-bids bids out participant")
    shutil.rmtree(tmp_path / "in")   # the page must need nothing but itself
    images = open_offline(browser, out, tmp_path / "subject.png")
    assert len(images) == 4   # segmentation, template, hesitation, FLAIR
    for image in images:
        assert image["src"] == "data:image/png;base64,"
        assert image["complete"] and image["width"] > 0 and image["alt"]
    assert_screenshot(tmp_path / "subject.png", min_height=2000)


def test_group_report_renders_offline(browser, tmp_path):
    """A wide whole-brain cohort table fits the page, and every plotted point is an
    image-map area over an image drawn at its natural size (so the areas sit on the
    points) whose title names its subject."""
    n = 12
    spread = np.linspace(-1, 1, n)
    table = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(1, n + 1)],
                          "session_id": ["ses-baseline"] * n,
                          "GM_ml": 600 + 10 * spread, "WM_ml": 450 - 8 * spread,
                          "CSF_ml": 200 + 5 * spread[::-1], "cerebellum_ml": 130 + 3 * spread,
                          "brainstem_ml": 25 + spread, "brain_ml": 1250 + 7 * spread,
                          "TIV_ml": 1500 + 20 * spread,
                          "mean_uncertainty": 0.55 + 0.004 * spread,
                          "mean_margin": 0.45 + 0.004 * spread,
                          "nmi_IR": 1.04 + 0.002 * spread, "nmi_FLAIR": 1.05 + 0.002 * spread})
    for tissue in ("GM", "WM", "CSF"):
        table.insert(9, f"{tissue}_fraction", table[f"{tissue}_ml"] / table["TIV_ml"])
    table.loc[3, "GM_fraction"] = 0.6
    out = group_report(tmp_path / "group.html", table, task="wholebrain",
                       report_links={p: f"{p}.html" for p in table["participant_id"]})
    images = open_offline(browser, out, tmp_path / "group.png")
    assert len(images) == 3
    assert all(image["complete"] and image["width"] > 0 for image in images)
    assert_screenshot(tmp_path / "group.png", min_height=VIEWPORT["height"])

    page = browser.new_page(viewport=VIEWPORT)
    page.goto(out.as_uri(), wait_until="load")
    layout = page.evaluate("""() => {
        const table = document.querySelector('table.cohort');
        const cells = Array.from(table.querySelectorAll('th, td'));
        return {
          table: table.getBoundingClientRect().right,
          page: document.documentElement.clientWidth,
          overflowing: cells.filter(c => c.scrollWidth > c.clientWidth + 1).map(c => c.textContent),
          images: Array.from(document.querySelectorAll('img[usemap]'), img => ({
            shown: img.clientWidth, natural: img.naturalWidth,
            areas: document.querySelector(`map[name="${img.useMap.slice(1)}"]`).areas.length})),
          titles: Array.from(document.querySelectorAll('area'), a => a.title),
        };
    }""")
    page.close()
    assert layout["table"] <= layout["page"]
    assert layout["overflowing"] == []
    assert [i["areas"] for i in layout["images"]] == [12 * 7, 12 * 3, 12 * 4]
    assert all(i["shown"] == i["natural"] for i in layout["images"])
    assert {t.split(" ")[0] for t in layout["titles"]} == {
        f"{p}_ses-baseline" for p in table["participant_id"]}
