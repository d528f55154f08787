"""The contrast probe's cases: a BrainWeb head rendered as the generalisation benchmark's
condition (d), with the CSF at other intensities than the benchmark's MPRAGE-like 250.

Each ``<work>/csf<value>/brainweb`` is a benchmark case folder (``bids``, ``truth``): run the
app on its BIDS dataset and read the GM/CSF border with ``boundary_probe.py``
(docs/results.md, "Where the boundaries sit" and after).

    python benchmarks/contrast_cases.py --brainweb ../shared/data/brainweb20 \\
        --work runs/probes/contrast --subject 05 --csf 170 330
"""

from __future__ import annotations

import argparse
from pathlib import Path

import generalisation as bench  # beside this script: its folder is on sys.path

from mixnet_bids.training import synth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--brainweb", type=Path, required=True, help="BrainWeb label maps")
    parser.add_argument("--work", type=Path, default=Path("runs/probes/contrast"))
    parser.add_argument("--subject", default="05")
    parser.add_argument("--csf", type=float, nargs="+", default=[170.0, 330.0],
                        help="CSF intensities (the render's MPRAGE-like CSF is 250)")
    args = parser.parse_args(argv)
    if not args.brainweb.is_dir():
        raise SystemExit(f"{args.brainweb}: not a folder; pass --brainweb with the team's "
                         "../shared/data/brainweb20")
    original = synth.RENDER_INTENSITIES["mprage"]
    try:
        for csf in args.csf:
            values = list(original)
            values[1] = csf                  # BrainWeb label 1: CSF
            synth.RENDER_INTENSITIES["mprage"] = tuple(values)
            case = bench.build_case("brainweb", args.subject, args.work / f"csf{csf:g}",
                                    Path("unused"), args.brainweb)
            print(f"CSF {csf:g}: {case.bids_dir}", flush=True)
    finally:
        synth.RENDER_INTENSITIES["mprage"] = original
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
