"""Readers for the official GroupLens layouts of MovieLens-100K and -1M (both latin-1).

* ML-100K, ``ml-100k.zip``: ``u.data`` (tab-separated ratings), ``u.user`` and ``u.item``
  (``|``-separated; 19 genre flags, the release date as ``01-Jan-1995``).
* ML-1M, ``ml-1m.zip``: ``ratings.dat``, ``users.dat``, ``movies.dat`` (``::``-separated; ages
  are the bucket codes 1, 18, 25, 35, 45, 50, 56, occupations the codes 0-20, genres ``|``-joined
  names, the release year in the title).

GroupLens item 267 has an empty release date; it reads as year 0 ("unknown").
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from pprsf_jax.data.parsing import (GENRE_INDEX, INT32, Files, Item, Ratings, User, assemble,
                                    data_lines, parse_gender, parse_id, parse_int, parse_rating,
                                    parse_timestamp, split_fields)
from pprsf_jax.data.tables import GENRES, DataFormatError, MovieLensTables

GROUPLENS_FILES = ("u.data", "u.user", "u.item")
ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")

_GROUPLENS_DATE_RE = re.compile(r"[0-9]{1,2}-[A-Za-z]{3}-([0-9]{4})")
_TITLE_YEAR_RE = re.compile(r".*\(([0-9]{4})\)\s*")


def _ratings(path: Path, separator: str = "\t") -> Ratings:
  """user, item, rating, timestamp per line: ML-100K's u.data (tabs), ML-1M's ratings.dat (::)."""
  ratings = Ratings()
  for number, line in data_lines(path, "latin-1"):
    user, item, value, timestamp = split_fields(line, separator, 4, path, number)
    ratings.append(
        number,
        parse_id(user, "user", path, number),
        parse_id(item, "item", path, number),
        parse_rating(value, path, number),
        parse_timestamp(timestamp, path, number),
    )
  return ratings


# ---- ML-100K --------------------------------------------------------------------------------


def _year_from_date(text: str) -> int:
  match = _GROUPLENS_DATE_RE.fullmatch(text)
  return int(match.group(1)) if match else 0  # empty or unrecognised: unknown


def _users(path: Path) -> list[User]:
  users = []
  for number, line in data_lines(path, "latin-1"):
    user, age, gender, occupation, zip_code = split_fields(line, "|", 5, path, number)
    users.append(
        User(
            number,
            parse_id(user, "user", path, number),
            parse_int(age, "age", path, number, INT32),
            parse_gender(gender, path, number),
            occupation,
            zip_code,
        )
    )
  return users


def _items(path: Path) -> list[Item]:
  items = []
  for number, line in data_lines(path, "latin-1"):
    # id | title | release date | video release date | IMDb URL | 19 genre flags
    fields = split_fields(line, "|", 5 + len(GENRES), path, number)
    flags = fields[5:]
    for genre, flag in zip(GENRES, flags):
      if flag not in ("0", "1"):
        raise DataFormatError(path, number, f"genre flag for {genre!r} is {flag!r}, not 0 or 1")
    items.append(
        Item(
            number,
            parse_id(fields[0], "item", path, number),
            _year_from_date(fields[2]),
            tuple(k for k, flag in enumerate(flags) if flag == "1"),
        )
    )
  return items


def read_grouplens(
    directory: str | os.PathLike[str], *, name: str | None = None
) -> MovieLensTables:
  """Parses a GroupLens ML-100K folder (``u.data``, ``u.user``, ``u.item``; latin-1).

  No checksums are checked: any files of this layout are accepted.

  Args:
    directory: Folder holding the three files.
    name: Dataset name to record; defaults to the folder's name.

  Returns:
    The parsed tables, ``source_format="grouplens"``.

  Raises:
    DataFormatError: A file is missing or malformed (the message names file and line).
  """
  folder = Path(directory)
  files = Files(*(folder / file for file in GROUPLENS_FILES))
  return assemble(
      name or folder.resolve().name,
      "grouplens",
      files,
      _users(files.users),
      _items(files.items),
      _ratings(files.ratings),
  )


# ---- ML-1M ----------------------------------------------------------------------------------


def _ml1m_users(path: Path) -> list[User]:
  users = []
  for number, line in data_lines(path, "latin-1"):
    user, gender, age, occupation, zip_code = split_fields(line, "::", 5, path, number)
    users.append(
        User(
            number,
            parse_id(user, "user", path, number),
            # The age bucket's lower bound (1 = under 18): the dataset buckets ages at the same
            # edges, so ML-100K's exact ages and ML-1M's codes encode alike.
            parse_int(age, "age", path, number, INT32),
            parse_gender(gender, path, number),
            parse_id(occupation, "occupation", path, number),
            zip_code,
        )
    )
  return users


def _ml1m_items(path: Path) -> list[Item]:
  items = []
  for number, line in data_lines(path, "latin-1"):
    item, title, genres = split_fields(line, "::", 3, path, number)
    indices = []
    for genre in genres.split("|"):
      if genre not in GENRE_INDEX:
        raise DataFormatError(path, number, f"unknown genre {genre!r}")
      indices.append(GENRE_INDEX[genre])
    year = _TITLE_YEAR_RE.fullmatch(title)
    items.append(Item(number, parse_id(item, "item", path, number),
                      int(year.group(1)) if year else 0, tuple(sorted(set(indices)))))
  return items


def read_grouplens_1m(
    directory: str | os.PathLike[str], *, name: str | None = None
) -> MovieLensTables:
  """Parses a GroupLens ML-1M folder (``ratings.dat``, ``users.dat``, ``movies.dat``; latin-1).

  No checksums are checked: any files of this layout are accepted.

  Raises:
    DataFormatError: A file is missing or malformed (the message names file and line).
  """
  folder = Path(directory)
  files = Files(*(folder / file for file in ML1M_FILES))
  return assemble(
      name or folder.resolve().name,
      "grouplens-1m",
      files,
      _ml1m_users(files.users),
      _ml1m_items(files.items),
      _ratings(files.ratings, "::"),
  )
