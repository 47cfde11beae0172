"""--dry_run parameter counts equal a count written out from the Wan architecture."""
import pytest

from harness import __main__ as cli


def wan_param_count(dim, ffn, layers, heads, in_ch=16, out_ch=16, text_dim=4096, freq_dim=256,
                    patch=4):
  """Wan T2V DiT parameters, module by module (Linear = weight + bias)."""
  del heads  # head count does not change parameter shapes
  linear = lambda i, o: i * o + o
  attention = 4 * linear(dim, dim) + 2 * dim  # q, k, v, o + RMSNorm scales of q and k
  block = (2 * attention              # self- and cross-attention
           + 2 * dim                  # affine LayerNorm before cross-attention
           + linear(dim, ffn) + linear(ffn, dim)
           + 6 * dim)                 # modulation
  embed = (linear(in_ch * patch, dim)              # Conv3d patch embedding
           + linear(text_dim, dim) + linear(dim, dim)
           + linear(freq_dim, dim) + linear(dim, dim)
           + linear(dim, 6 * dim))                 # time projection
  head = linear(dim, out_ch * patch) + 2 * dim
  return layers * block + embed + head


@pytest.mark.parametrize("gin_file,expected", [
    ("models/wan2_1_14b.gin", 14_288_491_584),
    ("models/wan2_1_1_3b.gin", 1_418_996_800),
])
def test_dry_run_reports_the_architecture_count(gin_file, expected, capsys):
  shape = {"models/wan2_1_14b.gin": (5120, 13824, 40, 40),
           "models/wan2_1_1_3b.gin": (1536, 8960, 30, 12)}[gin_file]
  assert wan_param_count(*shape) == expected
  rc = cli.main([f"--gin_file={gin_file}", "--gin_bindings=mesh.context=8", "--gin_bindings=attention.variant='ring'", "--dry_run"])
  out = capsys.readouterr().out
  assert rc == 0
  assert f"parameters:           {expected:,}" in out
  assert "memory per device" in out and "FLOPs per train step" in out
