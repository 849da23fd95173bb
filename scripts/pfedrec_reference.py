"""Run PFedRec's released code (IJCAI'23) on ML-100K and print one JSON line per round.

  python scripts/pfedrec_reference.py --pfedrec-dir PATH --sampler published|leak_free
                                      [--num-round N] [--workdir DIR] [--torch-seed S]
                                      [--dump-split OUT.npz]

PFedRec ("Dual Personalization on Federated Recommendation", Zhang et al., IJCAI 2023) publishes
its code at github.com/Zhangcx19/IJCAI-23-PFedRec (read at commit abc23809b9bc; see
docs/pfedrec_reference.md). Get it with `git clone` of that repository; PATH is the checkout
(the folder holding train.py, data.py, engine.py, mlp.py, metrics.py, utils.py and
data/ml-100k/ratings.dat). Nothing in the checkout is edited: this script imports their modules,
runs their train.py as __main__ (all its default arguments: 100 rounds, all 943 clients a
round, latent dim 32, lr 0.1, lr_eta 80, batch 256, 4 negatives per positive, SGD) in a scratch
working folder (--workdir, a temporary one by default) that links their data/ and receives
their log/ and sh_result/ files.

This script does not belong to the pprsf_jax package and needs its own environment, e.g.

  python3.11 -m venv /work/pfedrec-venv
  /work/pfedrec-venv/bin/pip install torch 'pandas<3'     # a CPU build of torch suffices
  nice -n 19 /work/pfedrec-venv/bin/python scripts/pfedrec_reference.py \\
      --pfedrec-dir /work/pfedrec --sampler published > docs/results/pfedrec_own_code_published.jsonl

Torch runs on one thread (OMP/MKL set to 1 before torch is imported, torch.set_num_threads(1)).

--sampler picks the pool of each round's TRAINING negatives (4 per training positive, drawn
anew every round by their SampleGenerator.store_all_train_data); nothing else changes:
  published  their code untouched: negatives come from the items the user never rated at all,
             so the user's held-out validation and test items are never training negatives,
             while the 2 x 99 evaluation negatives (drawn from that same pool) regularly are.
  leak_free  negatives come from the items outside the user's TRAINING interactions (the
             held-out validation and test items are eligible), as in NCF's original protocol.
             Implemented by handing store_all_train_data, for the duration of its call, a
             negatives table whose 'negative_items' column is that pool; the evaluation
             negatives ('negative_samples', drawn once before round 0) are not touched.

Compatibility shims, none of which changes what their code computes:
  * `.cuda()` on tensors and modules returns its receiver (their engine calls it
    unconditionally; everything runs on the CPU here).
  * On Python >= 3.11 `random.sample(set, k)` raises TypeError; Python 3.9/3.10 (which their code
    was written for) converted the set with tuple(population) first, with a DeprecationWarning.
    The shim does exactly that conversion, so the draws are those Python 3.10 makes.
  * tensorboardX (imported by their engine, never used) is replaced by an empty stand-in when it
    is not installed.
Their code never seeds torch (model initialisation and DataLoader shuffling), so two runs
differ; --torch-seed S seeds it (default: unseeded, as theirs).

Output (stdout): one JSON object per round
  {"round", "val_hr10", "val_ndcg10", "test_hr10", "test_ndcg10", "seconds", "sample_s",
   "train_s", "eval_s"}
where seconds covers the whole round (negative sampling, local training of all participants,
aggregation, the test and the validation evaluation); then a summary object with the figure
their train.py selects: the test HR@10/NDCG@10 of the LAST round whose validation HR@10 is >= the
best so far (their `if val_hit_ratio >= best_val_hr`), cross-checked against the line their code
appends to sh_result/ml-100k.txt, plus the mean seconds per round. Their own log and prints go
to stderr.

--dump-split OUT.npz stops after their SampleGenerator has built the split and the evaluation
data (before any training) and saves, in their ids, the training pairs, the validation and test
items with their 99 negatives each, and their raw-id -> id maps, to compare with
pprsf_jax.data.loo_protocol.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import re
import sys
import tempfile
import time
import types
from pathlib import Path


class _StopAfterDump(Exception):
  pass


def _limit_threads() -> None:
  for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[var] = "1"


def _python310_sample_shim() -> None:
  """Lets random.sample take a set on Python >= 3.11, converting it as 3.9/3.10 did."""
  if sys.version_info < (3, 11):
    return
  bound = random.sample  # the module-level instance's method (random._inst.sample)

  def sample(population, k, *, counts=None):
    if isinstance(population, (set, frozenset)):
      population = tuple(population)
    return bound(population, k, counts=counts)

  random.sample = sample


def _cpu_shims(torch) -> None:
  torch.Tensor.cuda = lambda self, *args, **kwargs: self
  torch.nn.Module.cuda = lambda self, *args, **kwargs: self
  if importlib.util.find_spec("tensorboardX") is None:
    stub = types.ModuleType("tensorboardX")
    stub.SummaryWriter = object
    sys.modules["tensorboardX"] = stub


class Recorder:
  """Times the phases of each round and prints the round's line once both evaluations ran."""

  def __init__(self, out):
    self.out = out
    self.rounds: list[dict] = []
    self.current: dict = {}
    self.round_start: float | None = None
    self.val_data = None
    self.test_data = None

  def start_round(self) -> None:
    self.round_start = time.perf_counter()
    self.current = {"sample_s": 0.0, "train_s": 0.0, "eval_s": 0.0}

  def evaluated(self, which: str, hr: float, ndcg: float) -> None:
    self.current[f"{which}_hr10"] = float(hr)
    self.current[f"{which}_ndcg10"] = float(ndcg)
    if "val_hr10" in self.current and "test_hr10" in self.current:
      line = {"round": self.current["round"]}
      for key in ("val_hr10", "val_ndcg10", "test_hr10", "test_ndcg10"):
        line[key] = self.current[key]
      line["seconds"] = round(time.perf_counter() - self.round_start, 3)
      for key in ("sample_s", "train_s", "eval_s"):
        line[key] = round(self.current[key], 3)
      self.rounds.append(line)
      print(json.dumps(line), file=self.out, flush=True)


