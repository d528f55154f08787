"""Training recipes by name.

A recipe is everything that defines how a plane's network is trained: the network (task and
version), the data, the optimiser and its schedule over the whole iteration budget, the batch
and crops, the augmentation and synthesis, and the precision. It is chosen by name
(``--recipe``) by ``mixnet-bids-train`` and ``mixnet-bids-cv`` and recorded, name and
settings, in every run's ``config.json`` and every weight sidecar. A changed recipe is a new
name (or a new ``-vN``): a checkpoint only resumes under the settings it was trained with.

The budget belongs to the recipe: one schedule (cosine) spans all of a plane's iterations,
however many restarts and machines they take.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from mixnet_bids.labels import TARGETS

#: BrainWeb anatomies never trained on: the validation curves and the generalisation
#: benchmark are scored on them.
BRAINWEB_HELD_OUT: tuple[str, ...] = ("sub-05", "sub-38", "sub-53")


@dataclass(frozen=True)
class Recipe:
    """One named training recipe (see the module docstring)."""

    name: str
    summary: str
    #: the network's classes: "3label", "8label" (MRBrainS) or "fine" (see labels.py)
    task: str = "3label"
    version: str = "v3"
    #: iterations per plane: the whole budget, spanned by one schedule
    iterations: dict[str, int] = field(
        default_factory=lambda: {"axial": 2000, "coronal": 800, "sagittal": 800})
    #: slices per batch (similar pixel counts: 8 x 128^2 vs 16 x 144 x 48)
    batch: dict[str, int] = field(
        default_factory=lambda: {"axial": 8, "coronal": 16, "sagittal": 16})
    #: "sgd" (the paper's, Nesterov) or "adamw"
    optimizer: str = "adamw"
    lr: float = 1e-3
    #: "paper": halve at fixed fractions of the budget; "cosine": cosine decay to 0
    schedule: str = "cosine"
    momentum: float = 0.99
    weight_decay: float = 1e-3
    #: "float32", "bfloat16" (autocast) or "auto": the fastest whose gradients agree with
    #: float32 on this host, checked at start (``precision.choose_precision``)
    precision: str = "bfloat16"
    #: the InitUnit's 2x2 max pooling (the paper's)
    pool: bool = True
    class_weights: tuple[float, ...] | None = None
    #: loss weight of the pixels within ``edge_width`` pixels of the brain/background
    #: border, relative to the others (``losses.brain_edge``); 1: none
    edge_weight: float = 1.0
    edge_width: int = 0
    #: the targets (one boolean per ``labels.TARGETS``) whose pixels take that edge weight;
    #: None: every pixel near the border, background included
    edge_targets: tuple[bool, ...] | None = None
    #: augmentation: extra probability of keeping T1w alone
    p_t1w_only: float = 0.25
    #: share of training samples synthesised from BrainWeb label maps (0: MRBrainS only)
    synth_fraction: float = 0.0
    #: iterations between validation scores in the learning curve (0: never)
    validate_every: int = 0
    #: 0: train to the budget. Otherwise the validation curve decides: once it has
    #: flattened (``curves.has_flattened``), the learning rate falls linearly from its value
    #: then to 0 over this many iterations (or to the budget, if that comes first) and the
    #: network is exported
    cooldown: int = 0
    #: the synthesis' settings that differ from ``synth.SynthConfig``'s defaults
    synth: dict = field(default_factory=dict)
    #: a recipe whose exported networks are the starting weights (the same plane's, and in
    #: the cross-validation the same fold's); the optimiser and the schedule start afresh.
    #: None: random initialisation
    init_from: str | None = None

    def settings(self) -> dict:
        """The recipe as JSON-ready settings (recorded in configs and sidecars)."""
        out = asdict(self)
        out["class_weights"] = list(self.class_weights) if self.class_weights else None
        return out


WHOLEBRAIN_SYNTH_V1 = Recipe(
    name="wholebrain-synth-v1",
    summary="the long run: fine classes (whole brain; MRBrainS 3 and 8 labels derived), "
            "half of the samples synthesised from BrainWeb label maps (SynthSeg-style), half "
            "real MRBrainS; AdamW 1e-3, cosine over 40000 axial / 16000 coronal and sagittal "
            "iterations; precision chosen per host; validated every 1000 iterations on "
            "held-out BrainWeb anatomies",
    task="fine", iterations={"axial": 40000, "coronal": 16000, "sagittal": 16000},
    precision="auto", synth_fraction=0.5, validate_every=1000)

#: which of ``labels.TARGETS`` are made of CSF classes (extracerebral CSF, ventricles,
#: BrainWeb CSF): the targets the CSF probes weight
_CSF_TARGETS = tuple(set(t) <= {"eCSF", "VEN"} for t in TARGETS)

WHOLEBRAIN_TUNE_V1 = replace(
    WHOLEBRAIN_SYNTH_V1, name="wholebrain-tune-v1", init_from="wholebrain-synth-v2", lr=2e-4,
    summary="probe control: wholebrain-synth-v2's networks trained on with its own data and "
            "synthesis, AdamW from 2e-4 with a cosine decay")

_RECIPES = [
    Recipe(
        name="paper",
        summary="the MixNet paper's optimiser: Nesterov SGD (momentum 0.99) at 2e-4, halved "
                "at 0.2, 0.4, 0.6, 0.75, 0.8, 0.85, 0.9, 0.95 of the budget, weight decay "
                "1e-3, float32; MRBrainS 3 labels",
        optimizer="sgd", lr=2e-4, schedule="paper", precision="float32", p_t1w_only=0.0),
    Recipe(
        name="cpu-adamw-3label",
        summary="the 3-label weights shipped until the fine networks replaced them: AdamW "
                "1e-3 with cosine decay, bfloat16 autocast, T1w kept alone 25 % more often; "
                "2000 axial / 800 coronal and sagittal iterations on MRBrainS"),
    Recipe(
        name="cpu-adamw-8label",
        summary="the 8-label weights shipped until the fine networks replaced them: as "
                "cpu-adamw-3label with the MRBrainS 8 labels",
        task="8label"),
    WHOLEBRAIN_SYNTH_V1,
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-synth-v2", cooldown=2000,
            summary="the long run with the long-run issue's stop rule: as wholebrain-synth-v1, "
                    "but once the validation curve reads flat at two validations in a row, "
                    "the learning rate falls linearly to 0 over 2000 iterations and the "
                    "network is exported; its axial network continues v1's axial state (v1 "
                    "had no stop rule, every other setting is the same)"),
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-synth-v3", init_from="wholebrain-synth-v2",
            lr=2e-4, cooldown=2000,
            iterations={"axial": 8000, "coronal": 4000, "sagittal": 4000},
            summary="wholebrain-synth-v2's networks trained on with its data and synthesis "
                    "on preprocessing version 3 (the head mask at Otsu's level of the log "
                    "deviations), withdrawn on 2026-12-07: its state in checkpoints/ is of "
                    "version-3 images, not shipped; AdamW from 2e-4, cosine over 8000 axial "
                    "/ 4000 coronal and sagittal iterations, with v2's stop rule"),
    # probes of the synthetic share (short runs with --iterations; docs/results.md)
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-real-v1", synth_fraction=0.0,
            summary="probe: as wholebrain-synth-v1 without synthetic images (MRBrainS only)"),
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-synth80-v1", synth_fraction=0.8,
            summary="probe: as wholebrain-synth-v1 with 80 % synthetic samples"),
    # probe of where each label source puts the tissue boundaries (docs/results.md)
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-synth100-v1", synth_fraction=1.0,
            summary="probe: as wholebrain-synth-v1 with synthetic samples only (BrainWeb "
                    "labels alone; MRBrainS only in the validation)"),
    # probes of the synthetic samples' labels and contrast prior (docs/results.md)
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-majority-v1", synth={"target": "majority"},
            summary="probe: as wholebrain-synth-v1, each synthetic pixel labelled with the "
                    "tissue filling most of its acquisition box (not the label at its "
                    "centre)"),
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-wideprior-v1", synth={"prior_jitter": 0.12},
            summary="probe: as wholebrain-synth-v1 with twice the jitter (s.d. 0.12) of the "
                    "synthetic tissue intensities around their plausible means"),
    replace(WHOLEBRAIN_SYNTH_V1, name="wholebrain-majority-wideprior-v1",
            synth={"target": "majority", "prior_jitter": 0.12},
            summary="probe: both of the two above"),
    # probes that continue the shipped networks with another synthesis (short runs with
    # --iterations; docs/results.md): the control, then the wider contrast priors
    WHOLEBRAIN_TUNE_V1,
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-wideprior-v1",
            synth={"prior_jitter": 0.12},
            summary="probe: as wholebrain-tune-v1 with twice the jitter (s.d. 0.12) of the "
                    "synthetic tissue intensities around their plausible means"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-random-v1", synth={"p_plausible": 0.5},
            summary="probe: as wholebrain-tune-v1 with fully random synthetic tissue "
                    "intensities in half of the channels (not 20 %)"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-majority-v1",
            synth={"target": "majority"},
            summary="probe: as wholebrain-tune-v1, each synthetic pixel labelled with the "
                    "tissue filling most of its acquisition box"),
    # probe of the brain's outer edge, where most of the CSF errors are (docs/results.md)
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-edge-v1", edge_weight=4.0, edge_width=3,
            summary="probe: as wholebrain-tune-v1 with 4 times the loss weight within 3 "
                    "pixels of the brain/background border"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-outercsf-v1", edge_weight=4.0,
            edge_width=3, edge_targets=_CSF_TARGETS,
            summary="probe: as wholebrain-tune-v1 with 4 times the loss weight of the CSF "
                    "within 3 pixels of the brain/background border (the outer CSF alone: "
                    "the GM/CSF borders keep their weight)"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-csf2-v1",
            class_weights=tuple(2.0 if csf else 1.0 for csf in _CSF_TARGETS),
            summary="probe: as wholebrain-tune-v1 with twice the loss weight of the CSF "
                    "targets (extracerebral CSF, ventricles, BrainWeb CSF)"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-widecsf-v1", synth={"p_wide_csf": 0.5},
            summary="probe: as wholebrain-tune-v1 with half of the synthetic samples' CSF "
                    "widened into the cortex by 0.5-1.5 mm (atrophy)"),
    # probes of the synthetic share once the networks have trained at the long run's
    # budget: what the synthetic half costs on MRBrainS then (continued fold networks)
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-synth20-v1", synth_fraction=0.2,
            summary="probe: as wholebrain-tune-v1 with 20 % synthetic samples (not 50 %)"),
    replace(WHOLEBRAIN_TUNE_V1, name="wholebrain-tune-real-v1", synth_fraction=0.0,
            summary="probe: as wholebrain-tune-v1 without synthetic samples (MRBrainS only)"),
]
RECIPES: dict[str, Recipe] = {r.name: r for r in _RECIPES}
#: What ``mixnet-bids-train`` trains without ``--recipe``: the shipped weights' recipe.
DEFAULT_RECIPE = "wholebrain-synth-v2"


def get_recipe(name: str) -> Recipe:
    """The recipe of that name; a ValueError lists the known ones."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of "
                         f"{', '.join(RECIPES)}") from None
