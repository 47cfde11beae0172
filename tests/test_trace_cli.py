"""Unreadable trace folders give one line, not a traceback; the CLI prints the table."""
import os
import subprocess
import sys

import pytest
from jax.profiler import ProfileData

from harness import trace
from harness.profiling import TraceError, analyze

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "tpu_capture")
HOST_ONLY_XSPACE = """planes { id: 1 name: "/host:CPU"
  lines { id: 1 name: "main" timestamp_ns: 1000
    events { metadata_id: 1 offset_ps: 0 duration_ps: 5000 } }
  event_metadata { key: 1 value { id: 1 name: "MatMul" } } }"""


def _empty(tmp_path):
  return str(tmp_path)


def _zero_bytes(tmp_path):
  (tmp_path / "host.xplane.pb").write_bytes(b"")
  return str(tmp_path)


def _truncated(tmp_path):
  data = open(os.path.join(FIXTURE, "host0.xplane.pb"), "rb").read()
  (tmp_path / "host.xplane.pb").write_bytes(data[: len(data) // 3])
  return str(tmp_path)


def _other_tool(tmp_path):
  (tmp_path / "events.out.tfevents.1700000000.host").write_bytes(b"\x00" * 32)
  (tmp_path / "host_1234.pt.trace.json").write_text('{"traceEvents": []}')
  return str(tmp_path)


def _no_xla_ops(tmp_path):
  (tmp_path / "host.xplane.pb").write_bytes(
      ProfileData.text_proto_to_serialized_xspace(HOST_ONLY_XSPACE))
  return str(tmp_path)


@pytest.mark.parametrize("make, message", [
    (_empty, "no .xplane.pb under"),
    (_zero_bytes, "is empty"),
    (_truncated, "is not a readable XSpace (truncated or from another tool)"),
    (_other_tool, "no .xplane.pb under"),
    (_no_xla_ops, "no XLA op events in"),
])
def test_bad_folders_raise_one_line_trace_errors(tmp_path, make, message):
  with pytest.raises(TraceError) as info:
    analyze(make(tmp_path))
  assert message in str(info.value) and "\n" not in str(info.value)


def test_trace_error_is_a_value_error():
  assert issubclass(TraceError, ValueError)


def test_cli_reports_errors_in_one_line_and_exits_2(tmp_path, capsys):
  assert trace.main([_truncated(tmp_path)]) == 2
  out, err = capsys.readouterr()
  assert out == "" and err.count("\n") == 1 and err.startswith("error: ")


def test_cli_process_has_no_traceback(tmp_path):
  missing = subprocess.run([sys.executable, "-m", "harness.trace", str(tmp_path / "nope")],
                           capture_output=True, text=True, check=False)
  assert missing.returncode == 2 and missing.stdout == ""
  assert missing.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'} does not exist"]


def test_cli_prints_the_table(capsys):
  assert trace.main([FIXTURE]) == 0
  out = capsys.readouterr().out
  assert out.splitlines()[0].startswith("trace: tpu, module jit_train_step, 2 step(s)")
  assert trace.main([FIXTURE, "--json"]) == 0
  assert '"exposed_collective_s": 2.8' in capsys.readouterr().out
