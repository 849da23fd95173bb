"""Progress of long work: a tqdm bar on a terminal, plain log lines elsewhere, nothing when off.

Progress is log output. Loops report through `steps` and stages through `stage`, both on the
`pprsf_jax.progress` logger at INFO: a program that configures logging at INFO (the `pprsf`
command does) sees them, a library user who does not sees nothing, and `pprsf --no-progress`
(or `shown(False)`) silences them. Where stderr is a terminal a loop draws a tqdm bar instead
of writing lines, so a log file or CI output gets a handful of lines, not a redrawn bar.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
_QUIET_S = 2.0  # a loop says nothing before it has run this long: short loops stay silent
_LINE_EVERY_S = 10.0  # then a line at least this often, at each tenth (not closer than _QUIET_S)
                      # and at the end


def enabled() -> bool:
  return logger.isEnabledFor(logging.INFO)


@contextlib.contextmanager
def shown(show: bool) -> Iterator[None]:
  """Within the block, progress is reported (if logging shows INFO) or silenced."""
  previous = logger.level
  if not show:
    logger.setLevel(logging.WARNING)
  try:
    yield
  finally:
    logger.setLevel(previous)


def steps(iterable: Iterable[Item], *, desc: str, total: int | None = None,
          initial: int = 0) -> Iterator[Item]:
  """`iterable`, reporting how far it has got: a bar on a terminal, else lines."""
  if not enabled():
    yield from iterable
    return
  if total is None and hasattr(iterable, "__len__"):
    total = initial + len(iterable)
  if sys.stderr.isatty():
    yield from tqdm(iterable, desc=desc, total=total, initial=initial, leave=False,
                    delay=_QUIET_S)
    return
  yield from _logged(iterable, desc, total, initial)


def _logged(iterable: Iterable[Item], desc: str, total: int | None,
            initial: int) -> Iterator[Item]:
  start = last = time.perf_counter()
  done, reported = initial, initial
  tenth = max(1, (total or 0) // 10)
  for item in iterable:
    yield item
    done += 1
    now = time.perf_counter()
    if now - start < _QUIET_S:
      continue
    if (done == total or now - last >= _LINE_EVERY_S
        or (done - reported >= tenth and now - last >= _QUIET_S)):
      logger.info("%s: %s (%.1f s)", desc, _fraction(done, total), now - start)
      reported, last = done, now


def _fraction(done: int, total: int | None) -> str:
  return f"{done}" if not total else f"{done}/{total} ({100 * done // total}%)"


@contextlib.contextmanager
def stage(name: str, timings: dict[str, float]) -> Iterator[None]:
  """Times a named stage into `timings[name]` (seconds) and reports its start and end."""
  logger.info("stage %s ...", name)
  start = time.perf_counter()
  yield
  timings[name] = round(time.perf_counter() - start, 3)
  logger.info("stage %s done in %.1f s", name, timings[name])


def summary(timings: dict[str, float]) -> str:
  """One line: every stage with its seconds, in the order they ran."""
  return "stages: " + " · ".join(f"{name} {seconds:.1f} s" for name, seconds in timings.items())
