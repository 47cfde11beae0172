"""What kind of work an HLO instruction does, and how many bytes a layout op moves.

Kinds: `attention` (Pallas attention kernels such as splash, fused attention custom calls),
`matmul` (dots and convolutions, alone or in a fusion), `layout` (copies, transposes, reshapes,
slices, dynamic-(update-)slices, concatenates, pads — alone or fusions of nothing else: ops that only
move data), `other` (elementwise, reductions, broadcasts, everything else).

Bytes a layout op moves (roofline-independent): what it reads plus what it writes. A slice or
dynamic-slice reads only the slice; a dynamic-update-slice writes in place, so it reads and writes
only its update. In a fusion, a parameter consumed only by slices is read as those slices.
"""
from __future__ import annotations

import functools

from harness.aot.hlo_parse import Computation, Instruction, Module

KINDS = ("attention", "matmul", "layout", "other")
LAYOUT_OPCODES = frozenset({"copy", "transpose", "reshape", "slice", "dynamic-slice",
                            "dynamic-update-slice", "concatenate", "pad", "reverse"})
_MATMUL_OPCODES = frozenset({"dot", "convolution", "ragged-dot"})
_DATA_FREE = frozenset({"parameter", "constant", "bitcast", "tuple", "get-tuple-element"})
_SLICES = frozenset({"slice", "dynamic-slice"})
_ATTENTION_NAMES = ("splash", "flash", "attention", "mha", "mqa", "fmha")


def is_attention_name(name: str) -> bool:
  """Kernel names that denote attention (splash_mha_fwd, flash_attention, cudnn fmha, ...)."""
  name = name.lower()
  return any(k in name for k in _ATTENTION_NAMES)


class OpKinds:
  """Classifies a module's instructions; fusion bodies are read once."""

  def __init__(self, module: Module):
    self.module = module

  def kind(self, instr: Instruction) -> str:
    if instr.opcode == "custom-call":
      attention = is_attention_name(instr.op_name or instr.name) or is_attention_name(
          instr.custom_call_target)
      return "attention" if attention else "other"
    if instr.opcode in _MATMUL_OPCODES:
      return "matmul"
    if instr.opcode in LAYOUT_OPCODES:
      return "layout"
    if instr.opcode == "fusion":
      return self._fusion_kind(instr.attr_computation("calls") or "")
    return "other"

  @functools.lru_cache(maxsize=None)
  def _opcodes(self, comp_name: str) -> frozenset[str]:
    """Opcodes of a fused computation, nested fusions included."""
    comp = self.module.computations.get(comp_name)
    opcodes = set()
    for instr in (comp.instructions if comp else ()):
      opcodes.add(instr.opcode)
      if instr.opcode == "fusion":
        opcodes |= self._opcodes(instr.attr_computation("calls") or "")
    return frozenset(opcodes)

  @functools.lru_cache(maxsize=None)
  def _fusion_kind(self, comp_name: str) -> str:
    opcodes = self._opcodes(comp_name)
    if opcodes & _MATMUL_OPCODES:
      return "matmul"
    if opcodes <= (LAYOUT_OPCODES | _DATA_FREE | {"fusion"}) and opcodes & LAYOUT_OPCODES:
      return "layout"
    return "other"

  def moved_bytes(self, instr: Instruction, comp: Computation) -> float:
    """Bytes read + written by a layout op (see module docstring)."""
    if instr.opcode == "fusion":
      return self._fusion_bytes(instr.attr_computation("calls") or "")
    return _op_bytes(instr, comp)

  @functools.lru_cache(maxsize=None)
  def _fusion_bytes(self, comp_name: str) -> float:
    comp = self.module.computations.get(comp_name)
    if comp is None:
      return 0.0
    users: dict[str, list[Instruction]] = {}
    for instr in comp.instructions:
      for operand in instr.operands:
        users.setdefault(operand, []).append(instr)
    read = 0.0
    for param in (i for i in comp.instructions if i.opcode == "parameter"):
      uses = users.get(param.name, [])
      # Read whole unless every use only slices it or updates it in place (as their operand 0).
      whole = not uses or any(
          u.operands[0] != param.name or u.opcode not in _SLICES | {"dynamic-update-slice"}
          for u in uses)
      sliced = sum(u.bytes for u in uses if u.opcode in _SLICES)
      read += param.bytes if whole else min(param.bytes, sliced)
    root = comp.root
    outputs = [comp.by_name[o] for o in root.operands if o in comp.by_name] \
        if root.opcode == "tuple" else [root]
    written = sum(_written_bytes(out, comp) for out in outputs)
    return read + written


def _written_bytes(instr: Instruction, comp: Computation) -> float:
  if instr.opcode == "dynamic-update-slice" and len(instr.operands) > 1:
    update = comp.by_name.get(instr.operands[1])
    return update.bytes if update else instr.bytes
  return instr.bytes


def _op_bytes(instr: Instruction, comp: Computation) -> float:
  """Bytes read + written by one unfused layout op."""
  if instr.opcode == "dynamic-update-slice":
    return 2 * _written_bytes(instr, comp)
  if instr.opcode in _SLICES:
    return 2 * instr.bytes
  sizes = [comp.by_name[o].bytes for o in instr.operands if o in comp.by_name]
  return (sum(sizes) if sizes else instr.bytes) + instr.bytes
