"""report.png and the same figure as a TensorBoard image."""
from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # headless: CI and TPU VMs have no display
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

from launch.table import Group  # noqa: E402


def figure(groups: Sequence[Group], title: str = "") -> plt.Figure:
  """Step time and speedup against chunk count, one line per configuration."""
  fig, (ax_time, ax_gain) = plt.subplots(1, 2, figsize=(11, 4.2))
  chunk_ticks = set()
  for index, group in enumerate(groups):
    color = f"C{index % 10}"
    measured = [r for r in group.rows.values() if r.step]
    if measured:
      xs = [r.chunks for r in measured]
      med = [r.step[0] * 1e3 for r in measured]
      err = [[(r.step[0] - r.step[1]) * 1e3 for r in measured],
             [(r.step[2] - r.step[0]) * 1e3 for r in measured]]
      ax_time.errorbar(xs, med, yerr=err, marker="o", capsize=3, color=color, label=group.label)
      chunk_ticks.update(xs)
    gains = [r for r in group.rows.values() if r.speedup]
    if gains:
      xs = [r.chunks for r in gains]
      ys = [r.speedup.ratio for r in gains]
      err = [[r.speedup.ratio - r.speedup.low for r in gains],
             [r.speedup.high - r.speedup.ratio for r in gains]]
      ax_gain.errorbar(xs, ys, yerr=err, marker="o", capsize=3, color=color, label=group.label)
    predicted = [r for r in group.rows.values() if r.aot_gain]
    if predicted:
      xs = [r.chunks for r in predicted]
      ax_gain.plot(xs, [r.aot_gain for r in predicted], linestyle="--", marker="x", color=color,
                   label=f"{group.label} (AOT)")
      chunk_ticks.update(xs)
  ax_gain.axhline(1.0, color="grey", linewidth=0.8)
  for ax, heading, ylabel in ((ax_time, "Step time (median, p10-p90)", "ms"),
                            (ax_gain, "Speedup vs single-shot (>1 = faster)", "x")):
    ax.set_title(heading)
    ax.set_xlabel("attention.num_chunks")
    ax.set_ylabel(ylabel)
    if chunk_ticks:
      ax.set_xticks(sorted(chunk_ticks))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  return fig


def write(groups: Sequence[Group], results_dir: pathlib.Path, title: str = "") -> pathlib.Path:
  """Saves report.png and logs the figure under results_dir/tensorboard."""
  from tensorboardX import SummaryWriter  # pylint: disable=import-outside-toplevel
  fig = figure(groups, title)
  png = results_dir / "report.png"
  fig.savefig(png, dpi=110)
  writer = SummaryWriter(logdir=str(results_dir / "tensorboard"))
  try:
    writer.add_figure("report/step_time_and_speedup", fig, global_step=0, close=True)
  finally:
    writer.close()
  return png
