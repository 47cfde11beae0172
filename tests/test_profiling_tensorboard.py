"""The quickstart's capture and scalars, served by a real TensorBoard on 127.0.0.1."""
import contextlib
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from harness.profiling import analyze

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_STEP, NUM_STEPS = 2, 2


def _executed_all_to_alls(hlo_text: str) -> int:
  """All-to-alls one execution of the entry runs: static count x known while trip counts."""
  own: dict[str, int] = {}
  loops: dict[str, list[tuple[str, int]]] = {}
  entry, current = None, None
  for line in hlo_text.splitlines():
    header = re.match(r"^(ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = header.group(2)
      own[current], loops[current] = 0, []
      entry = current if header.group(1) else entry
      continue
    if current is None:
      continue
    own[current] += len(re.findall(r"\ball-to-all(?:-start)?\(", line))
    loop = re.search(r" while\(.*body=%?([\w.\-]+).*known_trip_count\":\{\"n\":\"(\d+)", line)
    if loop:
      loops[current].append((loop.group(1), int(loop.group(2))))

  def total(name: str) -> int:
    return own[name] + sum(n * total(body) for body, n in loops[name])

  return total(entry)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _get(port: int, path: str):
  """JSON from the server (it may gzip), or None while it is not answering yet."""
  try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as resp:
      body = resp.read()
      if resp.headers.get("Content-Encoding") == "gzip":
        body = gzip.decompress(body)
      return json.loads(body)
  except (urllib.error.URLError, ConnectionError, TimeoutError):
    return None


def _poll(port: int, path: str, ready, timeout_s: float = 90):
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    answer = _get(port, path)
    if answer is not None and ready(answer):
      return answer
    time.sleep(0.5)
  return _get(port, path)


@contextlib.contextmanager
def _tensorboard(logdir: str, log_path: str):
  port = _free_port()
  with open(log_path, "w") as log:
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", logdir, "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"], stdout=log, stderr=subprocess.STDOUT)
  try:
    yield port
  finally:
    server.terminate()
    try:
      server.wait(timeout=20)
    except subprocess.TimeoutExpired:
      server.kill()
      server.wait()


@pytest.mark.slow
def test_quickstart_capture_and_scalars_in_tensorboard(tmp_path):
  out = tmp_path / "out"
  bindings = [f"run.output_dir='{out}'", "run.steps=5", "run.final_eval=False",
              "run.checkpoint_every=0", f"profiler.start_step={START_STEP}",
              f"profiler.num_steps={NUM_STEPS}"]
  cmd = [sys.executable, "-m", "harness", "--gin_file=gin/quickstart.gin"]
  cmd += [f"--gin_bindings={b}" for b in bindings]
  run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert run.returncode == 0, run.stderr[-3000:]
  run_dir = out / "quickstart"

  summary = json.loads((run_dir / "summary.json").read_text())
  for key in ("collective_s", "compute_s", "exposed_collective_s", "overlap_fraction"):
    assert key in summary["trace"], summary["trace"]
  result = analyze(str(run_dir))
  assert [r["step"] for r in result["per_step"]] == [START_STEP, START_STEP + 1]
  session = os.path.basename(result["capture"])
  # The layers run in while loops: count what one step executes, from the compiled HLO.
  hlo_text = (run_dir / "tensorboard" / "plugins" / "profile" / session /
              "train_step.hlo.txt").read_text()
  assert result["collectives"]["all-to-all"]["count"] == _executed_all_to_alls(hlo_text) > 0

  with _tensorboard(str(out), str(tmp_path / "tensorboard.log")) as port:
    listing = _poll(port, "data/plugins_listing", lambda a: a.get("profile", {}).get("enabled"))
    assert listing is not None, (tmp_path / "tensorboard.log").read_text()[-3000:]
    assert listing["profile"]["enabled"] is True

    run_name = f"quickstart/tensorboard/{session}"
    runs = _poll(port, "data/plugin/profile/runs", lambda a: run_name in a)
    assert runs is not None and run_name in runs, runs
    tools = _get(port, "data/plugin/profile/run_tools?run=" + urllib.parse.quote(run_name))
    assert any(t.startswith("trace_viewer") for t in tools), tools
    # The trace viewer's data: the timeline a researcher opens, collectives included.
    host = next(f for f in os.listdir(result["capture"])
                if f.endswith(".xplane.pb")).split(".xplane.pb")[0]
    query = urllib.parse.urlencode({"run": run_name, "tag": "trace_viewer@", "host": host})
    timeline = _get(port, "data/plugin/profile/data?" + query)
    assert any("all-to-all" in e.get("name", "") for e in timeline["traceEvents"])

    wanted = {"perf/step_time_seconds", "trace/exposed_collective_s", "trace/overlap_fraction"}
    tags = _poll(port, "data/plugin/scalars/tags",
                 lambda a: wanted <= set(a.get("quickstart/tensorboard", {})))
    assert wanted <= set(tags.get("quickstart/tensorboard", {})), tags
