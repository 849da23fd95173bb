"""The pprsf config of a Flower run: both apps read it from the run config the same way.

Run config keys (`[tool.flwr.app.config]` in `flower_app/pyproject.toml`, or
`flwr run --run-config`): `config` (a pprsf config file, absolute or relative to where the
SuperLink / SuperNode was started) and `overrides` ("section.field=value ...", as on the
`pprsf run` command line).
"""

from __future__ import annotations

import shlex

from flwr.app import Context

from pprsf_jax.cli import load_config
from pprsf_jax.config import RunConfig, apply_overrides


def run_config(context: Context) -> RunConfig:
  return apply_overrides(load_config(str(context.run_config["config"])),
                         shlex.split(str(context.run_config.get("overrides", ""))))
