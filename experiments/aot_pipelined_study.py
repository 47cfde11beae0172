"""Hidden all-to-all time with the projections whole vs pipelined per head group (AOT, v5p-8).

  python experiments/aot_pipelined_study.py [--step layer|eval|train] --chunks 1 2 4 5 [--out F.md]

`--step layer` compiles the forward of one WAN 2.2 A14B self-attention layer with its projections
(q/k/v/o Linear, RMSNorm over the full width, 3D RoPE; bf16; x [1, tokens, 5120], 40 heads x 128
sharded over 'context'); `eval` / `train` compile the 40-layer step as `run.mode='aot'` does. Each
runs for v5p:2x2x2 (cp=8) with the async all-to-all flag set, with `attention.pipelined_projections`
off and on, and writes a markdown table of the predicted hidden share of all-to-all time.
"""
from __future__ import annotations

import argparse
import functools
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=wrong-import-position
import jax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from harness import api, gin_config  # noqa: E402
from harness.aot.cases import ASYNC_A2A  # noqa: E402
from harness.aot.compile_step import compile_and_analyze  # noqa: E402
from harness.aot.topology import get_topology  # noqa: E402
from harness.attention import context_parallel_attention  # noqa: E402
from harness.attention import pipelined as pipelined_lib  # noqa: E402
from harness.mesh import make_mesh  # noqa: E402
from harness.model.block import Attention  # noqa: E402
from harness.model.config import DiTConfig  # noqa: E402

# 720p x 81 frames: 21 x 45 x 80 tokens after the (1, 2, 2) patch.
GRIDS = {"720p": (21, 45, 80), "480p": (21, 30, 52)}


