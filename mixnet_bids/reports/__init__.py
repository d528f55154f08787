"""Quality-control reports: one HTML page per subject and one per cohort.

Each report is a single self-contained file: figures are PNGs embedded as base64 ``data:``
URIs, the style sheet is inline, there is no JavaScript, and a Content-Security-Policy in
the page forbids loading anything else, so a report opens offline and can be archived or
mailed as is.

- ``qc``: the automatic checks of one subject (what each flag means, what to do);
- ``outliers``: robust z-scores across a cohort;
- ``figures``: the subject mosaics (outlines over the bias-corrected image) and the cohort's
  distributions;
- ``html``: page, tables, escaping;
- ``subject`` and ``group``: the two pages.
"""

from mixnet_bids.reports.group import group_report
from mixnet_bids.reports.outliers import OUTLIER_Z, outlier_flags, report_key, robust_z
from mixnet_bids.reports.subject import subject_report

__all__ = ["OUTLIER_Z", "group_report", "outlier_flags", "report_key", "robust_z",
           "subject_report"]
