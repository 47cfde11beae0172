"""A real CPU capture through ProfilerWindow, analysed against the compiled HLO."""
import os
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from harness.attention import context_parallel_attention
from harness.mesh import make_mesh
from harness.profiling import ProfilerWindow, analyze, trace_scalars, window as window_lib


def _ulysses_like_step():
  """all_to_all (seq→heads) + per-head matmul + all_to_all back, on 8 devices."""
  mesh = jax.make_mesh((8,), ("context",))

  def body(x_SxHD, w_DxD):
    with jax.named_scope("ulysses"):
      x_SxHD = jax.lax.all_to_all(x_SxHD, "context", 1, 0, tiled=True)
    with jax.named_scope("attention"):
      y = jnp.tanh(x_SxHD @ w_DxD)
    return jax.lax.all_to_all(y, "context", 0, 1, tiled=True)

  step = jax.jit(jax.shard_map(body, mesh=mesh, in_specs=(P("context"), P()),
                               out_specs=P("context")))
  x = jax.device_put(jnp.ones((8 * 64, 8 * 32)), NamedSharding(mesh, P("context")))
  w = jnp.full((32, 32), 0.01)
  return step, x, w


class _MustNotBlock:
  """Outputs whose block_until_ready fails: steps outside the window must not block."""

  def block_until_ready(self):
    raise AssertionError("blocked outside the window's last step")


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
  logdir = str(tmp_path_factory.mktemp("tb"))
  step, x, w = _ulysses_like_step()
  compiled = step.lower(x, w).compile()
  step(x, w).block_until_ready()  # Compile outside the window.
  window = ProfilerWindow(logdir, enabled=True, start_step=1, num_steps=2)
  window.add_hlo_text("jit_body", compiled.as_text())
  with window:
    for i in range(4):
      window.before_step(i)
      with window.step_annotation(i):
        y = step(x, w)
        y.block_until_ready()
      window.after_step(i, y if window.in_window(i) else _MustNotBlock())
  return window, compiled.as_text()


def test_capture_has_its_own_folder_under_plugins_profile(capture):
  window, _ = capture
  (folder,) = window.captures
  assert os.path.dirname(folder).endswith(os.path.join("plugins", "profile"))
  names = sorted(os.listdir(folder))
  assert any(n.endswith(".xplane.pb") for n in names) and "jit_body.hlo.txt" in names


def test_analysis_matches_compiled_hlo_and_step_times(capture):
  window, hlo_text = capture
  result = analyze(window.captures[0])
  assert (result["platform"], result["module"], result["devices"]) == ("cpu", "jit_body", 8)
  # Only the window's steps were traced, each marked with its step number.
  assert result["steps"] == 2 and [r["step"] for r in result["per_step"]] == [1, 2]
  hlo_all_to_all = len(re.findall(r"\ball-to-all(?:-start)?\(", hlo_text))
  assert hlo_all_to_all == 2
  assert result["collectives"]["all-to-all"]["count"] == hlo_all_to_all
  for row in result["per_step"]:
    assert 0 < row["collective_s"] <= row["marker_s"]
    assert 0 < row["compute_s"] <= row["marker_s"]
    assert row["exposed_collective_s"] <= row["collective_s"]
  assert result["attention_rule"] == "hlo op_name scopes"
  assert 0 < result["attention_share"] <= 1
  assert set(trace_scalars(result)) >= {"trace/collective_s", "trace/exposed_collective_s",
                                        "trace/overlap_fraction"}


def test_captures_in_the_same_second_get_distinct_folders(tmp_path):
  step, x, w = _ulysses_like_step()
  step(x, w).block_until_ready()
  folders = []
  for _ in range(2):
    window = ProfilerWindow(str(tmp_path), enabled=True, start_step=0, num_steps=1)
    window.before_step(0)
    window.after_step(0, step(x, w))
    folders += window.captures
  assert len(set(folders)) == 2
  assert all(any(n.endswith(".xplane.pb") for n in os.listdir(f)) for f in folders)


def test_disabled_and_other_processes_do_not_capture(tmp_path):
  for window in (ProfilerWindow(str(tmp_path), enabled=False, start_step=0, num_steps=1),
                 ProfilerWindow(str(tmp_path), enabled=True, start_step=0, num_steps=1,
                                process_index=1)):
    window.before_step(0)
    window.after_step(0, _MustNotBlock())
    window.close()
    assert window.captures == [] and not window.in_window(0)
  assert not os.path.exists(tmp_path / "plugins")


def test_close_stops_an_unfinished_window(tmp_path):
  window = ProfilerWindow(str(tmp_path), enabled=True, start_step=0, num_steps=5)
  window.before_step(0)
  jnp.ones(4).block_until_ready()
  window.close()
  assert len(window.captures) == 1
  window.close()  # Idempotent.


def test_bad_window_names_the_binding():
  with pytest.raises(ValueError, match=r"^profiler\.num_steps=0: "):
    ProfilerWindow("/tmp/x", enabled=True, start_step=0, num_steps=0)


def test_chunked_ulysses_all_to_all_count_matches_hlo(tmp_path):
  mesh = make_mesh(context=8)
  q_BxSxHxD = jnp.ones((1, 64, 16, 8))
  attend = jax.jit(lambda q, k, v: context_parallel_attention(
      q, k, v, mesh=mesh, variant="ulysses", num_chunks=2))
  hlo_text = attend.lower(q_BxSxHxD, q_BxSxHxD, q_BxSxHxD).compile().as_text()
  attend(q_BxSxHxD, q_BxSxHxD, q_BxSxHxD).block_until_ready()
  window = ProfilerWindow(str(tmp_path), enabled=True, start_step=0, num_steps=2)
  window.add_hlo_text("attend", hlo_text)
  for i in range(2):
    window.before_step(i)
    with window.step_annotation(i):
      out = attend(q_BxSxHxD, q_BxSxHxD, q_BxSxHxD)
      out.block_until_ready()
    window.after_step(i, out)
  result = analyze(str(tmp_path))
  # q, k, v and the output, once per head group.
  assert len(re.findall(r"\ball-to-all(?:-start)?\(", hlo_text)) == 8
  assert result["collectives"]["all-to-all"]["count"] == 8
  assert result["steps"] == 2 and result["devices"] == 8
  for row in result["per_step"]:
    assert 0 < row["collective_s"] <= row["marker_s"]
    assert 0 < row["compute_s"] <= row["marker_s"]
  assert result["attention_share"] > 0.5
  # Scopes ulysses_chunk0 / ulysses_chunk1 split the step per head group.
  assert sorted(result["chunks"]) == ["0", "1"]
  assert all(c["collective_s"] > 0 and c["compute_s"] > 0 for c in result["chunks"].values())


def test_all_hosts_share_process_zeros_session_name(tmp_path, monkeypatch):
  monkeypatch.setattr(window_lib.jax, "process_count", lambda: 2)
  monkeypatch.setattr(window_lib.multihost_utils, "broadcast_one_to_all",
                      lambda x: 1_800_000_000)  # what process 0 would send
  (tmp_path / "plugins" / "profile" / "2027_01_15_08_00_00_step3").mkdir(parents=True)
  window = ProfilerWindow(str(tmp_path), enabled=True, start_step=3, num_steps=1,
                          all_hosts=True, process_index=1)
  # Same name on every host even if the folder exists: the other host made it.
  assert window._session_name(3) == "2027_01_15_08_00_00_step3"  # pylint: disable=protected-access
