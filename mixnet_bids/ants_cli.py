"""Console entry points for the ANTs programs compiled into the antspyx wheel.

Debian has no ANTs package, but antspyx ships ANTs (2.5.x) as the extension module
``ants.lib``, whose functions take an argv list exactly like the command-line programs.
These entry points load only that extension module -- not ``ants/__init__``, which costs
seconds -- so that Nipype's own ANTs interfaces (``N4BiasFieldCorrection``,
``antsRegistration``, ``antsApplyTransforms``) run unchanged.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys
from types import ModuleType

PROGRAMS = ("N4BiasFieldCorrection", "antsRegistration", "antsApplyTransforms",
            "antsAffineInitializer", "CreateJacobianDeterminantImage")


def load_ants_lib() -> ModuleType:
    """Load ``ants.lib`` from the installed antspyx wheel without importing ``ants``."""
    package = importlib.util.find_spec("ants")
    if package is None or package.origin is None:
        raise RuntimeError("antspyx is not installed: run `pip install antspyx`")
    found = glob.glob(os.path.join(os.path.dirname(package.origin), "lib.*.so"))
    if not found:
        raise RuntimeError(f"no ants.lib extension module next to {package.origin}")
    spec = importlib.util.spec_from_file_location("ants.lib", found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(program: str) -> int:
    return int(getattr(load_ants_lib(), program)(sys.argv[1:]) or 0)


def n4() -> int:
    return _run("N4BiasFieldCorrection")


def registration() -> int:
    return _run("antsRegistration")


def apply_transforms() -> int:
    return _run("antsApplyTransforms")


def affine_initializer() -> int:
    return _run("antsAffineInitializer")


def jacobian() -> int:
    return _run("CreateJacobianDeterminantImage")
