"""Segmentation tasks: output classes, the mapping from manual labels, and the fine classes.

The ``fine`` networks output ten classes that refine both training label sets: MRBrainS18
(cerebellum and brainstem as whole structures, basal ganglia, lesions and ventricles apart)
and BrainWeb (cerebellar cortex as GM, cerebellar and brainstem white matter as WM, CSF in one
label). A manual label is a *target*: the set of fine classes it covers. The loss of a target
is the negative log of the summed probability of its fine classes (``CoarseLabelLoss`` in
``mixnet_bids.training.losses``), so a BrainWeb "GM" voxel is right whether the network calls it
cortex, deep GM or cerebellar cortex. Every output convention is a grouping of the fine
classes (``CONVENTIONS``): the whole-brain tissues, the MRBrainS 3 labels and its 8 labels.
"""

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
    "fine": ("BG", "cGM", "dGM", "WM", "WMH", "eCSF", "VEN", "cbGM", "cbWM", "BS"),
}
#: Long names for the dseg.tsv lookup table.
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "3label": ("Background", "Gray matter", "White matter", "Cerebrospinal fluid"),
    "8label": ("Background", "Cortical gray matter", "Basal ganglia", "White matter",
               "White matter lesions", "Cerebrospinal fluid (extracerebral)", "Ventricles",
               "Cerebellum", "Brain stem"),
    "fine": ("Background", "Cerebral cortex", "Deep gray matter (basal ganglia, thalamus)",
             "Cerebral white matter", "White matter lesions", "Extracerebral CSF",
             "Ventricles", "Cerebellar cortex", "Cerebellar white matter", "Brain stem"),
}
#: MRBrainS label (0-10) -> class of a scored convention (the networks' tasks, and the
#: whole-brain tissues: MRBrainS does not split its cerebellum (7) and brainstem (8) into GM
#: and WM, so those voxels are not scored there).
_MAPS: dict[str, dict[int, int]] = {
    "3label": {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3, 7: 0, 8: 0},
    "8label": {i: i for i in range(9)},
    "wholebrain": {0: 0, 1: 1, 2: 1, 3: 2, 4: 2, 5: 3, 6: 3},
}
#: Tissue classes whose volumes are reported (3-label names).
TISSUES: tuple[str, ...] = ("GM", "WM", "CSF")
#: Classes of each convention that can be scored against MRBrainS labels (index = dseg
#: value); the whole-brain tissues have the 3-label classes' names and values.
SCORED_CLASSES: dict[str, tuple[str, ...]] = {
    "3label": TASK_CLASSES["3label"], "8label": TASK_CLASSES["8label"],
    "wholebrain": TASK_CLASSES["3label"]}

#: Output conventions: each class of the convention (index = dseg value) is a set of fine
#: classes. ``wholebrain``: GM, WM and CSF in the cerebrum, cerebellum and brainstem (as FAST,
#: SPM, Atropos and SynthSeg); ``3label`` / ``8label``: the MRBrainS challenge's classes
#: (cerebellum and brainstem background in ``3label``).
CONVENTIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "wholebrain": (("BG",), ("cGM", "dGM", "cbGM"), ("WM", "WMH", "cbWM", "BS"),
                   ("eCSF", "VEN")),
    "3label": (("BG", "cbGM", "cbWM", "BS"), ("cGM", "dGM"), ("WM", "WMH"), ("eCSF", "VEN")),
    "8label": (("BG",), ("cGM",), ("dGM",), ("WM",), ("WMH",), ("eCSF",), ("VEN",),
               ("cbGM", "cbWM"), ("BS",)),
}

#: Training targets of the fine networks (index = target code): the fine classes each covers.
#: Codes 0-9 are the fine classes themselves; 10-13 are the coarser labels of the sources.
TARGETS: tuple[tuple[str, ...], ...] = (
    *((c,) for c in TASK_CLASSES["fine"]),
    ("cbGM", "cbWM"),                  # 10 MRBrainS cerebellum
    ("eCSF", "VEN"),                   # 11 BrainWeb CSF
    ("cGM", "dGM", "cbGM"),            # 12 BrainWeb GM
    ("WM", "WMH", "cbWM", "BS"),       # 13 BrainWeb WM
)
#: Raw label -> target code, per label source (unlisted values are ignored).
_SOURCE_TARGETS: dict[str, dict[int, int]] = {
    # MRBrainS18: 7 cerebellum, 8 brainstem; 9 infarction and 10 other are ignored
    "mrbrains": {0: 0, 1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 10, 8: 9},
    # BrainWeb: 1 CSF, 2 GM, 3 WM; air and every non-brain tissue (4-11) background
    "brainweb": {0: 0, 1: 11, 2: 12, 3: 13, **{k: 0 for k in range(4, 12)}},
}


def _lut(mapping: dict[int, int]) -> np.ndarray:
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


def target_codes(labels: np.ndarray, source: str) -> np.ndarray:
    """Raw manual labels of ``source`` (``mrbrains`` or ``brainweb``) -> target codes
    (indices of ``TARGETS``); unknown and ignored values -> IGNORE_INDEX."""
    if source not in _SOURCE_TARGETS:
        raise ValueError(f"unknown label source {source!r}; choose one of "
                         f"{sorted(_SOURCE_TARGETS)}")
    return _lut(_SOURCE_TARGETS[source])[np.asarray(labels, dtype=np.uint8)]


def target_membership() -> np.ndarray:
    """``(len(TARGETS), n_fine)`` boolean matrix: which fine classes each target covers."""
    fine = TASK_CLASSES["fine"]
    return np.array([[c in target for c in fine] for target in TARGETS])


def convention_matrix(convention: str) -> np.ndarray:
    """``(n_fine, n_classes)`` 0/1 matrix summing fine probabilities into ``convention``."""
    fine = TASK_CLASSES["fine"]
    groups = CONVENTIONS[convention]
    return np.array([[f in g for g in groups] for f in fine], dtype=np.float32)


def to_convention(probs: np.ndarray, convention: str) -> np.ndarray:
    """Fine class probabilities ``(..., 10)`` -> ``convention``'s ``(..., n)``."""
    return probs @ convention_matrix(convention)


def n_classes(task: str) -> int:
    return len(TASK_CLASSES[task])


def map_labels(labels: np.ndarray, task: str) -> np.ndarray:
    """MRBrainS labels -> classes of ``task`` (``SCORED_CLASSES``); 9, 10 (and unknown
    values; for ``wholebrain`` also 7 and 8) -> IGNORE_INDEX."""
    if task not in _MAPS:
        raise ValueError(f"unknown task {task!r}; choose one of {sorted(_MAPS)}")
    return _lut(_MAPS[task])[np.asarray(labels, dtype=np.uint8)]


def to_3label(classes: np.ndarray, task: str) -> np.ndarray:
    """Task classes -> 3-label classes (identity for the 3-label task)."""
    if task == "3label":
        return classes
    return map_labels(classes, "3label")
