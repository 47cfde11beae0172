"""The `aot` gin section: which TPU topology, which step, which LIBTPU flags."""
from __future__ import annotations

import dataclasses

import gin

from harness.aot import flags as flags_lib
from harness.aot import topology as topology_lib
from harness.suggest import did_you_mean

STEPS = ("train", "eval")


@dataclasses.dataclass(frozen=True)
class AotConfig:
  """What an AOT compile targets."""
  topology: str = "v5p:2x2x2"
  step: str = "train"
  libtpu_flags: tuple[str, ...] = ()


@gin.configurable("aot")
def aot_config(topology: str = "v5p:2x2x2", step: str = "train",
               libtpu_flags: tuple[str, ...] | list[str] = ()) -> AotConfig:
  """Validates the `aot.*` bindings (names only; libtpu is touched at compile time)."""
  topology_lib.parse_topology_name(topology)
  if step not in STEPS:
    raise ValueError(f"aot.step={step!r} is invalid; valid choices: {', '.join(map(repr, STEPS))}"
                     f"{did_you_mean(step, STEPS)}")
  return AotConfig(topology, step, tuple(flags_lib.flag_list(libtpu_flags)))
