"""Experiment files → named runs: names, determinism, and one-line errors."""
import re
import shlex

import pytest

from launch import bench
from launch import names, sweep

WORKLOAD_RE = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")


def _experiment(tmp_path, body: str, name: str = "exp.gin") -> str:
  path = tmp_path / name
  path.write_text(body)
  return str(path)


def _load(tmp_path, body: str) -> sweep.Sweep:
  return sweep.load_experiment(_experiment(tmp_path, body))


BASIC = """
CHUNKS = [1, 2, 4]
sweep.name = 'Quick CPU'
sweep.base_gin_files = ['models/tiny.gin']
sweep.grid = {'attention.num_chunks': %CHUNKS, 'mesh.context': [4, 8]}
sweep.bindings = ['run.steps = 3']
sweep.repeats = 2
"""


def test_names_are_readable_valid_and_in_grid_order(tmp_path):
  runs = sweep.expand(_load(tmp_path, BASIC))
  assert [r.name for r in runs[:4]] == [
      "quick-cpu-c1-cp4-r0", "quick-cpu-c1-cp4-r1", "quick-cpu-c1-cp8-r0", "quick-cpu-c1-cp8-r1"]
  assert len(runs) == 12 and len({r.name for r in runs}) == 12
  assert all(WORKLOAD_RE.fullmatch(r.name) and len(r.name) <= 40 for r in runs)


def test_expansion_is_deterministic(tmp_path):
  first = sweep.expand(_load(tmp_path, BASIC))
  second = sweep.expand(_load(tmp_path, BASIC))
  assert first == second
  assert [r.fingerprint() for r in first] == [r.fingerprint() for r in second]


def test_bindings_and_harness_args(tmp_path):
  run = sweep.expand(_load(tmp_path, BASIC))[-1]
  assert run.gin_files == ("models/tiny.gin",)
  assert run.bindings == ("run.steps = 3", "attention.num_chunks = 4", "mesh.context = 8",
                          "run.mode = 'train'")
  assert run.harness_args("out") == [
      "--gin_file=models/tiny.gin", "--gin_bindings=run.steps = 3",
      "--gin_bindings=attention.num_chunks = 4", "--gin_bindings=mesh.context = 8",
      "--gin_bindings=run.mode = 'train'", "--gin_bindings=run.output_dir = 'out'",
      "--gin_bindings=run.run_name = 'quick-cpu-c4-cp8-r1'"]


def test_bundles_modes_and_hardware_in_names(tmp_path):
  spec = _load(tmp_path, """
sweep.name = 'tp'
sweep.grid = {'attention.num_chunks': [1, 5],
              'res': [{'name': '720p', 'gin_file': 'video/720p.gin'},
                      {'video.height': 64, 'video.width': 128}]}
sweep.modes = ['train', 'eval', 'aot']
sweep.repeats = 2
sweep.hardware = [{'name': 'v5p16', 'tpu_type': 'v5p-16', 'gin': 'hardware/a.gin'},
                  {'tpu_type': 'v5p-32', 'num_slices': 2}]
""")
  runs = sweep.expand(spec)
  by_name = {r.name: r for r in runs}
  assert list(by_name)[:5] == ["tp-c1-720p-train-v5p16-r0", "tp-c1-720p-train-v5p16-r1",
                               "tp-c1-720p-eval-v5p16-r0", "tp-c1-720p-eval-v5p16-r1",
                               "tp-c1-720p-aot-v5p16"]
  assert "tp-c5-h64-w128-aot-v5p-32" in by_name
  run = by_name["tp-c5-h64-w128-aot-v5p-32"]
  assert run.hardware.num_slices == 2 and run.mode == "aot"
  assert run.bindings[-3:] == ("video.height = 64", "video.width = 128", "run.mode = 'aot'")
  assert by_name["tp-c1-720p-aot-v5p16"].gin_files == ("hardware/a.gin", "video/720p.gin")
  assert len(runs) == 2 * 2 * 2 * (2 + 2 + 1)


def test_aot_expansion_runs_each_point_once(tmp_path):
  runs = sweep.expand(_load(tmp_path, BASIC), modes=("aot",))
  assert [r.name for r in runs[:2]] == ["quick-cpu-c1-cp4-aot", "quick-cpu-c1-cp8-aot"]
  assert len(runs) == 6


def test_values_with_quotes_and_newlines_render_as_one_line_literals(tmp_path):
  spec = _load(tmp_path, r"""
sweep.grid = {'run.note': ["it's \"x\"; $(rm -rf ~)\nnext"]}
sweep.abbrev = {'run.note': 'n'}
""")
  (run,) = sweep.expand(spec)
  assert run.bindings[0] == "run.note = 'it\\'s \"x\"; $(rm -rf ~)\\nnext'"
  assert run.name == "exp-n-it-s-x-rm-rf-next"


def test_select_only(tmp_path):
  runs = sweep.expand(_load(tmp_path, BASIC))
  assert [r.name for r in sweep.select(runs, "c4-cp8")] == [
      "quick-cpu-c4-cp8-r0", "quick-cpu-c4-cp8-r1"]
  assert len(sweep.select(runs, "*-r0,quick-cpu-c1-cp4-r1")) == 7
  with pytest.raises(ValueError, match=r"^--only=zzz: matches none of the 12 runs"):
    sweep.select(runs, "zzz")