def _leak_free_negatives(generator, pd):
  """Per user, the items outside its training interactions (val and test items included)."""
  train_sets = generator.train_ratings.groupby("userId")["itemId"].apply(set)
  users = list(train_sets.index)
  pools = [generator.item_pool - train_sets[user] for user in users]
  return pd.DataFrame({"userId": users, "negative_items": pools})


def _install_hooks(args, recorder: Recorder):
  import pandas as pd
  import data as pf_data  # their modules, imported from --pfedrec-dir
  import engine as pf_engine

  generator_cls = pf_data.SampleGenerator
  engine_cls = pf_engine.Engine

  original_store = generator_cls.store_all_train_data

  def store_all_train_data(self, num_negatives):
    recorder.start_round()
    start = time.perf_counter()
    if args.sampler == "leak_free":
      if not hasattr(self, "_leak_free_table"):
        self._leak_free_table = _leak_free_negatives(self, pd)
      published = self.negatives
      self.negatives = self._leak_free_table
      try:
        result = original_store(self, num_negatives)
      finally:
        self.negatives = published
    else:
      result = original_store(self, num_negatives)
    recorder.current["sample_s"] += time.perf_counter() - start
    return result

  generator_cls.store_all_train_data = store_all_train_data

  val_getter = generator_cls.validate_data.fget
  test_getter = generator_cls.test_data.fget

  def validate_data(self):
    recorder.val_data = val_getter(self)
    return recorder.val_data

  def test_data(self):
    recorder.test_data = test_getter(self)
    if args.dump_split:
      _dump(args.dump_split, self, recorder, sys._getframe(1).f_globals)
      raise _StopAfterDump
    return recorder.test_data

  generator_cls.validate_data = property(validate_data)
  generator_cls.test_data = property(test_data)

  original_train = engine_cls.fed_train_a_round

  def fed_train_a_round(self, all_train_data, round_id):
    start = time.perf_counter()
    result = original_train(self, all_train_data, round_id)
    recorder.current["train_s"] += time.perf_counter() - start
    recorder.current["round"] = int(round_id)
    return result

  engine_cls.fed_train_a_round = fed_train_a_round

  original_evaluate = engine_cls.fed_evaluate

  def fed_evaluate(self, evaluate_data):
    start = time.perf_counter()
    hr, ndcg, loss = original_evaluate(self, evaluate_data)
    recorder.current["eval_s"] += time.perf_counter() - start
    if evaluate_data is recorder.val_data:
      recorder.evaluated("val", hr, ndcg)
    elif evaluate_data is recorder.test_data:
      recorder.evaluated("test", hr, ndcg)
    return hr, ndcg, loss

  engine_cls.fed_evaluate = fed_evaluate


def _dump(path, generator, recorder: Recorder, train_globals) -> None:
  import numpy as np

  val_users, val_items, _, val_neg = (t.numpy() for t in recorder.val_data)
  test_users, test_items, _, test_neg = (t.numpy() for t in recorder.test_data)
  train = generator.train_ratings
  binary = sorted(set(generator.preprocess_ratings["rating"].tolist()))
  user_map = train_globals["user_id"]
  item_map = train_globals["item_id"]
  np.savez(
      path,
      train_user=train["userId"].to_numpy(np.int64),
      train_item=train["itemId"].to_numpy(np.int64),
      val_user=val_users, val_item=val_items, val_negatives=val_neg.reshape(-1, 99),
      test_user=test_users, test_item=test_items, test_negatives=test_neg.reshape(-1, 99),
      raw_user=user_map["uid"].to_numpy(np.int64), user_id=user_map["userId"].to_numpy(np.int64),
      raw_item=item_map["mid"].to_numpy(np.int64), item_id=item_map["itemId"].to_numpy(np.int64),
      binarized_ratings=np.asarray(binary, dtype=np.float64),
  )


