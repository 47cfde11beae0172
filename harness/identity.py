"""Run identity: a fingerprint of everything that decides what a run computes and measures.

Knobs that may change between the segments of one run (how long it runs, where outputs go, how
often it checkpoints, what is profiled, multi-process plumbing) are left out, so a run can be
continued with more `run.steps` or profiled later; any other difference is a different run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

# Bindings that may differ between segments of one run (section -> field names).
VOLATILE = {
    "run": {"steps", "output_dir", "run_name", "checkpoint_every", "resume", "nan_check",
            "final_eval", "progress", "poison_step"},
    "mesh": {"coordinator_address", "num_processes", "process_id", "heartbeat_timeout_s",
             "init_timeout_s"},
    "profiler": {"enabled", "start_step", "num_steps", "all_hosts"},
}
# aot.topology, aot.step and aot.libtpu_flags describe a compile target: AOT runs only.
AOT_ONLY = {"topology", "step", "libtpu_flags"}


def _plain(value: Any) -> Any:
  """JSON-able, order-stable form of a config value (tuples as lists)."""
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in sorted(value.items())}
  return value


def identity(sections: dict[str, Any], mode: str) -> dict[str, dict[str, Any]]:
  """{section: {field: value}} of the config dataclasses, volatile fields left out."""
  out: dict[str, dict[str, Any]] = {}
  for name, cfg in sorted(sections.items()):
    fields = {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    drop = VOLATILE.get(name, set()) | (AOT_ONLY if name == "aot" and mode != "aot" else set())
    out[name] = {k: v for k, v in sorted(fields.items()) if k not in drop}
  return out


def fingerprint(ident: dict[str, dict[str, Any]]) -> str:
  """A short stable hash of an identity."""
  text = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=repr)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def differences(stored: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]],
                limit: int = 4) -> str:
  """'attention.num_chunks: 2 there, 1 here; ...' for the first `limit` differing bindings."""
  diffs = []
  for section in sorted(stored.keys() | current.keys()):
    a, b = stored.get(section, {}), current.get(section, {})
    for field in sorted(a.keys() | b.keys()):
      if a.get(field, "<unset>") != b.get(field, "<unset>"):
        diffs.append(f"{section}.{field}: {a.get(field, '<unset>')!r} there, "
                     f"{b.get(field, '<unset>')!r} here")
  more = f"; and {len(diffs) - limit} more" if len(diffs) > limit else ""
  return "; ".join(diffs[:limit]) + more