@pytest.mark.parametrize("body, message", [
    ("sweep.grid = {}", r"sweep\.grid is empty"),
    ("sweep.name = 'x'", r"sweep\.grid is empty"),
    ("sweep.grid = {'attention.num_chunks': []}", r"sweep\.grid\['attention\.num_chunks'\] must be "),
    ("sweep.grids = {'a.b': [1]}", r"unknown binding 'sweep\.grids'"),
    ("run.steps = 3\nsweep.grid = {'a.b': [1]}", r"unknown binding 'run\.steps'"),
    ("sweep.grid = {'a.b': [1]}\nsweep.modes = ['fast']", r"sweep\.modes: 'fast' is not one of"),
    ("sweep.grid = {'a.b': [1]}\nsweep.repeats = 0", r"sweep\.repeats=0: must be"),
    ("sweep.grid = {'chunks': [1]}", r"an axis is a binding like"),
    ("sweep.grid = {'a.b': [1]}\nsweep.name = '9lives'", r"sweep\.name='9lives': must start"),
    ("sweep.grid = {'a.b': [1", r"cannot parse gin"),
])
def test_bad_experiments_give_one_line_errors(tmp_path, body, message):
  with pytest.raises(ValueError, match=message) as info:
    sweep.expand(_load(tmp_path, body))
  assert "\n" not in str(info.value)


def test_unknown_experiment_file():
  with pytest.raises(ValueError, match=r"^--experiment=experiments/nope\.gin: no such file$"):
    sweep.load_experiment("experiments/nope.gin")


def test_name_collision_is_one_line_error(tmp_path):
  spec = _load(tmp_path, "sweep.name = 'k'\nsweep.grid = {'attention.kernel': ['a_b', 'a-b']}")
  with pytest.raises(ValueError, match=(
      r"^runs attention\.kernel=a_b and attention\.kernel=a-b both get the name 'k-a-b'; "
      r"set sweep\.abbrev to tell them apart$")):
    sweep.expand(spec)


def test_name_too_long_is_one_line_error(tmp_path):
  spec = _load(tmp_path, "sweep.name = 'a-very-long-experiment-name-xy'\n"
                         "sweep.grid = {'attention.num_chunks': [1], 'mesh.context': [16]}\n"
                         "sweep.repeats = 12")
  with pytest.raises(ValueError, match=r"^run name 'a-very-long-experiment-name-xy-c1-cp16-r0' has 41 "
                                       r"characters \(XPK allows 40\)"):
    sweep.expand(spec)


def test_axis_tokens():
  assert names.axis_token("attention.num_chunks", 8, {}) == "c8"
  assert names.axis_token("mesh.data", -1, {}) == "dp-m1"
  assert names.axis_token("optimizer.learning_rate", 0.5, {}) == "lr0p5"
  assert names.axis_token("attention.packed_qkv", False, {}) == "no-packed-qkv"
  assert names.axis_token("attention.kernel", "splash", {}) == "splash"
  assert names.axis_token("attention.kernel", "splash", {"attention.kernel": "k"}) == "k-splash"
  assert names.axis_token("gin_file", "video/720p.gin", {}) == "720p"


@pytest.mark.parametrize("path", sorted(str(p) for p in sweep.REPO_ROOT.glob("experiments/*.gin")))
def test_every_shipped_experiment_passes_the_harness_check(path):
  benchmarks = bench.load_bench(path)
  if benchmarks is not None:  # a benchmark file names scripts, not harness runs
    for _, argv in benchmarks.scripts:
      assert (sweep.REPO_ROOT / argv[0]).is_file(), argv
    return
  spec = sweep.load_experiment(path)
  sweep.check_bindings(sweep.expand(spec, modes=("train", "aot")))  # raises on a mistake


def test_shipped_experiments_expand():
  quick = sweep.expand(sweep.load_experiment("experiments/quick_cpu.gin"))
  assert [r.name for r in quick] == [f"quick-cpu-c{c}-r{i}" for c in (1, 2, 4) for i in (0, 1, 2)]
  runs = sweep.expand(sweep.load_experiment("experiments/two_phase_vs_single_shot.gin"))
  assert len(runs) == 3 * 2 * 3 * 3  # chunk counts x resolutions x slices (cp 4/8/16) x repeats
  assert runs[0].name == "two-phase-c1-480p-v5p8-r0" and runs[-1].name == "two-phase-c5-720p-v5p32-r2"
  assert {r.hardware.tpu_type for r in runs} == {"v5p-8", "v5p-16", "v5p-32"}
  assert all(len(r.name) <= 40 for r in runs)


def test_unknown_binding_is_caught_before_running(tmp_path):
  spec = _load(tmp_path, "sweep.grid = {'attention.num_chunkz': [1, 2]}")
  with pytest.raises(ValueError, match=(
      r"^run exp-nc1: Configurable 'attention' doesn't have a parameter named 'num_chunkz'")) as info:
    sweep.check_bindings(sweep.expand(spec))
  assert "\n" not in str(info.value)


def test_known_bindings_pass_the_harness_check(tmp_path):
  spec = _load(tmp_path, BASIC)
  sweep.check_bindings(sweep.expand(spec))  # raises on a mistake
  assert shlex.split(shlex.join(spec.bindings)) == list(spec.bindings)
