"""Ahead-of-time TPU compiles on any machine: HBM fit, collective schedule, overlap prediction."""
from harness.aot.analysis import analyze_hlo
from harness.aot.flags import compiler_options, libtpu_init_args, parse_flags
from harness.aot.hardware import HARDWARE, ChipSpec, hardware_for
from harness.aot.compile_step import compile_and_analyze, run_aot
from harness.aot.topology import Topology, get_topology, parse_topology_name

__all__ = ["HARDWARE", "ChipSpec", "Topology", "analyze_hlo",
           "compile_and_analyze", "compiler_options", "get_topology", "hardware_for",
           "libtpu_init_args", "parse_flags", "parse_topology_name", "run_aot"]
