"""Benchmark files: scripts run once per results folder, figures merged and judged against targets."""
import json

import pytest

from launch import bench


def _spec(tmp_path, figures: dict) -> bench.Bench:
  script = tmp_path / "fig.py"
  script.write_text(
      "import json, sys, pathlib\n"
      f"pathlib.Path({str(tmp_path / 'calls')!r}).open('a').write('x')\n"
      f"json.dump({figures!r}, open(sys.argv[sys.argv.index('--out') + 1], 'w'))\n")
  return bench.Bench("b", (("fig", (str(script),)),),
                     (("ratio", "<= 1.05"), ("hidden", ">= 0.8")))


def test_scripts_run_once_and_figures_merge(tmp_path):
  spec = _spec(tmp_path, {"ratio": {"2": 1.01, "4": 1.2}, "ratio_spread": {"2": [1.0, 1.1]},
                          "hidden": 0.9, "fig_setup": {"steps": 3}})
  out = tmp_path / "results"
  assert bench.run_bench(spec, str(out)) == 0
  assert bench.run_bench(spec, str(out)) == 0
  assert (tmp_path / "calls").read_text() == "x"  # the second run reused parts/fig.json
  merged = json.loads((out / "bench.json").read_text())
  assert merged["ratio"] == {"2": 1.01, "4": 1.2} and merged["hidden"] == 0.9
  assert merged["targets"] == {"ratio": "<= 1.05", "hidden": ">= 0.8"}
  table = (out / "bench.md").read_text()
  assert "| `ratio` | 2: 1.01, 4: 1.2 | 2: [1, 1.1] | <= 1.05 | no |" in table
  assert "| `hidden` | 0.9 |  | >= 0.8 | yes |" in table
  assert "fig_setup" not in table


def test_a_failing_script_is_reported_and_not_recorded(tmp_path):
  script = tmp_path / "bad.py"
  script.write_text("raise SystemExit('boom')\n")
  spec = bench.Bench("b", (("bad", (str(script),)),), ())
  out = tmp_path / "results"
  assert bench.run_bench(spec, str(out)) == 1
  assert not (out / "parts" / "bad.json").exists()
  assert not list((out / "parts").glob("*.tmp"))


def test_shipped_bench_file_loads_and_a_bad_one_is_refused(tmp_path):
  spec = bench.load_bench("experiments/bench.gin")
  assert [n for n, _ in spec.scripts] == ["chunks", "overhead", "aot", "memory", "wall"]
  bad = tmp_path / "bad.gin"
  bad.write_text("bench.scripts = {'a': ['x.py']}\nbench.rounds = 3\n")
  with pytest.raises(ValueError, match="unknown binding 'bench.rounds'"):
    bench.load_bench(str(bad))


def test_readme_table_is_replaced_between_markers(tmp_path):
  spec = _spec(tmp_path, {"ratio": 1.0})
  bench.run_bench(spec, str(tmp_path / "r"))
  readme = tmp_path / "README.md"
  readme.write_text(f"# x\n{bench.README_BEGIN}\nold\n{bench.README_END}\nafter\n")
  bench.update_readme(str(tmp_path / "r"), str(readme))
  text = readme.read_text()
  assert "old" not in text and "| `ratio` | 1 |  | <= 1.05 | yes |" in text
  assert text.endswith(f"{bench.README_END}\nafter\n")
  readme.write_text("no markers\n")
  with pytest.raises(ValueError, match="markers"):
    bench.update_readme(str(tmp_path / "r"), str(readme))
