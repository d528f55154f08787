"""The cohort's self-contained QC page: flagged subjects, distributions, the whole table."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from mixnet_bids.conventions import STRUCTURES
from mixnet_bids.io import atomic_write_text
from mixnet_bids.labels import TISSUES
from mixnet_bids.reports.figures import distribution_figure
from mixnet_bids.reports.html import esc, figure_html, fmt, is_number, page, relative_href, scalar
from mixnet_bids.reports.outliers import (
    HIGH_IS_BAD,
    LOW_IS_BAD,
    LOW_IS_BAD_PREFIX,
    MIN_COHORT,
    OUTLIER_Z,
    outlier_flags,
    row_keys,
)
from mixnet_bids.reports.qc import flag_lines, table_flags
from mixnet_bids.reports.subject import checks_html

LOGGER = logging.getLogger(__name__)

#: Radius (px) of a point's hover area in the distribution figures.
POINT_RADIUS_PX = 6


def _image_map(name: str, points, hrefs: Mapping[str, str]) -> str:
    """A ``<map>`` giving every plotted point its subject as a tooltip (and a link)."""
    areas = []
    for key, measure, x, y in points:
        href = hrefs.get(key)
        link = f' href="{href}"' if href else ' nohref'
        areas.append(f'<area shape="circle" coords="{x:.0f},{y:.0f},{POINT_RADIUS_PX}" '
                     f'title="{esc(key)} ({esc(measure)})" alt="{esc(key)}"{link}>')
    return f'<map name="{esc(name)}">' + "".join(areas) + "</map>"


def group_report(out_html: Path, table: pd.DataFrame, *, task: str,
                 report_links: Mapping[str, str] | None = None) -> Path:
    """Write the cohort's self-contained QC page to ``out_html`` (atomically).

    ``table`` has one row per subject (and session): ``participant_id``, optional
    ``session_id``, and the volumes columns. ``report_links`` maps ``report_key`` values
    (``sub-01`` or ``sub-01_ses-1``; a bare ``sub-01`` also serves its sessions) to subject
    reports, as paths relative to ``out_html``'s folder. The page lists each subject's
    QC flags (``qc.table_flags``, whatever the cohort's size) and robust z-score outliers
    (``outlier_flags``, from ``MIN_COHORT`` rows), shows the distributions of the volumes,
    fractions and quality scores (every point named on hover) and the whole table.
    Returns ``out_html``.
    """
    start = time.perf_counter()
    out_html = Path(out_html)
    hrefs = {key: relative_href(link) for key, link in (report_links or {}).items()}
    outliers = outlier_flags(table)
    keys = row_keys(table)

    def href_of(key: str, participant: str) -> str | None:
        return hrefs.get(key, hrefs.get(str(participant)))

    def link(key: str, participant: str) -> str:
        href = href_of(key, participant)
        return esc(key) if href is None else f'<a href="{href}">{esc(key)}</a>'

    reasons: dict[str, list[str]] = {}
    flagged: set[tuple[str, str]] = set()
    participants = dict(zip(keys, table["participant_id"]))
    for key, (_, row) in zip(keys, table.iterrows()):
        flags = table_flags(row.to_dict())
        if flags:
            reasons[key] = flag_lines(flags)
        if any(f.check == "above_tiv" for f in flags):
            flagged.update((key, c) for c in (*(f"{t}_ml" for t in TISSUES), "brain_ml",
                                              "TIV_ml") if c in row.index)
    for key, (_, flag) in zip(row_keys(outliers) if len(outliers) else [], outliers.iterrows()):
        reasons.setdefault(key, []).append(f"Cohort outlier: {flag['reason']}")
        flagged.add((key, flag["measure"]))

    too_small = len(table) < MIN_COHORT
    rule = (f"Each subject is checked on its own (volumes above the TIV, implausible "
            f"fractions or TIV, networks hesitating, weak registration). Cohort outliers: "
            f"robust z-score = (value - cohort median) / (1.4826 x MAD), flagged when "
            f"|z| > {OUTLIER_Z} for tissue volumes, fractions, brain and TIV; "
            f"{', '.join(HIGH_IS_BAD)} only when high, {', '.join(LOW_IS_BAD)} and "
            f"{LOW_IS_BAD_PREFIX}* registration scores only when low. Cohorts under "
            f"{MIN_COHORT} rows get no z-scores: their median and MAD are too unstable.")
    summary = (f"<p>{len(table)} rows ({table['participant_id'].nunique()} participants), "
               f"task {esc(task)}.</p><p>{esc(rule)}</p>")
    if too_small:
        summary += (f'<div class="ok">Cohort outliers not computed: {len(table)} rows, fewer '
                    f"than {MIN_COHORT}.</div>")
    if "TIV_source" in table and table["TIV_source"].nunique() > 1:
        counts = ", ".join(f"{n} {esc(source)}"
                           for source, n in table["TIV_source"].value_counts().items())
        summary += ('<div class="warnings">The TIV is not defined the same way for every row '
                    f"(TIV_source: {counts}): the skull-stripped inputs' TIV is their "
                    "stripping mask. Compare TIVs and fractions within one definition, or "
                    "rerun the skull-stripped ones with --ignore-stripping.</div>")

    if reasons:
        rows = "".join(
            f"<tr><td>{link(key, participants[key])}</td><td><ul>"
            + "".join(f"<li>{esc(r)}</li>" for r in lines) + "</ul></td></tr>"
            for key, lines in reasons.items())
        flagged_html = (f'<div class="flagged"><strong>{len(reasons)} flagged</strong>'
                        f"<table><tr><th>subject</th><th>reasons</th></tr>{rows}</table>"
                        "</div>")
    else:
        flagged_html = '<div class="ok">No subject flagged.</div>'

    def plotted(columns):
        return [c for c in columns if c in table
                and pd.to_numeric(table[c], errors="coerce").notna().any()]

    groups = [
        ("Tissue volumes (mL)", plotted([*(f"{t}_ml" for t in TISSUES),
                                         *(f"{s}_ml" for s in STRUCTURES), "brain_ml",
                                         "TIV_ml"])),
        ("Tissue fractions of TIV", plotted([f"{t}_fraction" for t in TISSUES])),
        ("Quality scores", plotted([c for c in table.columns if c in HIGH_IS_BAD
                                    or c in LOW_IS_BAD or c.startswith(LOW_IS_BAD_PREFIX)])),
    ]
    point_hrefs = {key: href_of(key, participants[key]) for key in keys}
    plots = []
    for i, (name, measures) in enumerate(groups):
        if not measures:
            continue
        fig, points = distribution_figure(table, measures, keys, flagged)
        map_name = f"points-{i}"
        plots.append(f"<h3>{esc(name)}</h3>\n" + figure_html(
            fig, alt=f"distributions of {', '.join(measures)} across the cohort",
            caption="Box: median and quartiles; points: subjects (hover a point for its "
                    "subject, click for its report); red: flagged.",
            image_map=map_name, css_class="plot") + _image_map(map_name, points, point_hrefs))
    plots_html = "\n".join(plots) or "<p>No volume columns.</p>"

    header = ["report", *table.columns]
    body = []
    for key, (_, row) in zip(keys, table.iterrows()):
        cells = [f"<td>{link(key, row['participant_id'])}</td>"]
        for column in table.columns:
            value = scalar(row[column])
            cls = []
            if is_number(value):
                cls.append("num")
            if (key, column) in flagged:
                cls.append("flag")
            attr = f' class="{" ".join(cls)}"' if cls else ""
            cells.append(f"<td{attr}>{esc(fmt(value))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cohort = ('<table class="cohort"><tr>'
              + "".join(f"<th>{esc(h).replace('_', '_<wbr>')}</th>" for h in header)
              + "</tr>\n" + "\n".join(body) + "</table>")

    sections = [("summary", "Summary", summary), ("flags", "Flagged subjects", flagged_html),
                ("distributions", "Distributions", plots_html), ("cohort", "Cohort", cohort),
                ("checks", "Checks", checks_html())]
    atomic_write_text(out_html, page(f"MixNet {task} cohort report", sections))
    LOGGER.debug("group report %s written in %.1f s", out_html, time.perf_counter() - start)
    return out_html
