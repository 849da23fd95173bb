"""MovieLens-100K and -1M: the public entry points, `load_movielens` and `fetch_movielens`.

`load_movielens` parses a folder the user brings (without checksums), or fetches a named dataset
into the verified cache and parses that. The work is done in the modules beside this one:

* `tables`: what the data parses into (`MovieLensTables`, `GENRES`) and the errors.
* `fetch`: sources, download (pooch), checksums and the cache (`fetch_movielens`).
* `grouplens`: the official GroupLens layouts, ML-100K (``u.data``, ``u.user``, ``u.item``) and
  ML-1M (``ratings.dat``, ``users.dat``, ``movies.dat``).
* `recbole`: RecBole atomic files (``<name>.inter``, ``<name>.user``, ``<name>.item``), the
  layout of ML-100K inside the ``recbole`` wheel.
* `parsing`: the strict field parsers and the assembly all readers share.

Every layout parses to the same `MovieLensTables`.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from pprsf_jax.data import fetch
from pprsf_jax.data.fetch import fetch_movielens
from pprsf_jax.data.grouplens import (GROUPLENS_FILES, ML1M_FILES, read_grouplens,
                                      read_grouplens_1m)
from pprsf_jax.data.recbole import read_recbole
from pprsf_jax.data.tables import GENRES, DataFormatError, DataUnavailableError, MovieLensTables

# The public face of the data stage: the entry points and what a caller needs beside them.
# Modules of this package import the tables from `tables`, which does not pull in the network.
__all__ = [
    "GENRES",
    "DataFormatError",
    "DataUnavailableError",
    "MovieLensTables",
    "fetch_movielens",
    "load_movielens",
]

logger = logging.getLogger(__name__)

# ML-100K's 2 MB parse in about a second: from this size on, parsing is announced at INFO.
_SLOW_PARSE_BYTES = 1 << 20


def _reader(folder: Path, prefix: str = "") -> Callable[..., MovieLensTables]:
  """Picks the reader for the layout of `folder`'s files (RecBole's wherever `prefix` is set)."""
  if prefix:
    return functools.partial(read_recbole, prefix=prefix)
  if all((folder / file).is_file() for file in GROUPLENS_FILES):
    return read_grouplens
  if all((folder / file).is_file() for file in ML1M_FILES):
    return read_grouplens_1m
  if any(folder.glob("*.inter")):
    return read_recbole
  # Some files of a layout but not all: its reader reports the missing one by name.
  if any((folder / file).is_file() for file in GROUPLENS_FILES):
    return read_grouplens
  if any((folder / file).is_file() for file in ML1M_FILES):
    return read_grouplens_1m
  raise DataFormatError(
      folder,
      None,
      "holds neither GroupLens files (u.data, u.user, u.item, or ML-1M's ratings.dat,"
      " users.dat, movies.dat) nor RecBole files (<name>.inter, <name>.user, <name>.item)",
  )


def _read_folder(folder: Path, name: str | None = None, prefix: str = "") -> MovieLensTables:
  reader = _reader(folder, prefix)
  size = sum(path.stat().st_size for path in folder.iterdir() if path.is_file())
  # Decided by size, before parsing, so that the line comes while the wait does, not after it.
  level = logging.INFO if size >= _SLOW_PARSE_BYTES else logging.DEBUG
  logger.log(level, "parsing %s (%.1f MB)", folder, size / 1e6)
  start = time.perf_counter()
  tables = reader(folder, name=name)
  logger.log(level, "parsed %s: %d ratings by %d users of %d items in %.1f s", tables.name,
             tables.num_ratings, tables.num_users, tables.num_items, time.perf_counter() - start)
  return tables


def load_movielens(
    source: str | os.PathLike[str] = "ml-100k", cache_dir: str | os.PathLike[str] | None = None,
    *, prefix: str = "",
) -> MovieLensTables:
  """Loads MovieLens tables from a folder or, given a dataset name, from the verified cache.

  Args:
    source: An existing folder (GroupLens or RecBole layout, detected; read without checksum
      checks, so users may bring their own files), or a dataset name such as ``"ml-100k"``,
      fetched with `fetch_movielens`.
    cache_dir: Cache root for fetching; defaults to `fetch.default_cache_dir()`.
    prefix: In a folder, the stem of the RecBole files to read (``<prefix>.inter``, ...; the
      config's ``data.prefix``); "" reads the folder's only layout. Not for a dataset name.

  Returns:
    The parsed tables.

  Raises:
    DataFormatError: A file is missing or malformed.
    DataUnavailableError: `source` is neither a folder nor a known dataset name, or the dataset
      had to be fetched and no source worked; or `prefix` is set for a dataset name.
  """
  folder = Path(source)
  if folder.is_dir():
    return _read_folder(folder, prefix=prefix)
  if isinstance(source, str) and source in fetch.DATASET_SOURCES:
    if prefix:  # a fetched dataset comes in the layout its source has: nothing to choose
      raise DataUnavailableError(
          f"data.prefix={prefix!r} chooses RecBole files in a folder, but data.source={source!r} "
          "is a dataset name; leave data.prefix empty")
    return _read_folder(fetch_movielens(source, cache_dir), name=source)
  raise DataUnavailableError(
      f"{os.fspath(source)!r} is neither an existing folder nor a known dataset"
      f" ({', '.join(sorted(fetch.DATASET_SOURCES))})"
  )
