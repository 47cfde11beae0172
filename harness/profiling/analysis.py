"""Trace analysis: collective, compute, exposed-collective time and overlap per captured step."""
from __future__ import annotations

import collections
import glob
import os
import re
import statistics
from typing import Any

from harness.profiling import intervals
from harness.profiling.xspace import OpEvent, Trace, TraceError, op_name, read_trace

__all__ = ["TraceError", "analyze", "analyze_trace", "find_capture", "trace_scalars"]

_KIND = re.compile(r"(all-to-all|collective-permute|all-gather|reduce-scatter|all-reduce)"
                   r"(-start|-done)?")
# Scopes (or, without HLO text, op names) that mark attention work; see docs/profiling.md.
_ATTENTION = re.compile(r"attention|ulysses|splash|flash|(?<![a-z])ring(?![a-z])", re.I)
_CHUNK = re.compile(r"chunk_?(\d+)")
_HLO_LINE = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?op_name="([^"]*)"')


def collective_kind(name: str) -> tuple[str | None, str]:
  """('all-to-all', '-start') for 'all-to-all-start.3'; (None, '') for compute ops."""
  match = _KIND.search(op_name(name))
  if not match:
    return None, ""
  return match.group(1), match.group(2) or ""


def hlo_scopes(hlo_text: str) -> dict[str, str]:
  """Maps HLO instruction name → op_name metadata (the JAX named-scope path)."""
  scopes = {}
  for line in hlo_text.splitlines():
    match = _HLO_LINE.match(line)
    if match:
      scopes[match.group(1)] = match.group(2)
  return scopes


def find_capture(path: str) -> tuple[str, list[str]]:
  """Resolves a run dir, tensorboard dir, capture dir or file to (capture dir, xplane files)."""
  if not os.path.exists(path):
    raise TraceError(f"{path} does not exist")
  if os.path.isfile(path):
    return os.path.dirname(path), [path]
  for pattern in ("", "plugins/profile/*", "tensorboard/plugins/profile/*"):
    folders = sorted(glob.glob(os.path.join(path, pattern)) if pattern else [path])
    folders = [f for f in folders if glob.glob(os.path.join(f, "*.xplane.pb"))]
    if folders:
      # The newest capture by modification time; the name breaks ties.
      capture = max(folders, key=lambda f: (os.path.getmtime(f), f))
      return capture, sorted(glob.glob(os.path.join(capture, "*.xplane.pb")))
  raise TraceError(f"no .xplane.pb under {path} (expected a run, tensorboard or capture folder)")


def _pair_tail(name: str) -> str:
  """'.5' for 'all-to-all-start.5' and 'all-to-all-done.5'; '' for the unnumbered pair."""
  name = op_name(name)
  match = _KIND.search(name)
  return name[match.end():] if match else ""


def collective_spans(ops: list[OpEvent]) -> list[tuple[str, float, float, str]]:
  """(kind, start, end, op) per collective op given; an async pair spans start→done."""
  spans, open_starts = [], collections.defaultdict(list)
  for op in sorted(ops, key=lambda o: o.start_ns):
    kind, phase = collective_kind(op.name)
    if phase == "-start":
      open_starts[kind].append(op)
    elif phase == "-done" and open_starts[kind]:
      # XLA names a pair alike (all-to-all-start.5 / all-to-all-done.5); else the oldest.
      starts, tail = open_starts[kind], _pair_tail(op.name)
      start = next((s for s in starts if _pair_tail(s.name) == tail), starts[0])
      starts.remove(start)
      spans.append((kind, start.start_ns, op.end_ns, start.name))
    else:
      spans.append((kind, op.start_ns, op.end_ns, op.name))
  for kind, starts in open_starts.items():
    spans.extend((kind, s.start_ns, s.end_ns, s.name) for s in starts)
  return spans


def _chunk_breakdown(spans: list[tuple[str, float, float, str]], compute: list[OpEvent],
                     scopes: dict[str, str]) -> dict[str, dict[str, float]]:
  """Per head group (scope '…chunk<i>…'): its collectives, how exposed, its compute."""

  def chunk_of(name: str) -> str | None:
    match = _CHUNK.search(scopes.get(name, ""))
    return match.group(1) if match else None

  all_compute = [(op.start_ns, op.end_ns) for op in compute]
  chunks: dict[str, dict[str, list]] = collections.defaultdict(lambda: {"coll": [], "comp": []})
  for _, start, end, name in spans:
    if chunk_of(name) is not None:
      chunks[chunk_of(name)]["coll"].append((start, end))
  for op in compute:
    if chunk_of(op.name) is not None:
      chunks[chunk_of(op.name)]["comp"].append((op.start_ns, op.end_ns))
  return {i: {"collective_s": intervals.measure(c["coll"]) * 1e-9,
              "exposed_collective_s": intervals.measure(
                  intervals.subtract(c["coll"], all_compute)) * 1e-9,
              "compute_s": intervals.measure(c["comp"]) * 1e-9}
          for i, c in sorted(chunks.items(), key=lambda kv: int(kv[0]))}


