"""Run settings: one explicit object, passed to the workflow builders and dumped per run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mixnet_bids.inference.planes import PLANES
from mixnet_bids.inference.predict import DEFAULT_PLANE_WEIGHTS
from mixnet_bids.inference.weights import default_convention


@dataclass
class Settings:
    """Everything a participant run depends on."""

    bids_dir: Path
    output_dir: Path
    work_dir: Path
    participant_label: list[str] = field(default_factory=list)
    session_label: list[str] = field(default_factory=list)
    #: output convention; "": the app's default, wholebrain when fine networks are
    #: installed for ``planes`` (in ``weights_dir`` or the package), else 3label
    task: str = ""
    model_version: str = "v3"
    planes: list[str] = field(default_factory=lambda: list(PLANES))
    plane_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PLANE_WEIGHTS))
    weights_dir: Path | None = None
    device: str = "auto"
    #: the networks' arithmetic, float32 or bfloat16 (chosen per host by ``--precision``),
    #: and the record of that choice (``inference.precision.choose_precision``)
    precision: str = "float32"
    precision_check: dict = field(default_factory=dict)
    #: the networks of ``predict.MIRRORED_PLANES`` also run on the left-right mirrored head
    mirror: bool = True
    #: the tissue split refined by a Gaussian model of the image's intensities
    #: (``refinement.refine``)
    refine: bool = True
    #: in skull-stripped inputs every voxel not set to 0 is tissue, with fine networks
    #: (``conventions.stripping_rule``)
    trust_stripping: bool = True
    save_probabilities: bool = False
    output_spaces: list[str] = field(default_factory=list)
    nprocs: int = 1
    omp_nthreads: int = 1
    mem_gb: float | None = None
    bids_filter_file: Path | None = None
    skip_bids_validation: bool = False
    version: str = ""
    #: redo subjects whose derivatives exist (otherwise they are skipped)
    overwrite: bool = False
    #: progress bars for inference (off when stderr is not a terminal)
    progress: bool = False
    #: Nipype execution plugin and its arguments (e.g. SLURM with sbatch_args)
    plugin: str = "MultiProc"
    plugin_args: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.task:
            self.task = default_convention(self.planes, self.model_version, self.weights_dir)

    def to_json(self) -> str:
        def default(obj):
            return str(obj) if isinstance(obj, Path) else obj
        return json.dumps(asdict(self), indent=2, default=default) + "\n"