def _layer(topology, grid, chunks: int, kernel: str, pipelined: bool, packed_qkv: bool = False,
           dim=5120, heads=40):
  """(fn, abstract args) for one self-attention layer on a cp=8 mesh."""
  mesh = make_mesh(context=8, devices=topology.devices)
  cfg = DiTConfig(dim=dim, num_heads=heads, dtype="bfloat16", param_dtype="bfloat16")
  graphdef, state = nnx.split(nnx.eval_shape(lambda: Attention(cfg, nnx.Rngs(0))))
  common = dict(mesh=mesh, num_chunks=chunks, kernel=kernel, pad_heads=heads % 8 != 0,
                packed_qkv=packed_qkv)
  attend = functools.partial(context_parallel_attention, variant="ulysses", **common)
  projected = (functools.partial(pipelined_lib.pipelined_self_attention, **common)
               if pipelined else None)
  tokens = grid[0] * grid[1] * grid[2]
  seq = NamedSharding(mesh, P(("data", "fsdp"), "context", None))
  sds = lambda shape, dtype, spec: jax.ShapeDtypeStruct(shape, dtype, sharding=spec)
  params = jax.tree.map(lambda a: sds(a.shape, a.dtype, NamedSharding(mesh, P())), state)
  x = sds((1, tokens, dim), jax.numpy.bfloat16, seq)
  angles = sds((tokens, cfg.head_dim // 2), jax.numpy.float32,
               NamedSharding(mesh, P("context", None)))

  def fn(state, x_BxSxD, angles_SxP):
    return nnx.merge(graphdef, state)(x_BxSxD, x_BxSxD, attend, angles_SxP, projected)

  return jax.jit(fn, out_shardings=seq), (params, x, angles)


def a2a_hidden_fraction(report: dict) -> tuple[float, float]:
  """(hidden share of all-to-all link time, all-to-all seconds); synchronous ones hide nothing."""
  comm = report["comm_by_kind_s"].get("all-to-all", 0.0)
  hidden = sum(r["hidden_s"] * r["times"] for r in report["async_collectives"]
               if r["kind"] == "all-to-all")
  return (hidden / comm if comm else 0.0), comm


def _model_step(topology_name: str, resolution: str, step: str, chunks: int, kernel: str,
                pipelined: bool, packed_qkv: bool = False) -> api.Loaded:
  """The 40-layer WAN 2.2 A14B eval or train step, as `run.mode='aot'` loads it; its 'context'
  axis spans every chip of the topology."""
  gin_config.clear()
  return api.load(["models/wan2_2_a14b.gin", f"video/{resolution}.gin"],
                  ["mesh.context=-1", f"attention.kernel={kernel!r}", "attention.pad_heads=True",
                   f"attention.num_chunks={chunks}", f"attention.packed_qkv={packed_qkv}",
                   f"attention.pipelined_projections={pipelined}",
                   f"aot.topology={topology_name!r}", f"aot.step={step!r}"], abstract=True)


def run_case(step: str, resolution: str, frames: int | None, chunks: int, kernel: str,
             pipelined: bool, packed_qkv: bool = False, topology_name: str = "v5p:2x2x2") -> dict:
  """Compiles one case; the report gains `a2a_hidden_fraction`, `a2a_s` and `wall_s`."""
  if step == "layer":
    topology = get_topology(topology_name)
    grid = GRIDS[resolution]
    grid = (frames or grid[0], grid[1], grid[2])
    fn, args = _layer(topology, grid, chunks, kernel, pipelined, packed_qkv)
  else:
    loaded = _model_step(topology_name, resolution, step, chunks, kernel, pipelined, packed_qkv)
    topology, (fn, args) = loaded.topology, loaded.abstract_step()
  start = time.perf_counter()
  report, hlo = compile_and_analyze(fn, args, topology, ASYNC_A2A)
  report["wall_s"] = time.perf_counter() - start
  if hlo:  # else the report says why (e.g. it does not fit in HBM)
    report["a2a_hidden_fraction"], report["a2a_s"] = a2a_hidden_fraction(report)
  return report


def _row(chunks: int, pipelined: bool, r: dict) -> str:
  if r.get("error"):
    return f"| {chunks} | {'on' if pipelined else 'off'} | {r['error'][:100]} |" + " |" * 7
  a2a = r["collectives"].get("all-to-all", {"count": 0, "async_count": 0})
  ms = lambda s: f"{s * 1e3:.2f}"
  return (f"| {chunks} | {'on' if pipelined else 'off'} | {a2a['async_count']}/{a2a['count']} | "
          f"{ms(r['a2a_s'])} | {ms(r['compute_s'])} | {ms(r['exposed_comm_s'])} | "
          f"{r['a2a_hidden_fraction']:.3f} | {r['hidden_fraction']:.3f} | "
          f"{ms(r['predicted_step_s'])} | {r['wall_s']:.0f} |")


def _title(args) -> str:
  what = {"layer": "one self-attention layer (forward)",
          "eval": "WAN 2.2 A14B eval step (40 layers)",
          "train": "WAN 2.2 A14B train step (40 layers)"}[args.step]
  grid = GRIDS[args.resolution]
  frames = args.frames if args.step == "layer" and args.frames else grid[0]
  return (f"{what}, {frames * grid[1] * grid[2]:,} tokens, bf16, v5p:2x2x2 cp=8, "
          f"kernel={args.kernel}, packed_qkv={args.packed_qkv}, flags {' '.join(ASYNC_A2A)}.")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--step", default="layer", choices=["layer", "eval", "train"])
  parser.add_argument("--chunks", type=int, nargs="+", default=[1, 2, 4, 5])
  parser.add_argument("--resolution", default="720p", choices=sorted(GRIDS))
  parser.add_argument("--frames", type=int, default=None,
                      help="latent frames of the layer study (fewer = faster)")
  parser.add_argument("--kernel", default="splash")
  parser.add_argument("--packed_qkv", action="store_true")
  parser.add_argument("--out", default=None)
  args = parser.parse_args(argv)
  lines = [_title(args), "",
           "| C | pipelined | async a2a | a2a ms | compute ms | exposed ms | a2a hidden | "
           "hidden (all) | predicted ms | compile s |", "|" + "---|" * 10]
  for chunks in args.chunks:
    for pipelined in (False, True):
      report = run_case(args.step, args.resolution, args.frames, chunks, args.kernel, pipelined,
                        args.packed_qkv)
      lines.append(_row(chunks, pipelined, report))
      print(lines[-1], file=sys.stderr, flush=True)
  text = "\n".join(lines) + "\n"
  print(text)
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  main()
