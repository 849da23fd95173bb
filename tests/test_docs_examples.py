"""Every ```python block of docs/extending.md and docs/ranking_models.md runs as written.

The blocks run in one fresh interpreter (JAX is imported once), each in a fresh namespace, so a
block that only works after another fails here. A subprocess keeps what the examples register
(`REDUCERS`, `STRATEGIES`) out of this test session's registries. The blocks' own `assert`s are
the checks; a block that raises fails its test, with its output and traceback.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).parents[1] / "docs"
PAGE = DOCS / "extending.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)

# Runs the blocks given as a JSON list on stdin, each in a fresh namespace; reports one JSON
# object per block on the last line of stdout.
RUNNER = r"""
import contextlib, io, json, sys, time, traceback
results = []
for index, source in enumerate(json.load(sys.stdin)):
  output = io.StringIO()
  start = time.perf_counter()
  try:
    with contextlib.redirect_stdout(output):
      exec(compile(source, f"<docs block {index}>", "exec"), {"__name__": "__main__"})
    error = None
  except BaseException:  # the report names the block; the test fails on it
    error = traceback.format_exc()
  results.append({"output": output.getvalue(), "error": error,
                  "seconds": time.perf_counter() - start})
print(json.dumps(results))
"""


def _blocks(page: pathlib.Path = PAGE) -> list[str]:
  return BLOCK.findall(page.read_text())


def _run(blocks: list[str]) -> list[dict]:
  env = dict(os.environ, JAX_NUMPY_RANK_PROMOTION="raise", JAX_PLATFORMS="cpu")
  completed = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks),
                             capture_output=True, text=True, timeout=300, env=env,
                             cwd=DOCS.parent, check=False)
  assert completed.returncode == 0, completed.stderr[-4000:]
  results = json.loads(completed.stdout.strip().splitlines()[-1])
  assert len(results) == len(blocks)
  return results


def test_page_has_the_four_examples():
  blocks = _blocks()
  assert len(blocks) == 4, f"expected 4 python blocks in {PAGE.name}, found {len(blocks)}"
  text = "\n".join(blocks)
  for api in ("Aggregator(", "RecallParams(", "RankingModel(", "STRATEGIES["):
    assert api in text, f"no example uses {api}"


@pytest.fixture(scope="module")
def runs() -> list[dict]:
  return _run(_blocks())


@pytest.mark.parametrize("index", range(4), ids=["aggregator", "recall", "ranking", "rerank"])
def test_block_runs(runs, index):
  result = runs[index]
  assert result["error"] is None, (
      f"docs/extending.md python block {index} raised:\n{result['error']}\n"
      f"its output:\n{result['output']}")
  assert result["output"].strip(), f"block {index} printed nothing"


def test_the_ranking_model_page_example_trains_a_new_model_federated():
  """docs/ranking_models.md: a model of its own, registered and trained through the pipeline,
  in under ~40 lines."""
  blocks = _blocks(DOCS / "ranking_models.md")
  assert len(blocks) == 1 and len(blocks[0].strip().splitlines()) <= 40
  [result] = _run(blocks)
  assert result["error"] is None, result["error"]
  assert "loss per round" in result["output"] and "pprsf (P_FL + re-rank)" in result["output"]
