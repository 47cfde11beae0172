"""Jitted train and eval steps of the DiT on a mesh, and their abstract arguments for AOT."""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec as P

from harness import diffusion
from harness import mesh as mesh_lib
from harness.attention import cross_attention
from harness.attention import plan_attention
from harness.attention import planned_attention
from harness.attention.pipelined import planned_pipelined_attention
from harness.attention.types import AttentionPlan
from harness.attention.types import KernelOptions
from harness.configs import AttentionConfig, Setup, UserError
from harness.data import batch_shardings
from harness.model import DiT, DiTConfig
from harness.model.block import Runtime
from harness.mesh import activation_sharding, batch_sharding, param_shardings


def plan_self_attention(attn: AttentionConfig, mesh: Mesh | AbstractMesh,
                        heads: int) -> AttentionPlan:
  """The model's self-attention plan (kv heads = heads), checked for the mesh's platform (an
  abstract mesh has none); the one check of the attention bindings, before any tracing."""
  return plan_attention(heads=heads, kv_heads=heads, context=mesh.shape[mesh_lib.CONTEXT],
                        variant=attn.variant, num_chunks=attn.num_chunks,
                        ulysses_degree=attn.ulysses_degree, kernel=attn.kernel,
                        packed_qkv=attn.packed_qkv, pad_heads=attn.pad_heads,
                        platform=mesh_lib.platform(mesh), chunk_sizing=attn.chunk_sizing)


def make_runtime(attn: AttentionConfig, mesh: Mesh, heads: int,
                 plan: AttentionPlan | None = None) -> Runtime:
  """Binds the planned context-parallel attention and the activation layout to the mesh."""
  plan = plan or plan_self_attention(attn, mesh, heads)
  options = KernelOptions(block_q=attn.block_q, block_kv=attn.block_kv)
  self_attn = functools.partial(planned_attention, mesh=mesh, plan=plan, kernel_options=options)
  cross = functools.partial(cross_attention, mesh=mesh, kernel=attn.kernel, kernel_options=options)
  layout = activation_sharding(mesh)
  return Runtime(self_attn, cross, lambda x: jax.lax.with_sharding_constraint(x, layout),
                 _projected_self_attention(attn, mesh, plan, options))


def _projected_self_attention(attn: AttentionConfig, mesh: Mesh, plan: AttentionPlan,
                              options: KernelOptions):
  """Self-attention that projects per head group (attention.pipelined_projections), else None."""
  if not attn.pipelined_projections:
    return None
  if attn.variant != "ulysses":
    raise UserError(f"attention.pipelined_projections=True needs attention.variant='ulysses', "
                    f"got {attn.variant!r}; valid choices: 'ulysses' (or pipelined_projections="
                    f"False)")
  return functools.partial(planned_pipelined_attention, mesh=mesh, plan=plan,
                           kernel_options=options)


def abstract_model(cfg: DiTConfig) -> tuple[nnx.GraphDef, nnx.State]:
  """Graph and parameter shapes without allocating anything."""
  model = nnx.eval_shape(lambda: DiT(cfg, rngs=nnx.Rngs(0)))
  return nnx.split(model)


def count_params(abstract_params) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(abstract_params))


def _opt_shardings(opt, abstract_params, p_shardings, mesh: Mesh):
  abstract_state = jax.eval_shape(opt.init, abstract_params)
  replicated = NamedSharding(mesh, P())
  return optax.tree_map_params(opt, lambda _, sh: sh, abstract_state, p_shardings,
                               transform_non_params=lambda _: replicated)


@dataclasses.dataclass(frozen=True)
class Program:
  """The jitted functions of a run and the shardings/shapes of their arguments."""
  graphdef: nnx.GraphDef
  abstract_params: Any
  param_shardings: Any
  opt_shardings: Any
  init: Callable  # seed → (params, opt_state)
  train_step: Callable  # (params, opt_state, batch, step) → (params, opt_state, metrics)
  denoise_step: Callable  # (params, x, text, sigma, sigma_next) → (x, metrics)


def build_program(setup: Setup, mesh: Mesh, plan: AttentionPlan | None = None) -> Program:
  """Builds (without compiling) the init, train and denoise functions for `mesh`; `plan` is the
  self-attention plan already checked for it (planned here when None)."""
  graphdef, abstract_params = abstract_model(setup.model)
  rt = make_runtime(setup.attention, mesh, setup.model.num_heads, plan)
  opt = setup.optimizer.build()
  p_sh = param_shardings(abstract_params, mesh)
  o_sh = _opt_shardings(opt, abstract_params, p_sh, mesh)
  cfg = setup.model

  def velocity(params, x, t, text):
    return nnx.merge(graphdef, params)(x, t, text, rt)

  def init(seed):
    params = nnx.split(DiT(cfg, rngs=nnx.Rngs(seed)))[1]
    return params, opt.init(params)

  def train_step(params, opt_state, batch, step):
    key = jax.random.fold_in(jax.random.key(setup.seed + 1), step)
    loss_fn = lambda p: diffusion.flow_matching_loss(functools.partial(velocity, p), batch, key)
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  def denoise_step(params, x, text, sigma, sigma_next):
    x = diffusion.guided_euler_step(functools.partial(velocity, params), x, text, sigma,
                                    sigma_next, setup.sampler.guidance_scale)
    # A scalar to wait on and to check for NaN without fetching (or keeping) the latents.
    return x, {"x_rms": jnp.sqrt(jnp.mean(jnp.square(x.astype(jnp.float32))))}

  b_sh = batch_shardings(setup.data, mesh)
  replicated = NamedSharding(mesh, P())
  x_sh = batch_sharding(mesh, 5, setup.data.batch)
  return Program(
      graphdef, abstract_params, p_sh, o_sh,
      init=jax.jit(init, static_argnums=0, out_shardings=(p_sh, o_sh)),
      train_step=jax.jit(train_step, in_shardings=(p_sh, o_sh, b_sh, replicated),
                         out_shardings=(p_sh, o_sh, replicated), donate_argnums=(0, 1)),
      denoise_step=jax.jit(denoise_step, in_shardings=(p_sh, x_sh, b_sh["text"], replicated,
                                                       replicated),
                           out_shardings=(x_sh, replicated), donate_argnums=(1,)))


def abstract_train_args(program: Program, setup: Setup, mesh: Mesh) -> tuple:
  """ShapeDtypeStructs (with shardings) of the train step's arguments."""
  sds = lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh)
  params = jax.tree.map(sds, program.abstract_params, program.param_shardings)
  opt_state = jax.eval_shape(setup.optimizer.build().init, params)
  opt_state = jax.tree.map(sds, opt_state, program.opt_shardings)
  spec = setup.data
  batch = {"latents": jax.ShapeDtypeStruct((spec.batch, *spec.latent), jnp.float32,
                                           sharding=batch_sharding(mesh, 5, spec.batch)),
           "text": jax.ShapeDtypeStruct((spec.batch, spec.text_len, spec.text_dim), jnp.float32,
                                        sharding=batch_sharding(mesh, 3, spec.batch))}
  step = jax.ShapeDtypeStruct((), jnp.int32, sharding=NamedSharding(mesh, P()))
  return params, opt_state, batch, step


def abstract_denoise_args(program: Program, setup: Setup, mesh: Mesh) -> tuple:
  """ShapeDtypeStructs (with shardings) of the denoise step's arguments."""
  params, _, batch, _ = abstract_train_args(program, setup, mesh)
  scalar = jax.ShapeDtypeStruct((), jnp.float32, sharding=NamedSharding(mesh, P()))
  return params, batch["latents"], batch["text"], scalar, scalar
