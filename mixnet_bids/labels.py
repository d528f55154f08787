"""Segmentation tasks: output classes and the mapping from MRBrainS18 manual labels."""

from __future__ import annotations

import numpy as np

#: Label value ignored by the loss and masked out of the evaluation.
IGNORE_INDEX = 255
#: MRBrainS labels that are ignored (9 infarction, 10 other).
IGNORED_LABELS = (9, 10)

#: Output classes per task (index = network output channel = value in the dseg).
TASK_CLASSES: dict[str, tuple[str, ...]] = {
    "3label": ("BG", "GM", "WM", "CSF"),
    "8label": ("BG", "cGM", "BG-basal", "WM", "WMH", "eCSF", "VEN", "CB", "BS"),
}
#: Long names for the dseg.tsv lookup table.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "3label": ("Background", "Gray matter", "White matter", "Cerebrospinal fluid"),
    "8label": ("Background", "Cortical gray matter", "Basal ganglia", "White matter",
               "White matter lesions", "Cerebrospinal fluid (extracerebral)", "Ventricles",
               "Cerebellum", "Brain stem"),
}
#: MRBrainS label (0-10) -> task class.
_MAPS: dict[str, dict[int, int]] = {
    "3label": {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 0, 8: 0},
    "8label": {i: i for i in range(9)},
}
#: Tissue classes whose volumes are reported (3-label names).
TISSUES: tuple[str, ...] = ("GM", "WM", "CSF")


def n_classes(task: str) -> int:
    return len(TASK_CLASSES[task])


def map_labels(labels: np.ndarray, task: str) -> np.ndarray:
    """MRBrainS labels -> task classes; 9, 10 (and unknown values) -> IGNORE_INDEX."""
    if task not in _MAPS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(_MAPS)}")
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in _MAPS[task].items():
        lut[src] = dst
    return lut[np.asarray(labels, dtype=np.uint8)]


def to_3label(classes: np.ndarray, task: str) -> np.ndarray:
    """Task classes -> 3-label classes (identity for the 3-label task)."""
    if task == "3label":
        return classes
    return map_labels(classes, "3label")
