"""Seconds for one HLO instruction: compute from the compiler's cycles or FLOPs, collectives from bytes.

Compute: `estimated_cycles` in an instruction's backend_config / clock. Pallas kernels
(`tpu_custom_call`, e.g. splash attention) carry no cycles: attention kernels are costed as
max(FLOPs / peak, bytes moved / HBM bandwidth) with FLOPs = f * B*H * Sq * Sk * D, where f counts the
matmuls a kernel does, 2 FLOPs a multiply-add each: forward 4 (QK^T, PV), dq 6 (QK^T, dO V^T, dS K),
dkv 8 (QK^T, dO V^T, P^T dO, dS^T Q), fused backward 10; peak is scaled by an attention efficiency
(calibration.py: its range bounds the prediction). Any other instruction without cycles is
costed as memory bound: (operand + result bytes) / HBM bandwidth.

Communication (per device, B = bytes of the collective's input on one device, n = devices in the
group, link = one ICI link's bandwidth in one direction, L = links a chip has inside the group's
bounding box of chips (1 per axis of size 2, 2 per longer axis), C = links crossing the bisection of
the box's longest axis (doubled with wrap-around links), all-to-all traffic scaled by devices a chip):
  all-to-all          max((n-1)/n * B / (L*link),  n*B/4 / (C*link))   injection vs bisection bound
  all-gather          (n-1) * B / (L*link)                               every device receives (n-1)*B
  reduce-scatter      (n-1)/n * B / (L*link)
  all-reduce          2 * (n-1)/n * B / (L*link)                         reduce-scatter + all-gather
  collective-permute  B / link                                           one neighbour link
plus the hardware's fixed latency per collective; link is the published bandwidth times an ICI
efficiency (1 unless bounding). A group inside one chip (v4's two TensorCores) moves its bytes at HBM
bandwidth.
"""
from __future__ import annotations

import math
from typing import Sequence

from harness.aot.hardware import ChipSpec
from harness.aot.hlo_parse import Computation, Instruction, shape_bytes

COLLECTIVES = ("all-to-all", "ragged-all-to-all", "all-gather", "reduce-scatter", "all-reduce",
               "collective-permute", "collective-broadcast")
_FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
         "partition-id", "replica-id", "opt-barrier", "add-dependency", "copy-start", "copy-done",
         "domain", "iota", "async-update", "send", "send-done", "recv", "recv-done"}
_FREE_TARGETS = {"AllocateBuffer", "Sharding", "SPMDFullToShardShape", "SPMDShardToFullShape",
                 "MoveToHost", "MoveToDevice"}


def collective_kind(opcode: str) -> str | None:
  """'all-to-all-start' -> 'all-to-all'; non-collectives -> None."""
  base = opcode[:-len("-start")] if opcode.endswith("-start") else opcode
  return base if base in COLLECTIVES else None


def operand_bytes(instr: Instruction, comp: Computation) -> float:
  """Bytes of an instruction's operands, looked up in its computation; its result size if unknown."""
  sizes = [comp.by_name[o].bytes for o in instr.operands if o in comp.by_name]
  return sum(sizes) if sizes else instr.bytes


def _attention_flops_factor(op_name: str) -> int | None:
  name = op_name.lower()
  if not any(k in name for k in ("splash", "flash", "attention", "mha", "mqa")):
    return None
  if "dkv" in name:
    return 10 if "dq" in name.replace("dkv", "") else 8
  if "dq" in name or "bwd" in name:
    return 6
  return 4


def custom_call_seconds(instr: Instruction, comp: Computation, hw: ChipSpec,
                        attention_efficiency: float = 1.0) -> tuple[float, str]:
  """A Pallas kernel's time: attention FLOPs / (peak x efficiency) or memory time, the longer."""
  io_bytes = operand_bytes(instr, comp) + instr.bytes
  memory_s = io_bytes / hw.device_hbm_bandwidth
  factor = _attention_flops_factor(instr.op_name or instr.name)
  # q, k, v are the first floating-point operands of rank >= 2 (splash passes int8 block masks
  # first; a single head comes as [S, D]).
  arrays = [_float_dims(comp.by_name[o].shape) for o in instr.operands if o in comp.by_name]
  arrays = [d for d in arrays if d is not None and len(d) >= 2]
  if factor is None or len(arrays) < 2:
    return memory_s, "bytes"
  q, k = arrays[0], arrays[1]
  head_dim = min(q[-2:])
  flops = factor * math.prod(q) * (math.prod(k[-2:]) / head_dim)
  return max(flops / (hw.device_peak_flops * attention_efficiency), memory_s), "flops"


