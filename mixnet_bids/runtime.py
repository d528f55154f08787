"""What every entry point prepares before it runs a workflow: no network access, and the
ANTs tools of this environment on ``PATH``.

Called by the app, the training and cross-validation commands, the benchmarks and the
tests. It changes only environment variables, and only when called.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def prepare_runtime() -> None:
    """Set the process environment the workflows need.

    - ``NIPYPE_NO_ET=1``: Nipype's online version check off (set before Nipype is imported);
    - ``TEMPLATEFLOW_AUTOUPDATE=0``: TemplateFlow never downloads (the templates ship with
      the package, see ``mixnet_bids.templates``);
    - this environment's ``bin`` folder first on ``PATH``: the ANTs console scripts
      installed beside the Python interpreter, also when the environment is not activated.
    """
    os.environ["NIPYPE_NO_ET"] = "1"
    os.environ.setdefault("TEMPLATEFLOW_AUTOUPDATE", "0")
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
