"""Markdown tables of a cross-validation run (``mixnet-bids-cv --report``).

Reads ``<out>/cv_<task>_<version>.tsv`` (one row per held-out subject, modality subset and
label, written by :mod:`mixnet_bids.training.crossval`) and the metadata of each fold's
weight files (iterations, wall time), and renders what ``docs/results.md`` shows: per-subject
rows with all of a subject's modalities, the mean against the project's floors and the
paper's Table 2, the mean per modality subset, and the compute used.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from mixnet_bids.evaluation.markdown import table as markdown_table

#: Minimum mean Dice of the fused 3-label model, all modalities present (the floors below
#: the paper that the project set for its cross-validation).
FLOORS: dict[str, float] = {"GM": 0.83, "WM": 0.87, "CSF": 0.83}

#: How a table's classes are named in its heading, when its networks were trained on others.
SCORED_AS: dict[str, str] = {
    "3label": "the MRBrainS 3 labels", "8label": "the MRBrainS 8 labels",
    "wholebrain": "the whole-brain tissues; MRBrainS' cerebellum and brainstem unscored, as "
                  "it does not split them into GM and WM"}
#: Names of the networks' tasks in those headings.
NETWORKS: dict[str, str] = {"fine": "ten-class", "8label": "8-label", "3label": "3-label"}

#: Chen et al. 2018, Table 2: leave-one-subject-out Dice, 3-label, all modalities.
PAPER_TABLE2: dict[str, dict[str, float]] = {
    "v1": {"GM": 0.8524, "WM": 0.9000, "CSF": 0.8599},
    "v2": {"GM": 0.8500, "WM": 0.8966, "CSF": 0.8609},
    "v3": {"GM": 0.8557, "WM": 0.9049, "CSF": 0.8609},
}


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if pd.isna(value) else f"{value:.{digits}f}"


def loadmarkdown_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"subject": str, "modalities": str,
                                               "all_modalities": str})


def fold_budget(folds_dir: Path) -> pd.DataFrame:
    """Iterations and training wall time per fold and plane, from the weight metadata."""
    rows = []
    for meta in sorted(folds_dir.glob("*/*/mixnet_*.json")):
        info = json.loads(meta.read_text())
        rows.append({"subject": meta.parent.parent.name, "plane": info["plane"],
                     "iterations": info["iterations"], "seconds": info["wall_time_s"]})
    return pd.DataFrame(rows, columns=["subject", "plane", "iterations", "seconds"])


def subject_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Dice, HD95 and VS per subject (with all of its modalities) and label, wide."""
    full = table[table["modalities"] == table["all_modalities"]]
    return full.pivot_table(index=["subject", "all_modalities"], columns="label",
                            values=["dice", "hd95_mm", "vs"], sort=False)


def _metric_cells(values: pd.Series, labels: list[str]) -> list[str]:
    """Dice, HD95 (mm, 2 decimals) and VS of each label from one wide row."""
    return [_fmt(values[(metric, label)], 2 if metric == "hd95_mm" else 3)
            for metric in ("dice", "hd95_mm", "vs") for label in labels]


def version_markdown(table: pd.DataFrame, version: str, budget: pd.DataFrame,
                     networks: str = "", task: str = "3label") -> str:
    """One version's tables of ``task``'s classes; the floors and the paper's Table 2 only
    for the MRBrainS 3 labels. ``networks``: the task the networks were trained on, when not
    the table's."""
    parts = [f"### MixNet{version}"
             + (f" ({NETWORKS[networks]} networks, scored in {SCORED_AS[task]})"
                if networks else "")]
    labels = list(table.sort_values("index", kind="stable")["label"].drop_duplicates())
    three_label = task == "3label" and labels == list(FLOORS)
    wide = subject_rows(table)
    header = ["held-out subject", "inputs"] + [f"{label} {metric}" for metric in
                                               ("Dice", "HD95 mm", "VS") for label in labels]
    rows = [[subject, modalities.replace("+", " + ")] + _metric_cells(values, labels)
            for (subject, modalities), values in wide.iterrows()]
    three = wide[[m.count("+") == 2 for _, m in wide.index]]
    for name, chosen in (("all three modalities", three), ("all subjects", wide)):
        if len(chosen):
            rows.append([f"**mean, {name}** (n={len(chosen)})", ""]
                        + _metric_cells(chosen.mean(), labels))
    parts.append(markdown_table(header, rows))

    if len(three) and three_label:
        dice = three["dice"].mean()
        verdict = ", ".join(
            f"{label} {dice[label]:.3f} {'>=' if dice[label] >= floor else '<'} {floor}"
            for label, floor in FLOORS.items())
        line = f"Floors (mean Dice, all three modalities): {verdict}."
        if version in PAPER_TABLE2:
            line += (f" Paper's Table 2 for MixNet{version}: "
                     + " / ".join(f"{PAPER_TABLE2[version][label]:.4f}" for label in labels)
                     + ".")
        parts.append(line)

    subsets = (table.groupby(["modalities", "label"], sort=False)
               .agg(dice=("dice", "mean"), n=("subject", "nunique")).reset_index())
    subset_rows = []
    for modalities, group in subsets.groupby("modalities", sort=False):
        by_label = group.set_index("label")
        subset_rows.append([modalities.replace("+", " + "), int(by_label["n"].iloc[0])]
                           + [_fmt(by_label.loc[label, "dice"]) for label in labels])
    parts.append("Mean Dice per input subset (each held-out subject scored with every "
                 "subset of the modalities it has):")
    parts.append(markdown_table(["inputs", "subjects", *labels], subset_rows))

    if len(budget):
        done = budget[budget["subject"].isin(set(table["subject"]))]
        iterations = done.groupby("plane")["iterations"].max().to_dict()
        per_fold = done.groupby("subject")["seconds"].sum()
        parts.append(
            f"Compute: {len(per_fold)} fold{'s' * (len(per_fold) != 1)}; iterations per plane "
            + ", ".join(f"{plane} {its}" for plane, its in sorted(iterations.items()))
            + f"; training {per_fold.sum() / 3600:.1f} h in all, each plane's own time "
            f"summed (planes trained at once in parallel processes count each; "
            f"{per_fold.median() / 60:.0f} min median per fold).")
    return "\n\n".join(parts)


def cv_markdown(out: Path, task: str = "3label") -> str:
    """Markdown for every version found in ``out`` (empty string when there is none)."""
    sections = []
    for path in sorted(Path(out).glob(f"cv_{task}_*.tsv")):
        version = path.stem.rsplit("_", 1)[-1]
        table = loadmarkdown_table(path)
        # the folds' networks: of this task, else ten-class (any convention), else 8-label
        # (scored in the 3 tissues)
        trained = next((t for t in (task, "fine", "8label")
                        if (Path(out) / f"{t}_{version}").is_dir()), task)
        sections.append(version_markdown(table, version,
                                         fold_budget(Path(out) / f"{trained}_{version}"),
                                         "" if trained == task else trained, task))
    return "\n\n".join(sections)
