"""Every shipped .gin file parses against the harness's config sections."""
import pathlib

import gin
import pytest

from harness import api, configs

REPO = pathlib.Path(__file__).resolve().parent.parent
GIN_FILES = sorted(p.relative_to(REPO / "gin").as_posix() for p in (REPO / "gin").rglob("*.gin"))


def test_there_are_gin_files():
  assert "quickstart.gin" in GIN_FILES
  assert {"models/tiny.gin", "models/wan2_1_14b.gin", "models/wan2_2_a14b.gin"} <= set(GIN_FILES)


@pytest.mark.parametrize("name", GIN_FILES)
def test_gin_file_parses_and_builds_configs(name):
  # Fragments (an attention or hardware file) are composed with the tiny model.
  files = [name] if name.startswith("models/") or name == "quickstart.gin" else [
      "models/tiny.gin", name]
  cfgs, _ = api.read(files, [])
  assert isinstance(cfgs.model, configs.DiTConfig)
  assert cfgs.model.num_tokens(cfgs.video) > 0
  gin.clear_config()


def test_later_binding_wins():
  cfgs, _ = api.read(["quickstart.gin"], ["attention.num_chunks=4", "run.steps=7"])
  assert (cfgs.attention.num_chunks, cfgs.run.steps) == (4, 7)


def test_wan_token_counts():
  for name, tokens in (("models/wan2_1_14b.gin", 75_600), ("models/wan2_1_1_3b.gin", 32_760),
                       ("models/wan2_2_ti2v_5b.gin", 27_280)):
    gin.clear_config()
    cfgs, _ = api.read([name], [])
    assert cfgs.model.num_tokens(cfgs.video) == tokens, name
