"""`run.mode='aot'`: compile the configured train or eval step for `aot.topology` and report."""
from __future__ import annotations

import os

from harness import gin_config
from harness.api import Loaded
from harness.aot import report as report_lib
from harness.aot.compile_step import run_aot


def run_aot_mode(loaded: Loaded, out_dir: str | os.PathLike | None = None,
                 extra: dict | None = None) -> dict:
  """Compiles the step on the topology mesh of `api.load(..., abstract=True)`; writes aot.json."""
  cfgs = loaded.configs
  fn, args = loaded.abstract_step(cfgs.aot.step)
  out_dir = str(out_dir or cfgs.run_dir)
  os.makedirs(out_dir, exist_ok=True)
  report = run_aot(fn, args, topology=loaded.topology, flags=cfgs.aot.flags(cfgs.hardware),
                   out_dir=out_dir, step_kind=cfgs.aot.step, print_table=False)
  report["attention"] = {"variant": cfgs.attention.variant,
                         "num_chunks": cfgs.attention.num_chunks, "kernel": cfgs.attention.kernel,
                         "pipelined_projections": cfgs.attention.pipelined_projections}
  report["mesh"] = {k: int(v) for k, v in loaded.mesh.shape.items()}
  report.update(extra or {})
  report_lib.write_report(report, out_dir)
  with open(os.path.join(out_dir, "config.gin"), "w") as f:
    f.write(gin_config.operative_config())
  print(report_lib.format_table(report), flush=True)
  return report
