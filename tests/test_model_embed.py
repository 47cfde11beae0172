"""The time-embedding MLP runs in float32 in a bfloat16 model, as diffusers' Wan model keeps it."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.model.config import DiTConfig
from harness.model.embed import Embeddings
from harness.model.embed import sinusoidal_embedding

CFG = DiTConfig(dim=64, num_heads=4, ffn_dim=128, num_layers=1, text_dim=32, text_len=8,
                freq_dim=32, dtype="bfloat16", param_dtype="bfloat16")


def _inputs():
  latents = jnp.zeros((2, 1, 4, 4, CFG.in_channels), jnp.bfloat16)
  text = jnp.zeros((2, CFG.text_len, CFG.text_dim), jnp.bfloat16)
  return latents, jnp.array([3.0, 917.0]), text


def test_time_mlp_weights_are_float32_in_a_bf16_model():
  emb = Embeddings(CFG, nnx.Rngs(0))
  dtypes = {x.dtype for x in jax.tree.leaves(nnx.state(emb.time))}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert emb.patch.kernel[...].dtype == jnp.bfloat16


def test_time_embedding_is_the_float32_mlp_cast_once():
  emb = Embeddings(CFG, nnx.Rngs(0))
  latents, t_B, text = _inputs()
  _, e_BxD, e6_Bx6xD, _ = emb(latents, t_B, text)
  fc1, fc2 = emb.time.fc1, emb.time.fc2
  hidden = jax.nn.silu(sinusoidal_embedding(t_B, CFG.freq_dim) @ fc1.kernel[...] + fc1.bias[...])
  want_BxD = (hidden @ fc2.kernel[...] + fc2.bias[...]).astype(jnp.bfloat16)
  assert e_BxD.dtype == jnp.bfloat16 and e6_Bx6xD.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(e_BxD, np.float32), np.asarray(want_BxD, np.float32),
                             rtol=0, atol=0)
