"""XSpace (.xplane.pb) → flat list of XLA op events per device, via jax.profiler.ProfileData."""
from __future__ import annotations

import bisect
import dataclasses
import os
import re
from typing import Any, Iterable

from jax.profiler import ProfileData


class TraceError(ValueError):
  """A trace that cannot be analysed: empty, truncated, or not an XLA profile."""


@dataclasses.dataclass(frozen=True)
class OpEvent:
  """One execution of one HLO instruction on one device."""
  device: str
  name: str  # HLO instruction name, e.g. "all-to-all-start.1"
  module: str  # HLO module name, e.g. "jit_train_step"
  execution: Any  # Same value for every op of one execution of `module`.
  start_ns: float
  end_ns: float
  run_id: int | None = None  # Links the execution to its host-side dispatch.


@dataclasses.dataclass(frozen=True)
class StepMarker:
  """A host-side StepTraceAnnotation and the executions dispatched inside it."""
  step: int
  start_ns: float
  end_ns: float
  run_ids: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Trace:
  """All op events of one capture (possibly several hosts)."""
  platform: str  # "cpu" | "tpu" | "gpu"
  ops: list[OpEvent]
  markers: list[StepMarker]


_DEVICE_PLANE = re.compile(r"^/device:(TPU|GPU):(\d+)$")
# Ops that only contain other ops on the same timeline (CPU thunks nest their bodies).
_CONTAINER_OP = re.compile(r"^(while|conditional|call)(\.\d+)?$")


def op_name(event_name: str) -> str:
  """'%fusion.3 = f32[8] fusion(...)' or 'fusion.3' → 'fusion.3'."""
  name = event_name.split(" = ", 1)[0].strip().lstrip("%")
  return name.split(" ", 1)[0]


def load(path: str) -> ProfileData:
  """Parses one .xplane.pb; any failure becomes a one-line TraceError."""
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise TraceError(f"cannot read {path}: {e.strerror}") from None
  if not data:
    raise TraceError(f"{path} is empty (was the capture stopped before it was written?)")
  try:
    return ProfileData.from_serialized_xspace(data)
  except Exception:  # pylint: disable=broad-except
    raise TraceError(f"{path} is not a readable XSpace (truncated or from another tool)") from None


def _drop_containers(events: list[tuple[float, float, str, dict]]) -> list:
  """Removes events that enclose another event of the same timeline (loop and call bodies)."""
  events = sorted(events, key=lambda e: (e[0], -e[1]))
  container = [False] * len(events)
  stack: list[int] = []
  for i, (start, end, _, _) in enumerate(events):
    while stack and events[stack[-1]][1] <= start:
      stack.pop()
    if stack and end <= events[stack[-1]][1]:
      container[stack[-1]] = True
    stack.append(i)
  return [e for e, is_container in zip(events, container)
          if not is_container and not _CONTAINER_OP.match(e[2])]


def _scan_plane(plane, device: str | None, host: str = "") -> tuple[list[OpEvent], list]:
  """One pass over a host (or GPU) plane: hlo_op events, step annotations, dispatches.

  CPU thunks carry hlo_op/hlo_module/run_id stats; their device is `device_ordinal`.
  """
  ops, marks, dispatches = [], [], []
  for line in plane.lines:
    by_device: dict[str, list] = {}
    for ev in line.events:
      stats = dict(ev.stats)
      if "hlo_op" in stats:
        device_name = device or f"{host}cpu:{stats.get('device_ordinal', 0)}"
        by_device.setdefault(device_name, []).append(
            (ev.start_ns, ev.end_ns, str(stats["hlo_op"]), stats))
      elif "step_num" in stats:
        marks.append((int(stats["step_num"]), ev.start_ns, ev.end_ns))
      elif "run_id" in stats and "device_ordinal" not in stats:
        # PjRt's host-side Execute event: the dispatch of one execution.
        dispatches.append((ev.start_ns, stats["run_id"]))
    for device_name, events in by_device.items():
      for start, end, name, stats in _drop_containers(events):
        module = str(stats.get("hlo_module", ""))
        run_id = stats.get("run_id")
        ops.append(OpEvent(device_name, name, module, (module, run_id), start, end, run_id))
  markers = [StepMarker(step, start, end,
                        frozenset(r for t, r in dispatches if start <= t <= end))
             for step, start, end in marks]
  return ops, markers


def _spans(line) -> list[tuple[float, float, str, int | None]]:
  if line is None:
    return []
  return [(ev.start_ns, ev.end_ns, ev.name, dict(ev.stats).get("run_id")) for ev in line.events]


def _device_ops(plane, device: str) -> list[OpEvent]:
  """TPU-style device plane: 'XLA Ops' events inside 'XLA Modules' (or 'Steps') events."""
  lines = {line.name: line for line in plane.lines}
  groups = _spans(lines.get("XLA Modules")) or _spans(lines.get("Steps"))
  events = [(ev.start_ns, ev.end_ns, op_name(ev.name), dict(ev.stats))
            for ev in lines["XLA Ops"].events]
  groups.sort(key=lambda g: g[0])
  group_starts = [g[0] for g in groups]
  ops = []
  for start, end, name, _ in _drop_containers(events):
    # The latest module event starting at or before the op; it owns the op if it encloses it.
    i = bisect.bisect_right(group_starts, start) - 1
    owner = groups[i] if i >= 0 and end <= groups[i][1] else None
    if owner is None:
      module, execution, run_id = "", ("", 0.0), None
    else:
      module, execution, run_id = op_name(owner[2]).split("(", 1)[0], owner[:3], owner[3]
    ops.append(OpEvent(device, name, module, execution, start, end, run_id))
  return ops


def read_trace(paths: Iterable[str]) -> Trace:
  """Reads the .xplane.pb files of one capture (one per host) into a Trace."""
  paths = sorted(paths)
  ops, markers, platforms = [], [], set()
  for path in paths:
    data = load(path)
    host = os.path.basename(path).split(".xplane.pb")[0] + "/" if len(paths) > 1 else ""
    for plane in data.planes:
      match = _DEVICE_PLANE.match(plane.name)
      if match and any(line.name == "XLA Ops" for line in plane.lines):
        platforms.add(match.group(1).lower())
        ops.extend(_device_ops(plane, f"{host}{match.group(1)}:{match.group(2)}"))
      elif match:
        platforms.add(match.group(1).lower())
        ops.extend(_scan_plane(plane, f"{host}{match.group(1)}:{match.group(2)}")[0])
      elif plane.name.startswith("/host:"):
        host_ops, host_markers = _scan_plane(plane, None, host)
        platforms.update(["cpu"] if host_ops else [])
        ops.extend(host_ops)
        markers.extend(host_markers)
  if not ops:
    raise TraceError(f"no XLA op events in {', '.join(paths)} (nothing ran on a device during "
                     "the capture, or the file is from another tool)")
  platform = next((p for p in ("tpu", "gpu", "cpu") if p in platforms), "cpu")
  return Trace(platform, ops, sorted(markers, key=lambda m: m.start_ns))
