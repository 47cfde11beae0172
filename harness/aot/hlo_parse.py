"""Parses the text of a scheduled HLO module into computations and instructions."""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np

# Bytes per element; sub-byte types are rounded up to whole bytes by the compiler's tiling anyway.
_DTYPE_BYTES = {
    "pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "f8e4m3b11fnuz": 1,
    "f8e4m3fnuz": 1, "f8e5m2fnuz": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
    "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "token": 0,
}
_ARRAY_RE = re.compile(r"\b([a-z][a-z0-9]*)\[([0-9,]*)\]")
_INSTR_RE = re.compile(r"^\s*(ROOT\s+)?%([\w.\-]+)\s*=\s*(.*)$", re.S)
_COMP_RE = re.compile(r"^(ENTRY\s+)?%([\w.\-]+)\s.*\{\s*$")
# A computation ends at a "}" of its own, with its execution thread when it is not the main one.
_COMP_END_RE = re.compile(r'^\}(, execution_thread="\w+")?\s*$')
_CALLED_RE = re.compile(
    r"\b(calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES_RE = re.compile(r"branch_computations=\{([^}]*)\}")
_CYCLES_RE = re.compile(r'"estimated_cycles":"(\d+)"')
_TRIP_RE = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME_RE = re.compile(r'op_name="([^"]*)"')
_TARGET_RE = re.compile(r'custom_call_target="([^"]*)"')
_GROUPS_LIST_RE = re.compile(r"replica_groups=\{((?:\{[0-9,\s]*\},?\s*)*)\}")
_GROUPS_IOTA_RE = re.compile(r"replica_groups=\[([0-9,]+)\]<=\[([0-9,]+)\](?:T\(([0-9,]+)\))?")
_GROUPS_MESH_RE = re.compile(
    r"replica_groups=mesh\[([^\]]*)\](?:, device_ids=\(\[([0-9,]+)\](?:T\(([0-9,]+)\))?\))?"
    r"\s*\{([^}]*)\}")
_PAIRS_RE = re.compile(r"source_target_pairs=\{((?:\{[0-9,\s]*\},?\s*)*)\}")


@dataclasses.dataclass(frozen=True)
class Instruction:
  """One HLO instruction as printed in the module text."""
  name: str
  opcode: str
  shape: str
  operands: tuple[str, ...]
  attrs: str
  is_root: bool = False
  args: str = ""  # the raw text inside the parentheses (a constant's literal)

  @property
  def called(self) -> tuple[str, ...]:
    """Names of computations this instruction calls (fusion bodies, loop bodies, branches)."""
    names = [m.group(2) for m in _CALLED_RE.finditer(self.attrs)]
    for m in _BRANCHES_RE.finditer(self.attrs):
      names += [n.strip().lstrip("%") for n in m.group(1).split(",") if n.strip()]
    return tuple(names)

  def attr_computation(self, key: str) -> str | None:
    """The computation named by `key=%name`, if any."""
    m = re.search(rf"\b{key}=%([\w.\-]+)", self.attrs)
    return m.group(1) if m else None

  @property
  def estimated_cycles(self) -> int | None:
    m = _CYCLES_RE.search(self.attrs)
    return int(m.group(1)) if m else None

  @property
  def known_trip_count(self) -> int | None:
    m = _TRIP_RE.search(self.attrs)
    return int(m.group(1)) if m else None

  @property
  def op_name(self) -> str:
    m = _OP_NAME_RE.search(self.attrs)
    return m.group(1) if m else ""

  @property
  def custom_call_target(self) -> str:
    m = _TARGET_RE.search(self.attrs)
    return m.group(1) if m else ""

  @property
  def bytes(self) -> float:
    return shape_bytes(self.shape)

  def replica_groups(self, num_devices: int) -> list[list[int]]:
    """Replica groups (explicit, iota or mesh-axes form); one group of all devices otherwise."""
    m = _GROUPS_MESH_RE.search(self.attrs)
    groups = _mesh_groups(*m.groups()) if m else None
    if groups:
      return groups
    m = _GROUPS_IOTA_RE.search(self.attrs)
    if m:
      group_shape = [int(x) for x in m.group(1).split(",")]
      dims = [int(x) for x in m.group(2).split(",")]
      ids = np.arange(math.prod(dims)).reshape(dims)
      if m.group(3):
        ids = ids.transpose([int(x) for x in m.group(3).split(",")])
      return ids.reshape(group_shape).tolist()
    m = _GROUPS_LIST_RE.search(self.attrs) or _PAIRS_RE.search(self.attrs)
    if m:
      groups = [[int(x) for x in g.split(",") if x.strip()]
                for g in re.findall(r"\{([0-9,\s]*)\}", m.group(1))]
      groups = [g for g in groups if g]
      if groups:
        return groups
    return [list(range(num_devices))]


