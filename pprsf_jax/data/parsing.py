"""What the MovieLens readers share: strict field parsers, line reading, and table assembly.

Each format module (`grouplens`, `recbole`) turns its files into `User` and `Item` rows and a
`Ratings` column set, with raw ids; `assemble` gives them dense ids and checks that the three
files agree. Every value is checked against the format as it is read (MovieLens ratings are whole
stars 1-5, timestamps Unix seconds >= 0): every error is a `DataFormatError` naming the file and
line at fault and what the format allows.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pprsf_jax.data.tables import GENRES, DataFormatError, MovieLensTables

GENRE_INDEX = {genre: i for i, genre in enumerate(GENRES)}

# ASCII digits only (int() would also take "١", "1_0" or " 1"); 19 digits bound int64 and keep
# int() clear of Python's limit on huge digit strings.
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?")
INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_GENDER_CODES = {"M": 0, "F": 1}
# Every MovieLens release rates in whole stars from 1 to 5 (ML-100K and ML-1M in GroupLens' files,
# and RecBole's ml-100k.inter, which declares them floats but holds the same integers).
RATING_RANGE = (1, 5)


# ---- Fields ---------------------------------------------------------------------------------


def parse_int(text: str, what: str, path: Path, line: int, bounds: tuple[int, int]) -> int:
  if _INT_RE.fullmatch(text) is None:
    raise DataFormatError(path, line, f"{what} {text!r} is not an integer")
  value = int(text)
  if not bounds[0] <= value <= bounds[1]:
    raise DataFormatError(path, line, f"{what} {value} is out of range")
  return value


def parse_rating(text: str, path: Path, line: int) -> float:
  """A MovieLens rating: whole stars in `RATING_RANGE` ("4", or "4.0" as RecBole may write it)."""
  value = float(text) if _FLOAT_RE.fullmatch(text) else math.nan
  if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
    raise DataFormatError(path, line, f"rating {text!r} is not a finite number")
  low, high = RATING_RANGE
  if not (value.is_integer() and low <= value <= high):
    raise DataFormatError(path, line, f"rating {text!r} is outside the MovieLens scale: allowed "
                          f"a whole number of stars from {low} to {high}")
  return value


def parse_timestamp(text: str, path: Path, line: int) -> int:
  """Unix seconds, a whole number >= 0 ("881250949", or "881250949.0" as RecBole writes it)."""
  if _INT_RE.fullmatch(text):
    value = parse_int(text, "timestamp", path, line, _INT64)
  else:
    # RecBole declares timestamps as floats; accept "881250949.0" but nothing fractional.
    number = float(text) if _FLOAT_RE.fullmatch(text) else math.nan
    if not (math.isfinite(number) and number.is_integer() and abs(number) < 2.0**63):
      raise DataFormatError(path, line, f"timestamp {text!r} is not a whole number of seconds")
    value = int(number)
  if value < 0:
    raise DataFormatError(path, line, f"timestamp {text!r} is negative: allowed Unix seconds "
                          ">= 0 (a whole number)")
  return value


def parse_gender(text: str, path: Path, line: int) -> int:
  code = _GENDER_CODES.get(text)
  if code is None:
    raise DataFormatError(path, line, f"gender {text!r} is neither 'M' nor 'F'")
  return code


def parse_id(text: str, what: str, path: Path, line: int) -> str:
  if not text:
    raise DataFormatError(path, line, f"empty {what} id")
  return text


# ---- Lines ----------------------------------------------------------------------------------


def data_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
  """Returns the non-blank lines of a file with their 1-based numbers.

  Raises:
    DataFormatError: The file is missing, unreadable, not valid text, or has no content.
  """
  if not path.is_file():
    raise DataFormatError(path, None, "file not found")
  try:
    raw = path.read_bytes()
  except OSError as err:
    raise DataFormatError(path, None, f"cannot be read ({err})") from err
  try:
    text = raw.decode(encoding)
  except UnicodeDecodeError as err:
    line = err.object.count(b"\n", 0, err.start) + 1  # err.object lacks any BOM
    label = "UTF-8" if encoding.startswith("utf-8") else encoding
    raise DataFormatError(path, line, f"not valid {label} text ({err.reason})") from None
  lines = []
  # split("\n") rather than splitlines(): the latter also breaks on \x1c, \x85 and friends.
  for number, line in enumerate(text.split("\n"), start=1):
    line = line.removesuffix("\r")
    if line.strip():
      lines.append((number, line))
  if not lines:
    raise DataFormatError(path, None, "file is empty")
  return lines


def split_fields(line: str, separator: str, expected: int, path: Path, number: int) -> list[str]:
  fields = line.split(separator)
  if len(fields) != expected:
    kind = "tab" if separator == "\t" else repr(separator)
    raise DataFormatError(
        path, number, f"expected {expected} {kind}-separated fields, got {len(fields)}"
    )
  return fields


# ---- Rows -----------------------------------------------------------------------------------


class User(NamedTuple):
  line: int
  raw_id: str
  age: int
  gender: int
  occupation: str
  zip_code: str


class Item(NamedTuple):
  line: int
  raw_id: str
  year: int
  genres: tuple[int, ...]  # indices into GENRES


@dataclasses.dataclass
class Ratings:
  """Rating rows in file order, ids still raw."""

  lines: list[int] = dataclasses.field(default_factory=list)
  users: list[str] = dataclasses.field(default_factory=list)
  items: list[str] = dataclasses.field(default_factory=list)
  values: list[float] = dataclasses.field(default_factory=list)
  timestamps: list[int] = dataclasses.field(default_factory=list)

  def append(self, line: int, user: str, item: str, value: float, timestamp: int) -> None:
    self.lines.append(line)
    self.users.append(user)
    self.items.append(item)
    self.values.append(value)
    self.timestamps.append(timestamp)


class Files(NamedTuple):
  ratings: Path
  users: Path
  items: Path


# ---- Assembly -------------------------------------------------------------------------------


def _dense_order(rows: Sequence[User] | Sequence[Item], path: Path, what: str) -> list:
  """Sorts user or item rows by raw id (numerically when all are integers); rejects repeats."""
  first_line: dict[str, int] = {}
  for row in rows:
    previous = first_line.setdefault(row.raw_id, row.line)
    if previous != row.line:
      raise DataFormatError(
          path, row.line, f"{what} id {row.raw_id!r} repeated (lines {previous} and {row.line})"
      )
  if all(_INT_RE.fullmatch(row.raw_id) for row in rows):
    # The raw string breaks ties between spellings of one number, e.g. "7" and "07".
    return sorted(rows, key=lambda row: (int(row.raw_id), row.raw_id))
  return sorted(rows, key=lambda row: row.raw_id)


def _dense_ids(
    raw_ids: Sequence[str], lines: Sequence[int], rows: Sequence[User] | Sequence[Item],
    ratings_path: Path, listed_in: Path, what: str,
) -> np.ndarray:
  """Maps the raw ids of the rating rows to dense indices into `rows`."""
  index = {row.raw_id: k for k, row in enumerate(rows)}
  dense = []
  for line, raw in zip(lines, raw_ids):
    k = index.get(raw)
    if k is None:
      raise DataFormatError(
          ratings_path, line, f"{what} id {raw!r} does not appear in {listed_in.name}"
      )
    dense.append(k)
  return np.asarray(dense, dtype=np.int32)


def assemble(
    name: str,
    source_format: str,
    files: Files,
    users: list[User],
    items: list[Item],
    ratings: Ratings,
) -> MovieLensTables:
  """Densely indexes parsed rows into tables; rejects repeated ids, unknown ids, double ratings."""
  users = _dense_order(users, files.users, "user")
  items = _dense_order(items, files.items, "item")
  user_ids = _dense_ids(ratings.users, ratings.lines, users, files.ratings, files.users, "user")
  item_ids = _dense_ids(ratings.items, ratings.lines, items, files.ratings, files.items, "item")

  first_line: dict[tuple[int, int], int] = {}
  for line, user, item in zip(ratings.lines, user_ids.tolist(), item_ids.tolist()):
    previous = first_line.setdefault((user, item), line)
    if previous != line:
      raise DataFormatError(
          files.ratings,
          line,
          f"duplicate rating of item {items[item].raw_id!r} by user {users[user].raw_id!r}"
          f" (lines {previous} and {line})",
      )

  occupation_vocab = tuple(sorted({u.occupation for u in users}))
  occupation_index = {occupation: k for k, occupation in enumerate(occupation_vocab)}
  item_genres = np.zeros((len(items), len(GENRES)), dtype=np.float32)
  for k, item in enumerate(items):
    item_genres[k, list(item.genres)] = 1.0

  return MovieLensTables(
      name=name,
      source_format=source_format,
      user_ids=user_ids,
      item_ids=item_ids,
      ratings=np.asarray(ratings.values, dtype=np.float32),
      timestamps=np.asarray(ratings.timestamps, dtype=np.int64),
      user_raw_ids=tuple(u.raw_id for u in users),
      item_raw_ids=tuple(i.raw_id for i in items),
      age=np.asarray([u.age for u in users], dtype=np.int32),
      gender=np.asarray([u.gender for u in users], dtype=np.int8),
      occupation=np.asarray([occupation_index[u.occupation] for u in users], dtype=np.int32),
      occupation_vocab=occupation_vocab,
      zip_code=tuple(u.zip_code for u in users),
      item_year=np.asarray([i.year for i in items], dtype=np.int32),
      item_genres=item_genres,
  )
