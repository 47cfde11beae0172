"""Typed outputs: the schema of every JSON file a run writes, in the records' docstrings.

  Summary      summary.json of a train or eval run (harness.summary builds it)
  TraceReport  the overlap analysis of a profiler capture (harness.profiling.analyze)
  AotReport    aot.json of an AOT compile (harness.aot.run_aot, run.mode='aot')

Each has `from_json` (reads files of any harness version: missing keys are None, unknown keys are
kept) and `to_json` (the same keys back); `dumps` writes strict JSON.
"""
from harness.outputs.aot_report import AotReport, Topology
from harness.outputs.record import Record, coerce, dumps, read
from harness.outputs.run_summary import Attention, Devices, EvalSummary, Summary, TimeStats
from harness.outputs.trace_report import TraceReport

__all__ = ["AotReport", "Attention", "Devices", "EvalSummary", "Record", "Summary", "TimeStats",
           "Topology", "TraceReport", "coerce", "dumps", "read"]