def _mesh_groups(axes_text: str, ids_dims: str | None, ids_perm: str | None,
                 over_text: str) -> list[list[int]] | None:
  """Groups of `mesh['a'=2,'b'=4], device_ids=([..]T(..)) {'a'}`: devices varying along the listed axes."""
  axes = re.findall(r"'([^']+)'=(\d+)", axes_text)
  over = re.findall(r"'([^']+)'", over_text)
  names, sizes = [a for a, _ in axes], [int(n) for _, n in axes]
  if not axes or not over or any(a not in names for a in over):
    return None  # sub-axis forms such as 'a':(1)2 are not modelled: one group of all devices
  if ids_dims:
    dims = [int(d) for d in ids_dims.split(",")]
    ids = np.arange(math.prod(dims)).reshape(dims)
    if ids_perm:
      ids = ids.transpose([int(p) for p in ids_perm.split(",")])
  else:
    ids = np.arange(math.prod(sizes))
  ids = ids.reshape(sizes)
  inside = [names.index(a) for a in over]
  outside = [i for i in range(len(names)) if i not in inside]
  size = math.prod(sizes[i] for i in inside)
  return ids.transpose(outside + inside).reshape(-1, size).tolist()


@dataclasses.dataclass
class Computation:
  """A named computation: its instructions in printed (for scheduled modules: execution) order."""
  name: str
  instructions: list[Instruction]
  is_entry: bool = False

  def __post_init__(self):
    self.by_name = {i.name: i for i in self.instructions}

  @property
  def root(self) -> Instruction:
    return next((i for i in self.instructions if i.is_root), self.instructions[-1])


@dataclasses.dataclass
class Module:
  computations: dict[str, Computation]
  entry: str
  num_partitions: int


def shape_bytes(shape: str) -> float:
  """Bytes of an HLO shape string; tuples count every element (layouts and tilings are ignored)."""
  total = 0.0
  for dtype, dims in _ARRAY_RE.findall(shape):
    if dtype not in _DTYPE_BYTES:
      continue
    total += _DTYPE_BYTES[dtype] * math.prod(int(d) for d in dims.split(",") if d)
  return total


def _balanced_end(text: str, start: int) -> int:
  """Index just past the bracket group opening at text[start]."""
  pairs = {"(": ")", "[": "]", "{": "}"}
  depth, quote = 0, False
  for pos in range(start, len(text)):
    ch = text[pos]
    if ch == '"' and text[pos - 1] != "\\":
      quote = not quote
    elif not quote and ch in pairs:
      depth += 1
    elif not quote and ch in pairs.values():
      depth -= 1
      if depth == 0:
        return pos + 1
  return len(text)


def parse_instruction(text: str) -> Instruction:
  """Parses one (possibly multi-line) instruction statement."""
  m = _INSTR_RE.match(text)
  if not m:
    raise ValueError(f"not an HLO instruction: {text[:80]!r}")
  is_root, name, rest = bool(m.group(1)), m.group(2), m.group(3)
  if rest.startswith("("):
    end = _balanced_end(rest, 0)
  else:
    end = rest.index(" ")
  shape, rest = rest[:end], rest[end:].lstrip()
  paren = rest.index("(")
  opcode = rest[:paren].strip()
  close = _balanced_end(rest, paren)
  operand_text, attrs = rest[paren + 1:close - 1], rest[close:]
  operands = tuple(re.findall(r"%([\w.\-]+)", operand_text))
  return Instruction(name, opcode, shape, operands, attrs, is_root, operand_text.strip())


def parse_module(text: str) -> Module:
  """Parses `compiled.as_text()` (or any HLO module text) into computations."""
  computations, entry = {}, ""
  current, statements = None, []
  for line in text.splitlines():
    if current is None:
      m = _COMP_RE.match(line)
      if m:
        current, statements = (m.group(2), bool(m.group(1))), []
      continue
    if _COMP_END_RE.match(line):
      instrs = [parse_instruction(s) for s in statements]
      computations[current[0]] = Computation(current[0], instrs, current[1])
      entry = current[0] if current[1] else entry
      current = None
    elif _INSTR_RE.match(line) and line.startswith("  "):
      statements.append(line.strip())
    elif statements:
      statements[-1] += "\n" + line
  m = re.search(r"num_partitions=(\d+)", text)
  return Module(computations, entry, int(m.group(1)) if m else 1)
