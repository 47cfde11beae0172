"""Compile a step for a TPU topology on this machine and report HBM, collectives and overlap."""
from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from typing import Any, Callable, Sequence

import jax

from harness.aot import flags as flags_lib
from harness.aot import report as report_lib
from harness.aot.analysis import analyze_hlo
from harness.aot.native_stderr import quiet_libtpu
from harness.aot.topology import Topology, get_topology
from harness.errors import UserError

_OOM_MARKERS = ("RESOURCE_EXHAUSTED", "Ran out of memory", "out of memory")
# libtpu's refusal: "... required for HLO temporaries (31.25G) exceeds available HBM (31.25G)."
_OOM_SIZES = re.compile(r"\(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)")
_GIB = 1024 ** 3


def _oom_margin(message: str) -> float | None:
  """available - required bytes from libtpu's out-of-memory message (its G are GiB); None if absent."""
  m = _OOM_SIZES.search(message)
  return (float(m.group(2)) - float(m.group(1))) * _GIB if m else None


def _device_order(abstract_args: Any, topology: Topology) -> list[Any]:
  """Devices in the executable's logical order: that of the arguments' sharding, else the slice's."""
  for leaf in jax.tree.leaves(abstract_args):
    assignment = getattr(getattr(leaf, "sharding", None), "_device_assignment", None)
    if assignment:
      return list(assignment)
  return list(topology.devices)


def _memory(compiled) -> dict[str, int]:
  stats = compiled.memory_analysis()
  names = ("argument", "output", "temp", "alias", "generated_code")
  return {n: int(getattr(stats, f"{n}_size_in_bytes", 0) or 0) for n in names}


def _compile(lowered, options: dict[str, str]):
  try:
    with quiet_libtpu():
      return lowered.compile(compiler_options=options or None)
  except Exception as e:  # pylint: disable=broad-except
    if flags_lib.is_unknown_option_error(e):
      first = str(e).strip().splitlines()[0]
      raise UserError(f"aot.libtpu_flags: libtpu rejected a flag ({first})") from e
    raise


def compile_and_analyze(step_fn: Callable, abstract_args: Sequence[Any], topology: Topology,
                        flags: Sequence[str] = ()) -> tuple[dict, str]:
  """(report without file fields, scheduled HLO text or '') for one AOT compile."""
  options = flags_lib.compiler_options(flags)
  hw = topology.hardware
  report = {"topology": {"name": topology.name, "generation": topology.generation,
                         "dims": list(topology.dims), "num_chips": topology.num_chips,
                         "num_devices": len(topology.devices)},
            "libtpu_flags": flags_lib.flag_list(flags), "flags_applied_via": "compiler_options",
            "hardware": dataclasses.asdict(hw), "hbm_capacity_bytes": hw.device_hbm_bytes,
            "hbm_limit_bytes": hw.device_hbm_limit_bytes, "hbm_margin_bytes": None,
            "fits_hbm": None, "hbm_bytes": None, "error": None}
  start = time.perf_counter()
  jitted = step_fn if hasattr(step_fn, "lower") else jax.jit(step_fn)
  try:
    compiled = _compile(jitted.lower(*abstract_args), options)
  except UserError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    if not any(m in str(e) for m in _OOM_MARKERS):
      raise
    report.update(fits_hbm=False, compile_time_s=time.perf_counter() - start,
                  hbm_margin_bytes=_oom_margin(str(e)),
                  error="does not fit in HBM: " + str(e).strip().splitlines()[0][:400])
    return report, ""
  report["compile_time_s"] = time.perf_counter() - start
  memory = _memory(compiled)
  hbm = (memory["argument"] + memory["output"] + memory["temp"] + memory["generated_code"]
         - memory["alias"])
  # libtpu refuses programs that exceed its HBM, so a compiled program fits: its verdict, not ours.
  report.update(memory=memory, hbm_bytes=hbm, fits_hbm=True,
                hbm_margin_bytes=hw.device_hbm_limit_bytes - hbm)
  text = compiled.as_text()
  coords = [tuple(d.coords) for d in _device_order(abstract_args, topology)]
  report.update(analyze_hlo(text, hw, coords, topology.dims, topology.wraparound))
  return report, text


def run_aot(step_fn: Callable, abstract_args: Sequence[Any], *, topology: str | Topology,
            flags: Sequence[str] = (), out_dir: str | None = None, step_kind: str = "train",
            print_table: bool = True, write_hlo: bool = True) -> dict:
  """Compiles `step_fn(*abstract_args)` for `topology`, writes {out_dir}/aot.json, returns the report."""
  topo = topology if isinstance(topology, Topology) else get_topology(topology)
  report, text = compile_and_analyze(step_fn, abstract_args, topo, flags)
  report["step"] = step_kind
  if out_dir:
    report_lib.write_report(report, out_dir)
    if write_hlo and text:
      with open(os.path.join(out_dir, "aot_hlo.txt"), "w") as f:
        f.write(text)
  table = report_lib.format_table(report)
  logging.info("%s", table)
  if print_table:
    print(table, flush=True)
  return report