def _device_step(ops: list[OpEvent], scopes: dict[str, str]) -> dict[str, Any]:
  """Breakdown of one device's ops of one step, in seconds."""
  compute = [op for op in ops if collective_kind(op.name)[0] is None]
  spans = collective_spans([op for op in ops if collective_kind(op.name)[0]])
  attention = [(op.start_ns, op.end_ns) for op in compute
               if _ATTENTION.search(scopes.get(op.name, op.name if not scopes else ""))]
  b = intervals.breakdown([(s, e) for _, s, e, _ in spans],
                        [(op.start_ns, op.end_ns) for op in compute], attention)
  kinds: dict[str, dict[str, float]] = {}
  for kind, start, end, _ in spans:
    entry = kinds.setdefault(kind, {"count": 0, "time_s": 0.0})
    entry["count"] += 1
    entry["time_s"] += (end - start) * 1e-9
  return {"wall_s": b.wall * 1e-9, "collective_s": b.collective * 1e-9,
          "compute_s": b.compute * 1e-9, "exposed_collective_s": b.exposed_collective * 1e-9,
          "attention_s": b.attention * 1e-9, "collectives": kinds,
          "chunks": _chunk_breakdown(spans, compute, scopes)}


def _mean_nested(tables: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
  """Field-wise mean of {name: {field: value}} tables; a missing name counts as zeros."""
  names = sorted({n for t in tables for n in t}, key=lambda n: (len(n), n))
  fields = sorted({f for t in tables for entry in t.values() for f in entry})
  return {n: {f: statistics.fmean(t.get(n, {}).get(f, 0) for t in tables) for f in fields}
          for n in names}


def _mean(rows: list[dict[str, Any]]) -> dict[str, Any]:
  """Mean of per-device (or per-step) breakdowns."""
  keys = ("wall_s", "collective_s", "compute_s", "exposed_collective_s", "attention_s")
  out: dict[str, Any] = {k: statistics.fmean(r[k] for r in rows) for k in keys}
  out["collectives"] = _mean_nested([r["collectives"] for r in rows])
  out["chunks"] = _mean_nested([r["chunks"] for r in rows])
  return _with_ratios(out)


def _with_ratios(row: dict[str, Any]) -> dict[str, Any]:
  coll, comp = row["collective_s"], row["compute_s"]
  row["overlap_fraction"] = 1.0 - row["exposed_collective_s"] / coll if coll > 0 else None
  row["attention_share"] = row["attention_s"] / comp if comp > 0 else None
  return row


def _step_executions(trace: Trace) -> tuple[str, list[tuple[Any, list[OpEvent]]], dict]:
  """The step module (most device time) and its executions as (marker or None, ops)."""
  per_module: dict[str, float] = collections.defaultdict(float)
  executions: dict[Any, list[OpEvent]] = collections.defaultdict(list)
  for op in trace.ops:
    per_module[op.module] += op.end_ns - op.start_ns
    executions[op.execution].append(op)
  step_module = max(per_module, key=per_module.get)
  steps = [ops for ops in executions.values() if ops[0].module == step_module]
  steps.sort(key=lambda ops: min(op.start_ns for op in ops))
  modules = {m: {"executions": sum(1 for e in executions.values() if e[0].module == m),
                 "time_s": t * 1e-9} for m, t in sorted(per_module.items())}
  by_run = {run: m for m in trace.markers for run in m.run_ids}
  matched = [(by_run.get(ops[0].run_id), ops) for ops in steps]
  if any(marker for marker, _ in matched):
    # Executions dispatched outside every step annotation (e.g. the step before the
    # window, still queued when the capture began) are not window steps.
    return step_module, [(m, ops) for m, ops in matched if m is not None], modules
  if len(trace.markers) == len(steps):
    return step_module, list(zip(trace.markers, steps)), modules
  return step_module, [(None, ops) for ops in steps], modules


def analyze_trace(trace: Trace, scopes: dict[str, str] | None = None) -> dict[str, Any]:
  """Per-step, per-device breakdown of a parsed trace; see analyze()."""
  scopes = scopes or {}
  step_module, steps, modules = _step_executions(trace)
  per_step = []
  for marker, ops in steps:
    by_device: dict[str, list[OpEvent]] = collections.defaultdict(list)
    for op in ops:
      by_device[op.device].append(op)
    row = _mean([_device_step(by_device[d], scopes) for d in sorted(by_device)])
    row["devices"] = len(by_device)
    if marker is not None:
      row["step"] = marker.step
      row["marker_s"] = (marker.end_ns - marker.start_ns) * 1e-9
    per_step.append(row)
  result = _mean(per_step)
  result.update(platform=trace.platform, steps=len(per_step), per_step=per_step,
                module=step_module, modules=modules, devices=per_step[0]["devices"],
                step_markers=len(trace.markers),
                left_out_executions=modules[step_module]["executions"] - len(per_step),
                attention_rule="hlo op_name scopes" if scopes else "op names")
  return result


def analyze(path: str, hlo_text: str | None = None) -> dict[str, Any]:
  """Analyses the newest capture under `path`; per-step means, per device then averaged.

  `hlo_text` (compiled.as_text() of the step) maps ops to named scopes for the attention
  share; without it, `*.hlo.txt` files in the capture folder are used, else op names.
  """
  capture, files = find_capture(path)
  if hlo_text is None:
    texts = [open(f).read() for f in sorted(glob.glob(os.path.join(capture, "*.hlo.txt")))]
    hlo_text = "\n".join(texts)
  result = analyze_trace(read_trace(files), hlo_scopes(hlo_text))
  result["capture"] = capture
  return result


def trace_scalars(result: dict[str, Any]) -> dict[str, float]:
  """TensorBoard scalars `trace/...` of an analyze() result (None values left out)."""
  keys = ("collective_s", "compute_s", "exposed_collective_s", "overlap_fraction",
          "attention_share", "wall_s")
  return {f"trace/{k}": float(result[k]) for k in keys if result.get(k) is not None}
