"""libtpu on a CPU host: harmless messages held back (all shown with --verbose); missing is one line."""
import logging
import os
import pathlib
import subprocess
import sys

from harness.aot import native_stderr

REPO = pathlib.Path(__file__).resolve().parent.parent

# What libtpu 0.0.42 prints on stderr when it loads on a CPU machine (seen on this host).
_LIBTPU_CPU_HOST = (
    "Failed to find host bounds for accelerator type: WARNING: could not determine TPU accelerator "
    "type, please set env var `TPU_ACCELERATOR_TYPE` manually, otherwise libtpu.so may not "
    "properly initialize.\n"
    "WARNING: Logging before InitGoogle() is written to STDERR\n"
    "E0000 00:00:1796138208.187421    4962 common_lib.cc:554] INVALID_ARGUMENT: Error: unexpected "
    "worker hostname 'WARNING: could not determine TPU worker hostnames or IP addresses' from env "
    "var TPU_WORKER_HOSTNAMES.\n"
    "=== Source Location Trace: ===\n"
    "learning/45eac/tfrc/runtime/libtpu_init_utils.cc:327\n")


def test_drop_harmless_removes_the_cpu_host_messages_and_keeps_the_rest():
  other = "E0000 00:00:1.0 1 compiler.cc:9] something real\n"
  trace = "=== Source Location Trace: ===\nxla/service/foo.cc:12\n"
  text = "before\n" + _LIBTPU_CPU_HOST + other + trace + "after"
  assert native_stderr.drop_harmless(text) == "before\n" + other + trace + "after"


def test_quiet_libtpu_filters_fd2_and_re_emits_other_lines(capfd):
  with native_stderr.quiet_libtpu(enabled=True):
    os.write(2, (_LIBTPU_CPU_HOST + "a real problem\n").encode())
  err = capfd.readouterr().err
  assert err == "a real problem\n"


def test_quiet_libtpu_re_emits_when_the_body_raises(capfd):
  try:
    with native_stderr.quiet_libtpu(enabled=True):
      os.write(2, b"kept line\n")
      raise KeyError("x")
  except KeyError:
    pass
  assert capfd.readouterr().err == "kept line\n"


def test_verbose_keeps_everything(capfd):
  with native_stderr.quiet_libtpu(enabled=False):
    os.write(2, _LIBTPU_CPU_HOST.encode())
  assert capfd.readouterr().err == _LIBTPU_CPU_HOST


def test_filter_follows_the_log_level(capfd):
  root = logging.getLogger()
  level = root.level
  try:
    root.setLevel(logging.INFO)  # python -m harness --verbose
    with native_stderr.quiet_libtpu():
      os.write(2, _LIBTPU_CPU_HOST.encode())
    assert capfd.readouterr().err == _LIBTPU_CPU_HOST
    root.setLevel(logging.WARNING)
    with native_stderr.quiet_libtpu():
      os.write(2, _LIBTPU_CPU_HOST.encode())
    assert capfd.readouterr().err == ""
  finally:
    root.setLevel(level)


# `python -m harness` with libtpu hidden, as after an install without it.
_WITHOUT_LIBTPU = """
import importlib.util, runpy, sys
real = importlib.util.find_spec
importlib.util.find_spec = lambda name, *a: None if name == "libtpu" else real(name, *a)
sys.argv = ["harness", "--gin_file=gin/quickstart.gin", "--gin_bindings=run.mode='aot'",
            "--gin_bindings=run.output_dir=" + repr(sys.argv[1])]
runpy.run_module("harness", run_name="__main__")
"""


def test_missing_libtpu_is_one_line_with_the_install_command(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _WITHOUT_LIBTPU, str(tmp_path)],
                        cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, PYTHONPATH=str(REPO)))
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr == ("error: aot: libtpu is not installed; install it with pip install "
                         "'libtpu==0.0.42.*' (pip install -e . brings it) to compile for TPU on "
                         "this machine\n")
