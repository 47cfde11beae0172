"""Profiling: capture window, XSpace reading, interval arithmetic, trace analysis and its CLI.

window (ProfilerWindow) → capture folders; xspace reads their .xplane.pb into op events;
intervals measures one device timeline; analysis breaks a capture down per step; table prints it.
"""
from harness.profiling.analysis import (analyze, analyze_trace, collective_kind, collective_spans,
                                        find_capture, hlo_scopes, trace_scalars)
from harness.profiling.table import format_table
from harness.profiling.window import ProfilerWindow
from harness.profiling.xspace import OpEvent, StepMarker, Trace, TraceError, read_trace

__all__ = ["OpEvent", "ProfilerWindow", "StepMarker", "Trace", "TraceError", "analyze",
           "analyze_trace", "collective_kind", "collective_spans", "find_capture", "format_table",
           "hlo_scopes", "read_trace", "trace_scalars"]
