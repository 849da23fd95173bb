"""What a MovieLens dataset parses into, and the errors raised on the way there.

Kept apart from the fetching and parsing code so that the many modules that only need the tables
(or the genre vocabulary) do not import the network stack.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np

GENRES: tuple[str, ...] = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


class DataFormatError(ValueError):
  """A data file is missing or malformed.

  The message names the file and, when one line is at fault, its 1-based number, e.g.
  ``"/data/ml-100k/u.data line 17: expected 4 tab-separated fields, got 3"``.

  Attributes:
    path: The offending file (or folder), as a string.
    line: 1-based line number, or None when the file as a whole is at fault.
    detail: What is wrong, without the location.
  """

  def __init__(self, path: str | os.PathLike[str], line: int | None, detail: str):
    self.path = os.fspath(path)
    self.line = line
    self.detail = detail
    where = self.path if line is None else f"{self.path} line {line}"
    super().__init__(f"{where}: {detail}")

  def __reduce__(self):
    # The default pickling would call __init__ with the formatted message only.
    return (type(self), (self.path, self.line, self.detail))


class DataUnavailableError(RuntimeError):
  """No source could provide the dataset.

  The message lists every source tried with its error, and says which files to place in which
  folder to install the data by hand.

  Attributes:
    attempts: ``(source, error)`` pairs, in the order they were tried.
  """

  def __init__(self, message: str, attempts: Sequence[tuple[str, str]] = ()):
    super().__init__(message)
    self.attempts = tuple(attempts)


class ChecksumError(ValueError):
  """Downloaded or extracted bytes do not have the expected digest."""


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: `==` on array fields is ambiguous
class MovieLensTables:
  """Ratings plus user and item side information, with users and items densely indexed.

  Dense order is the order of the user / item file sorted by raw id (numerically when every id
  is an integer), so dense index ``k`` corresponds to ``user_raw_ids[k]``.

  Attributes:
    name: Dataset name, e.g. ``"ml-100k"``.
    source_format: Layout the tables were read from: ``"grouplens"``, ``"grouplens-1m"`` or
      ``"recbole"``.
    user_ids: [R] int32 dense user index of each rating, in file order.
    item_ids: [R] int32 dense item index of each rating.
    ratings: [R] float32 rating values.
    timestamps: [R] int64 Unix seconds.
    user_raw_ids: [N] user ids as written in the files, in dense order.
    item_raw_ids: [M] item ids as written in the files, in dense order.
    age: [N] int32.
    gender: [N] int8, 0 = "M", 1 = "F".
    occupation: [N] int32 index into `occupation_vocab`.
    occupation_vocab: Sorted unique occupations of the user file.
    zip_code: [N] raw zip code strings (some are not numeric, e.g. Canadian codes).
    item_year: [M] int32 release year, 0 when unknown.
    item_genres: [M, 19] float32 multi-hot over `GENRES`.
  """

  name: str
  source_format: str
  user_ids: np.ndarray
  item_ids: np.ndarray
  ratings: np.ndarray
  timestamps: np.ndarray
  user_raw_ids: tuple[str, ...]
  item_raw_ids: tuple[str, ...]
  age: np.ndarray
  gender: np.ndarray
  occupation: np.ndarray
  occupation_vocab: tuple[str, ...]
  zip_code: tuple[str, ...]
  item_year: np.ndarray
  item_genres: np.ndarray

  @property
  def num_users(self) -> int:
    return len(self.user_raw_ids)

  @property
  def num_items(self) -> int:
    return len(self.item_raw_ids)

  @property
  def num_ratings(self) -> int:
    return int(self.ratings.shape[0])
