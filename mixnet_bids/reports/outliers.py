"""Cohort outliers by robust z-score, ``(x - median) / (1.4826 * MAD)``.

``|z| > OUTLIER_Z`` (3.5, the cut-off of Iglewicz and Hoaglin's modified z-score) flags a
subject. Volumes and fractions count both ways, ``mean_uncertainty`` only when high, the
``mean_margin`` and the registration scores ``nmi_<modality>`` only when low.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from mixnet_bids.conventions import STRUCTURES
from mixnet_bids.labels import TISSUES
from mixnet_bids.reports.html import fmt

#: Robust z-score beyond which a measure flags a subject (Iglewicz & Hoaglin, 1993).
OUTLIER_Z = 3.5
#: MAD -> standard deviation for normally distributed data.
MAD_SCALE = 1.4826
#: Mean absolute deviation -> standard deviation (sqrt(pi/2)), used where the MAD is 0.
MEAN_AD_SCALE = 1.2533
#: Smaller cohorts get no z-scores. With n subjects the MAD is a median of n deviations;
#: below 10 one or two unusual but real subjects (a large head) move it enough to flag
#: their neighbours or themselves (a cohort of 5 flagged a plausible head at z +6.3).
MIN_COHORT = 10
#: Measures flagged in both directions (present columns only).
TWO_SIDED = (*(f"{t}_ml" for t in TISSUES), *(f"{t}_fraction" for t in TISSUES),
             *(f"{s}_ml" for s in STRUCTURES), "brain_ml", "TIV_ml")
#: Measures flagged only when high (a worse segmentation).
HIGH_IS_BAD = ("mean_uncertainty",)
#: Measures flagged only when low.
LOW_IS_BAD = ("mean_margin",)
#: Prefix of registration-quality columns, flagged only when low.
LOW_IS_BAD_PREFIX = "nmi_"


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


def directions(columns: Sequence[str]) -> dict[str, str]:
    """Flagged measures present in ``columns`` -> ``"both"``, ``"high"`` or ``"low"``."""
    out = {c: "both" for c in TWO_SIDED if c in columns}
    out.update({c: "high" for c in HIGH_IS_BAD if c in columns})
    out.update({c: "low" for c in LOW_IS_BAD if c in columns})
    out.update({c: "low" for c in columns if c.startswith(LOW_IS_BAD_PREFIX)})
    return out


def report_key(participant_id: str, session_id: str | None = None) -> str:
    """``sub-01`` or ``sub-01_ses-1``: the key of a row for ``report_links``."""
    parts = [str(participant_id)]
    if session_id is not None and not pd.isna(session_id) and str(session_id):
        parts.append(str(session_id))
    return "_".join(parts)


def row_keys(table: pd.DataFrame) -> list[str]:
    sessions = table["session_id"] if "session_id" in table else [None] * len(table)
    return [report_key(p, s) for p, s in zip(table["participant_id"], sessions)]


def outlier_flags(table: pd.DataFrame) -> pd.DataFrame:
    """One row per flagged (subject, measure) of a cohort table.

    ``table`` has a ``participant_id`` column, optionally ``session_id``, and any of the
    measures in ``TWO_SIDED``, ``HIGH_IS_BAD``, ``LOW_IS_BAD`` or starting with ``nmi_``.
    The result has the columns ``participant_id``, ``session_id``, ``measure``, ``value``,
    ``median``, ``robust_z`` and ``reason`` (a sentence); it is empty (with those columns)
    when nothing is flagged or the cohort has fewer than ``MIN_COHORT`` rows.
    """
    if "participant_id" not in table:
        raise ValueError("the cohort table needs a participant_id column; it has "
                         f"{list(table.columns)}")
    columns = ["participant_id", "session_id", "measure", "value", "median", "robust_z",
               "reason"]
    rows = []
    if len(table) >= MIN_COHORT:
        for measure, direction in directions(list(table.columns)).items():
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
                    "reason": f"{measure} = {fmt(values.iloc[i])} is {side} "
                              f"(robust z {z.iloc[i]:+.1f}; cohort median {fmt(median)})",
                })
    return pd.DataFrame(rows, columns=columns)
