"""report.png and the same figure as a TensorBoard image."""
from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and TPU VMs have no display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
from tensorboardX import SummaryWriter  # noqa: E402

from launch.table import Group, Row  # noqa: E402

# TensorBoard shows an image at its card's width: panels stacked in one column, large type and a
# moderate pixel width keep the figure legible there without opening it at full size.
FIGSIZE = (6.4, 8.0)
DPI = 100
FONT = {"font.size": 12, "axes.titlesize": 13, "legend.fontsize": 10}
CPU_NOTE = "CPU (simulated devices): mechanics overhead, not TPU overlap"


def _step_panel(ax, groups: Sequence[Group]) -> set[int]:
  ticks = set()
  for index, group in enumerate(groups):
    measured = [r for r in group.rows.values() if r.step]
    if measured:
      xs = [r.chunks for r in measured]
      med = [r.step[0] * 1e3 for r in measured]
      err = [[(r.step[0] - r.step[1]) * 1e3 for r in measured],
             [(r.step[2] - r.step[0]) * 1e3 for r in measured]]
      ax.errorbar(xs, med, yerr=err, marker="o", capsize=4, color=f"C{index % 10}",
                  label=group.label)
      ticks.update(xs)
  return ticks


def _annotate(ax, row: Row) -> None:
  """Writes the verdict and the timed steps × repeats beside a speedup point."""
  n, repeats = row.step_counts
  ax.annotate(f"{row.verdict}\n{n} steps × {repeats} repeats", (row.chunks, row.speedup.high),
              textcoords="offset points", xytext=(0, 6), ha="center", fontsize=9)


def _gain_panel(ax, groups: Sequence[Group]) -> set[int]:
  ticks = set()
  for index, group in enumerate(groups):
    color = f"C{index % 10}"
    gains = [r for r in group.rows.values() if r.speedup]
    if gains:
      xs = [r.chunks for r in gains]
      ys = [r.speedup.ratio for r in gains]
      err = [[r.speedup.ratio - r.speedup.low for r in gains],
             [r.speedup.high - r.speedup.ratio for r in gains]]
      ax.errorbar(xs, ys, yerr=err, marker="o", capsize=4, color=color, label=group.label)
      for row in gains:
        if row.chunks != 1:
          _annotate(ax, row)
    predicted = [r for r in group.rows.values() if r.aot_gain]
    if predicted:
      xs = [r.chunks for r in predicted]
      ax.plot(xs, [r.aot_gain for r in predicted], linestyle="--", marker="x", color=color,
              label=f"{group.label} (AOT)")
      ticks.update(xs)
  ax.axhline(1.0, color="grey", linewidth=0.8)
  return ticks


def figure(groups: Sequence[Group], title: str = "") -> plt.Figure:
  """Step time over speedup against chunk count, one line per configuration."""
  with plt.rc_context(FONT):
    fig, (ax_time, ax_gain) = plt.subplots(2, 1, figsize=FIGSIZE)
    ticks = _step_panel(ax_time, groups) | _gain_panel(ax_gain, groups)
    panels = ((ax_time, "Step time (median, p10-p90)", "ms"),
              (ax_gain, "Speedup vs single-shot (>1 = faster), 95 % interval", "×"))
    for ax, heading, ylabel in panels:
      ax.set_title(heading)
      ax.set_xlabel("attention.num_chunks")
      ax.set_ylabel(ylabel)
      if ticks:
        ax.set_xticks(sorted(ticks))
      ax.grid(alpha=0.3)
      ax.margins(x=0.12)  # room for the verdicts beside the outer intervals
      if len(ax.get_legend_handles_labels()[0]) > 1:  # one line needs no legend
        ax.legend()
    ax_gain.margins(y=0.25)  # room for the verdicts above the intervals
    notes = [CPU_NOTE] if any("cpu" in g.platforms for g in groups) else []
    if title or notes:
      fig.suptitle("\n".join([title, *notes]).strip(), fontsize=12)
    fig.tight_layout()
  return fig


def write(groups: Sequence[Group], results_dir: pathlib.Path, title: str = "") -> pathlib.Path:
  """Saves report.png and logs the figure under results_dir/tensorboard."""
  fig = figure(groups, title)
  png = results_dir / "report.png"
  fig.savefig(png, dpi=DPI)
  writer = SummaryWriter(logdir=str(results_dir / "tensorboard"))
  try:
    writer.add_figure("report/step_time_and_speedup", fig, global_step=0, close=True)
  finally:
    writer.close()
  return png
