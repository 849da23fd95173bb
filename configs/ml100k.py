"""The main job: PPRSF on MovieLens-100K (fetched and cached by the loader)."""

from pprsf_jax.config import RunConfig


def get_config() -> RunConfig:
  return RunConfig(name="ml100k")
