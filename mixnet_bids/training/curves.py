"""Learning curves of a training run: loss and validation Dice against the iterations.

    python -m mixnet_bids.training.curves checkpoints/<recipe> docs/curves

reads every ``log.tsv`` below the run folder and writes one PNG per network (the training
loss, smoothed, and each tissue's validation Dice), named after the network's folder, and
prints each network's validation gain over the last quarter of its iterations (each end
smoothed over ``SMOOTHING`` validations): a network is trained until every tissue gains
less than ``FLAT_GAIN`` there.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

TISSUE_COLOURS = {"GM": "tab:green", "WM": "tab:blue", "CSF": "tab:orange"}
#: A curve has flattened when no tissue's validation Dice gained this much over the last
#: ``RECENT`` of the iterations, each end the mean of ``SMOOTHING`` validations: single
#: validations of the long run swung by up to 0.37 (CSF; 0.19 after 10,000 iterations) from
#: one to the next, dozens of times ``FLAT_GAIN``.
FLAT_GAIN = 0.005
RECENT = 0.25
SMOOTHING = 3
#: A run stops climbing (``has_flattened``) when the last this many validations each read
#: flat, so that one lucky or unlucky validation does not end it.
FLAT_READINGS = 2


def validation_gain(log: pd.DataFrame) -> tuple[int, int, dict[str, float]] | None:
    """``(from, to, {tissue: gain})``: each tissue's mean validation Dice over the last
    ``SMOOTHING`` validations (ending at iteration ``to``, none at or before ``from``) minus
    its mean over the last ``SMOOTHING`` validations at or before ``1 - RECENT`` of ``to``
    (ending at ``from``); None before there are validations on both sides."""
    columns = [f"val_{t}" for t in TISSUE_COLOURS]
    points = log.dropna(subset=columns, how="all")  # a tissue absent from validation: NaN
    if len(points) < 2:
        return None
    end = int(points["iteration"].iloc[-1])
    earlier = points[points["iteration"] <= (1 - RECENT) * end]
    if earlier.empty:
        return None
    before = earlier.tail(SMOOTHING)
    after = points[points["iteration"] > before["iteration"].iloc[-1]].tail(SMOOTHING)
    return (int(before["iteration"].iloc[-1]), end,
            {t: float(after[f"val_{t}"].mean() - before[f"val_{t}"].mean())
             for t in TISSUE_COLOURS})


def has_flattened(log: pd.DataFrame) -> bool:
    """Whether the curve read flat (every tissue gained less than ``FLAT_GAIN``) at each of
    the last ``FLAT_READINGS`` validations of ``log``."""
    rows = log.dropna(subset=[f"val_{t}" for t in TISSUE_COLOURS], how="all").index
    if len(rows) < FLAT_READINGS:
        return False
    gains = [validation_gain(log.loc[:row]) for row in rows[-FLAT_READINGS:]]
    return all(g is not None and _is_flat(g[2]) for g in gains)


def _is_flat(gains: dict[str, float]) -> bool:
    """Every tissue with a validation score gained less than ``FLAT_GAIN``."""
    scored = [g for g in gains.values() if not math.isnan(g)]
    return bool(scored) and max(scored) < FLAT_GAIN


def describe_gain(log: pd.DataFrame) -> str:
    """One line: the recent validation gain and whether the curve has flattened."""
    gain = validation_gain(log)
    if gain is None:
        return "validation gain: too few validations yet"
    start, end, gains = gain
    verdict = ("flat: every tissue gained less than" if _is_flat(gains)
               else "still climbing: a tissue gained at least")
    return (f"validation gain {start} -> {end} (means of {SMOOTHING} validations): "
            + ", ".join(f"{t} {g:+.3f}" for t, g in gains.items())
            + f" ({verdict} {FLAT_GAIN})")


def plot_curve(log_file: Path, out_file: Path, title: str) -> Path:
    """One network's curve: loss (left axis) and validation Dice (right axis)."""
    log = pd.read_csv(log_file, sep="\t")
    fig, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    loss_axis.plot(log["iteration"], log["loss"], color="0.75", lw=0.8, label="loss")
    window = max(1, len(log) // 30)
    loss_axis.plot(log["iteration"], log["loss"].rolling(window, min_periods=1).mean(),
                   color="0.2", lw=1.2, label=f"loss (mean of {window})")
    loss_axis.set_xlabel("iteration")
    loss_axis.set_ylabel("training loss")
    loss_axis.set_yscale("log")
    dice_axis = loss_axis.twinx()
    for tissue, colour in TISSUE_COLOURS.items():
        column = log.get(f"val_{tissue}")
        if column is not None and column.notna().any():
            points = log[column.notna()]
            dice_axis.plot(points["iteration"], points[f"val_{tissue}"], "o-", ms=3,
                           color=colour, label=f"validation Dice {tissue}")
    dice_axis.set_ylabel("validation Dice")
    handles = [h for axis in (loss_axis, dice_axis) for h in axis.get_legend_handles_labels()[0]]
    loss_axis.legend(handles, [h.get_label() for h in handles], fontsize=7, loc="lower left")
    loss_axis.set_title(f"{title}\n{describe_gain(log)}", fontsize=8)
    fig.tight_layout()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file)
    plt.close(fig)
    return out_file


def plot_run(run_dir: Path, out_dir: Path) -> list[Path]:
    """Every network's curve below ``run_dir`` -> ``out_dir/<run>_<network>.png``."""
    run_dir = Path(run_dir)
    written = []
    for log_file in sorted(run_dir.rglob("log.tsv")):
        network = "_".join(log_file.parent.relative_to(run_dir).parts)
        title = f"{run_dir.name}: {network}"
        written.append(plot_curve(log_file, Path(out_dir) / f"{run_dir.name}_{network}.png",
                                  title))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("run_dir", type=Path, help="a run folder, e.g. checkpoints/<recipe>")
    parser.add_argument("out_dir", type=Path, help="where the PNG files go, e.g. docs/curves")
    args = parser.parse_args(argv)
    written = plot_run(args.run_dir, args.out_dir)
    if not written:
        parser.exit(1, f"no log.tsv below {args.run_dir}: nothing trained there yet\n")
    for path in written:
        print(path)
    for log_file in sorted(Path(args.run_dir).rglob("log.tsv")):
        network = log_file.parent.relative_to(args.run_dir)
        log = pd.read_csv(log_file, sep="\t")
        print(f"{network}: {describe_gain(log)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
