"""Experiments as gin: a `sweep.*` spec expanded into named harness runs."""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import itertools
import json
import pathlib
from typing import Any, Sequence

from harness import gin_config
from launch import gin_static, names

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
GIN_DIR = REPO_ROOT / "gin"
MODES = ("train", "eval", "aot")
SWEEP_PARAMS = ("name", "base_gin_files", "grid", "bindings", "repeats", "modes", "hardware",
                "abbrev")
HARDWARE_KEYS = ("name", "tpu_type", "num_slices", "gin", "bindings")


@dataclasses.dataclass(frozen=True)
class Target:
  """Where runs go: an XPK TPU type and slice count, plus gin files / bindings for it."""
  name: str = "local"
  tpu_type: str | None = None
  num_slices: int = 1
  gin_files: tuple[str, ...] = ()
  bindings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Sweep:
  """A parsed experiment file."""
  name: str
  base_gin_files: tuple[str, ...]
  grid: tuple[tuple[Any, tuple[Any, ...]], ...]
  bindings: tuple[str, ...] = ()
  repeats: int = 1
  modes: tuple[str, ...] = ("train",)
  hardware: tuple[Target, ...] = (Target(),)
  abbrev: tuple[tuple[str, str], ...] = ()


@dataclasses.dataclass(frozen=True)
class Run:
  """One `python -m harness` invocation of a sweep."""
  name: str
  mode: str
  repeat: int
  point: tuple[tuple[str, Any], ...]  # grid axis -> value, in grid order
  hardware: Target
  gin_files: tuple[str, ...]
  bindings: tuple[str, ...]  # everything but run.output_dir / run.run_name

  def fingerprint(self) -> str:
    """Identifies what the run computes, so a changed experiment is not mistaken for done."""
    blob = json.dumps([self.gin_files, self.bindings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]

  def harness_args(self, output_dir: str) -> list[str]:
    """The flags after `python -m harness` that run this and write under `output_dir`."""
    bindings = [*self.bindings, f"run.output_dir = {output_dir!r}", f"run.run_name = {self.name!r}"]
    return ([f"--gin_file={f}" for f in self.gin_files] +
            [f"--gin_bindings={b}" for b in bindings])


def _as_tuple(value: Any, what: str) -> tuple:
  if isinstance(value, str):
    return (value,)
  if not isinstance(value, (list, tuple)):
    raise ValueError(f"{what}={value!r}: expected a list")
  return tuple(value)


def _hardware(entry: Any) -> Target:
  """A `sweep.hardware` entry (a dict) as a Target."""
  if not isinstance(entry, dict) or set(entry) - set(HARDWARE_KEYS):
    raise ValueError(f"sweep.hardware entry {entry!r}: expected a dict with keys from "
                     f"{', '.join(HARDWARE_KEYS)}")
  name = names.sanitize(str(entry.get("name") or entry.get("tpu_type") or "local"))
  return Target(name=name, tpu_type=entry.get("tpu_type"),
                  num_slices=int(entry.get("num_slices", 1)),
                  gin_files=_as_tuple(entry.get("gin", ()), "sweep.hardware gin"),
                  bindings=_as_tuple(entry.get("bindings", ()), "sweep.hardware bindings"))


def load_experiment(path: str) -> Sweep:
  """Reads an experiments/*.gin file; one-line ValueError for any mistake."""
  file = gin_static.find_file(path, [REPO_ROOT, REPO_ROOT / "experiments"])
  if file is None:
    raise ValueError(f"--experiment={path}: no such file")
  raw = gin_static.read_bindings(file, [REPO_ROOT, GIN_DIR])
  spec: dict[str, Any] = {}
  for key, value in raw.items():
    selector, _, param = key.rpartition(".")
    if selector != "sweep" or param not in SWEEP_PARAMS:
      raise ValueError(f"{path}: unknown binding '{key}'; an experiment sets only "
                       f"sweep.{{{','.join(SWEEP_PARAMS)}}}")
    spec[param] = value
  grid = spec.get("grid") or {}
  if not isinstance(grid, dict) or not grid:
    raise ValueError(f"{path}: sweep.grid is empty; give at least one axis, "
                     "e.g. {'attention.num_chunks': [1, 2]}")
  for axis, values in grid.items():
    if not isinstance(values, (list, tuple)) or not values:
      raise ValueError(f"{path}: sweep.grid[{axis!r}] must be a non-empty list of values")
  modes = _as_tuple(spec.get("modes", ("train",)), "sweep.modes")
  for mode in modes:
    if mode not in MODES:
      raise ValueError(f"sweep.modes: {mode!r} is not one of {', '.join(MODES)}")
  entries = spec.get("hardware", [{}])
  entries = [entries] if isinstance(entries, dict) else entries
  hardware = tuple(_hardware(h) for h in entries) or (Target(),)
  name = names.sanitize(str(spec.get("name", file.stem)))
  if not name[:1].isalpha():
    raise ValueError(f"sweep.name={spec.get('name', file.stem)!r}: must start with a letter")
  repeats = spec.get("repeats", 1)
  if not isinstance(repeats, int) or repeats < 1:
    raise ValueError(f"sweep.repeats={repeats!r}: must be an integer >= 1")
  return Sweep(
      name=name,
      base_gin_files=_as_tuple(spec.get("base_gin_files", ()), "sweep.base_gin_files"),
      grid=tuple((k, tuple(v)) for k, v in grid.items()),
      bindings=_as_tuple(spec.get("bindings", ()), "sweep.bindings"),
      repeats=repeats, modes=modes, hardware=hardware,
      abbrev=tuple(dict(spec.get("abbrev", {})).items()))


def _render(axis: str, value: Any) -> tuple[list[str], list[str]]:
  """(gin files, bindings) that set one grid axis at one value.

  A dict value is a bundle set together, e.g. {'name': '720p', 'video.height': 720,
  'video.width': 1280}; its optional 'gin_file' adds files. The axis 'gin_file' adds a file.
  """
  if axis == "gin_file":
    return [str(value)], []
  if isinstance(value, dict):
    files = list(_as_tuple(value.get("gin_file", ()), f"sweep.grid[{axis!r}] gin_file"))
    return files, [f"{k} = {v!r}" for k, v in value.items() if k not in ("name", "gin_file")]
  if "." not in axis:
    raise ValueError(f"sweep.grid[{axis!r}]: an axis is a binding like 'attention.num_chunks', "
                     "'gin_file', or any label whose values are dicts of bindings")
  return [], [f"{axis} = {value!r}"]


def point_value(value: Any) -> Any:
  """How a grid value is recorded and grouped: a bundle by its name."""
  if isinstance(value, dict) and "name" in value:
    return value["name"]
  return value


def _tokens(axis: str, value: Any, abbrev: dict[str, str]) -> list[str]:
  if isinstance(value, dict):
    if "name" in value:
      return [names.sanitize(str(value["name"]))]
    return [names.axis_token(k, v, abbrev) for k, v in value.items()]
  return [names.axis_token(axis, value, abbrev)]


def _run_name(sweep: Sweep, point, mode: str, hw: Target, repeat: int) -> str:
  abbrev = dict(sweep.abbrev)
  parts = [sweep.name]
  for axis, value in point:
    parts += _tokens(axis, value, abbrev)
  # Train and eval share a name only when the sweep has just one of them; aot is always marked.
  if mode == "aot" or len([m for m in sweep.modes if m != "aot"]) > 1:
    parts.append(mode)
  if len(sweep.hardware) > 1:
    parts.append(hw.name)
  if sweep.repeats > 1 and mode != "aot":
    parts.append(f"r{repeat}")
  return names.join(parts)


def expand(sweep: Sweep, modes: Sequence[str] | None = None) -> list[Run]:
  """Every (hardware, grid point, mode, repeat) as a Run; `modes` overrides sweep.modes."""
  runs, seen = [], {}
  axes = [axis for axis, _ in sweep.grid]
  for hw in sweep.hardware:
    for values in itertools.product(*(vals for _, vals in sweep.grid)):
      point = tuple(zip(axes, values))
      gin_files, bindings = [*sweep.base_gin_files, *hw.gin_files], [*hw.bindings, *sweep.bindings]
      for axis, value in point:
        files, binds = _render(axis, value)
        gin_files += files
        bindings += binds
      for mode in (modes or sweep.modes):
        # AOT is deterministic, so it runs once whatever sweep.repeats says.
        for repeat in range(1 if mode == "aot" else sweep.repeats):
          name = _run_name(sweep, point, mode, hw, repeat)
          names.check(name)
          if name in seen:
            raise ValueError(f"runs {seen[name]} and {_describe(point)} both get the name "
                             f"'{name}'; "
                             "set sweep.abbrev to tell them apart")
          seen[name] = _describe(point)
          runs.append(Run(name=name, mode=mode, repeat=repeat, point=point, hardware=hw,
                          gin_files=tuple(gin_files),
                          bindings=(*bindings, f"run.mode = {mode!r}")))
  return runs


def _describe(point) -> str:
  return ", ".join(f"{axis}={point_value(value)}" for axis, value in point)


def select(runs: list[Run], only: str | None) -> list[Run]:
  """Runs whose name matches any comma-separated glob in `only` (a bare word matches inside)."""
  if not only:
    return runs
  patterns = [p if any(c in p for c in "*?[") else f"*{p}*" for p in only.split(",") if p]
  chosen = [r for r in runs if any(fnmatch.fnmatchcase(r.name, p) for p in patterns)]
  if not chosen:
    raise ValueError(f"--only={only}: matches none of the {len(runs)} runs "
                     f"(e.g. {', '.join(r.name for r in runs[:3])})")
  return chosen


def check_bindings(runs: Sequence[Run]) -> None:
  """Asks the harness whether every run's gin files and bindings exist; one line if not."""
  checked = set()
  for run in runs:
    if (run.gin_files, run.bindings) in checked:
      continue
    checked.add((run.gin_files, run.bindings))
    try:
      gin_config.check_bindings(list(run.gin_files),
                                [*run.bindings, f"run.run_name = {run.name!r}"])
    except ValueError as err:
      raise ValueError(f"run {run.name}: {str(err).splitlines()[0]}") from None