def _their_line(workdir: Path, dataset: str) -> dict:
  path = workdir / "sh_result" / f"{dataset}.txt"
  if not path.is_file():
    return {}
  last = path.read_text().strip().splitlines()[-1]
  found = {}
  for key, name in (("hr", "test_hr10"), ("ndcg", "test_ndcg10"), ("best_round", "round")):
    match = re.search(rf"-{key}: ([0-9.e-]+?)-", last)
    if match:
      found[name] = float(match.group(1)) if key != "best_round" else int(match.group(1))
  return found


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--pfedrec-dir", type=Path, required=True)
  parser.add_argument("--sampler", choices=("published", "leak_free"), default="published")
  parser.add_argument("--num-round", type=int, default=None,
                      help="passed to their --num_round (default: theirs, 100)")
  parser.add_argument("--workdir", type=Path, default=None)
  parser.add_argument("--torch-seed", type=int, default=None)
  parser.add_argument("--dump-split", type=Path, default=None)
  args = parser.parse_args()

  pfedrec = args.pfedrec_dir.resolve()
  if not (pfedrec / "train.py").is_file() or not (pfedrec / "data.py").is_file():
    parser.error(f"{pfedrec} holds no train.py/data.py: pass a checkout of IJCAI-23-PFedRec")
  workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="pfedrec-run-"))).resolve()
  for sub in ("log", "sh_result"):
    (workdir / sub).mkdir(parents=True, exist_ok=True)
  if not (workdir / "data").exists():
    (workdir / "data").symlink_to(pfedrec / "data")

  _limit_threads()
  import pandas
  import torch

  torch.set_num_threads(1)
  try:
    torch.set_num_interop_threads(1)
  except RuntimeError:
    pass
  if args.torch_seed is not None:
    torch.manual_seed(args.torch_seed)
  _cpu_shims(torch)
  _python310_sample_shim()

  sys.path.insert(0, str(pfedrec))
  os.chdir(workdir)
  out = sys.stdout
  sys.stdout = sys.stderr  # their prints (the model) and log lines stay off the JSON stream
  recorder = Recorder(out)
  # Importing their data module seeds Python's `random` with 0, as their train.py's import does;
  # nothing below draws from it before their SampleGenerator.
  _install_hooks(args, recorder)

  argv = [str(pfedrec / "train.py")]
  if args.num_round is not None:
    argv += ["--num_round", str(args.num_round)]
  sys.argv = argv
  import runpy

  start = time.perf_counter()
  try:
    runpy.run_path(str(pfedrec / "train.py"), run_name="__main__")
  except _StopAfterDump:
    print(json.dumps({"dumped": str(args.dump_split)}), file=out, flush=True)
    return
  total = time.perf_counter() - start

  rounds = recorder.rounds
  best_val, selected = 0.0, 0
  for line in rounds:  # their rule: the last round whose validation HR is >= the best so far
    if line["val_hr10"] >= best_val:
      best_val, selected = line["val_hr10"], line["round"]
  chosen = next(line for line in rounds if line["round"] == selected)
  summary = {
      "summary": True,
      "sampler": args.sampler,
      "selection": "test metrics at the last round with the best validation HR@10 (>=)",
      "selected_round": selected,
      "test_hr10": chosen["test_hr10"],
      "test_ndcg10": chosen["test_ndcg10"],
      "val_hr10": chosen["val_hr10"],
      "val_ndcg10": chosen["val_ndcg10"],
      "final_round": rounds[-1]["round"],
      "final_test_hr10": rounds[-1]["test_hr10"],
      "final_test_ndcg10": rounds[-1]["test_ndcg10"],
      "rounds": len(rounds),
      "mean_seconds_per_round": round(sum(r["seconds"] for r in rounds) / len(rounds), 3),
      "mean_train_s_per_round": round(sum(r["train_s"] for r in rounds) / len(rounds), 3),
      "total_seconds": round(total, 1),
      "their_sh_result_line": _their_line(workdir, "ml-100k"),
      "torch_threads": torch.get_num_threads(),
      "torch_seed": args.torch_seed,
      "versions": {"python": platform.python_version(), "torch": torch.__version__,
                   "pandas": pandas.__version__},
      "workdir": str(workdir),
  }
  print(json.dumps(summary), file=out, flush=True)


if __name__ == "__main__":
  main()