def _float_dims(shape: str) -> tuple[int, ...] | None:
  """Dimensions of a floating-point array shape; None for tuples and integer arrays."""
  if shape.startswith("(") or "[" not in shape or shape[0] not in "fb":
    return None
  inside = shape[shape.index("[") + 1:shape.index("]")]
  return tuple(int(d) for d in inside.split(",") if d)


def compute_seconds(instr: Instruction, comp: Computation, hw: ChipSpec,
                    attention_efficiency: float = 1.0) -> tuple[float, str]:
  """(seconds, source) of a non-collective, non-control-flow instruction on one device."""
  cycles = instr.estimated_cycles
  if cycles is not None:
    return cycles / hw.clock_hz, "estimated_cycles"
  if instr.opcode in _FREE or instr.opcode.endswith("-done"):
    return 0.0, "free"
  if instr.opcode == "custom-call":
    if instr.custom_call_target in _FREE_TARGETS:
      return 0.0, "free"
    if instr.custom_call_target == "tpu_custom_call":
      return custom_call_seconds(instr, comp, hw, attention_efficiency)
  if instr.opcode == "dynamic-update-slice" and len(instr.operands) > 1:
    update = comp.by_name.get(instr.operands[1])
    moved = 2 * (update.bytes if update else instr.bytes)
  elif instr.opcode == "dynamic-slice":
    moved = 2 * instr.bytes
  else:
    moved = operand_bytes(instr, comp) + instr.bytes
  return moved / hw.device_hbm_bandwidth, "bytes"


def _group_box(coords: Sequence[Sequence[int]]) -> tuple[int, ...]:
  """Distinct chip positions per axis of a group (its bounding box in chips)."""
  return tuple(len({c[a] for c in coords}) for a in range(len(coords[0])))


def collective_seconds(kind: str, bytes_in: float, coords: Sequence[Sequence[int]],
                       dims: Sequence[int], wraparound: Sequence[bool], hw: ChipSpec,
                       ici_efficiency: float = 1.0) -> float:
  """Modelled time of one collective over devices at `coords` in a slice of chip grid `dims`.

  `ici_efficiency` scales the published link bandwidth (calibration.ICI_EFFICIENCY).
  """
  n = len(coords)
  if n <= 1 or bytes_in <= 0:
    return 0.0
  chips = len({tuple(c) for c in coords})
  if chips == 1:
    return hw.collective_latency_s + bytes_in / hw.device_hbm_bandwidth
  box = _group_box(coords)
  # Wrap links close a ring only when the group spans the whole (wrapped) slice dimension.
  wrap = [w and size == full for w, size, full in zip(wraparound, box, dims)]
  links = sum(2 if size > 2 else 1 for size in box if size > 1)
  per_chip = n / chips
  link = hw.link_bandwidth * ici_efficiency
  if kind in ("all-to-all", "ragged-all-to-all"):
    longest = max(range(len(box)), key=lambda a: box[a])
    cut = (chips / box[longest]) * (2 if wrap[longest] else 1)
    seconds = max(per_chip * (n - 1) / n * bytes_in / (links * link), n * bytes_in / 4 / (cut * link))
  elif kind == "all-gather":
    seconds = per_chip * (n - 1) * bytes_in / (links * link)
  elif kind == "reduce-scatter":
    seconds = per_chip * (n - 1) / n * bytes_in / (links * link)
  elif kind == "all-reduce":
    seconds = per_chip * 2 * (n - 1) / n * bytes_in / (links * link)
  else:
    seconds = bytes_in / link
  return hw.collective_latency_s + seconds


__all__ = ["COLLECTIVES", "collective_kind", "collective_seconds", "compute_seconds",
           "operand_bytes", "shape_bytes"]
