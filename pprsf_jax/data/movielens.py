"""MovieLens-100K and -1M: fetch, cache, verify and parse into dense numpy arrays.

Three on-disk layouts are understood:

* GroupLens, the official ``ml-100k.zip``: ``u.data``, ``u.user``, ``u.item`` (latin-1).
* RecBole atomic files, as shipped inside the ``recbole`` wheel on PyPI: ``<name>.inter``,
  ``<name>.user``, ``<name>.item`` (UTF-8, tab-separated, ``name:type`` header line).
* GroupLens ML-1M, the official ``ml-1m.zip``: ``ratings.dat``, ``users.dat``, ``movies.dat``
  (latin-1, ``::``-separated; ages are the bucket codes 1, 18, 25, 35, 45, 50, 56, occupations
  the codes 0-20, genres ``|``-joined names, the release year in the title).

All parse to the same `MovieLensTables`. `fetch_movielens` finds verified files in the cache or
downloads them (GroupLens first, the RecBole wheel where GroupLens cannot be reached);
`load_movielens` fetches and parses, or parses a folder the user brings (without checksums).

Known quirks of the real files (the parsers accept them):

* RecBole ``release_year`` is derived from the title, not GroupLens' release date, so a few years
  differ between the layouts; item 267 has ``unkonwn`` (sic) and item 1412 has ``V``. Anything
  that is not a year reads as 0 ("unknown"), as does GroupLens item 267's empty release date.
* The RecBole item file is UTF-8 (accented titles), GroupLens files are latin-1.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import html.parser
import http.client
import io
import math
import os
import re
import tempfile
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, TypedDict

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
_GENRE_INDEX = {genre: i for i, genre in enumerate(GENRES)}

GROUPLENS_FILES = ("u.data", "u.user", "u.item")
ML1M_FILES = ("ratings.dat", "users.dat", "movies.dat")
CACHE_ENV_VAR = "PPRSF_DATA_DIR"
DOWNLOAD_TIMEOUT_S = 30.0
_USER_AGENT = "pprsf_jax-movielens/0.1 (Python urllib)"
# Written next to extracted files: their SHA-256, recorded once the archive itself verified.
# It stands in for per-file digests where none are published (the GroupLens files).
_MANIFEST = "SHA256SUMS"


class SourceSpec(TypedDict):
  """One way to obtain a dataset: an archive whose members are the data files.

  Attributes:
    label: Human-readable name used in error messages.
    format: Layout of the extracted files, ``"grouplens"``, ``"grouplens-1m"`` or ``"recbole"``.
    subdir: Cache sub-folder the files are extracted into.
    archive: File name of the archive (also where a hand-placed copy is looked for).
    index_url: A PyPI "simple" index page to look the archive up on first, or None.
    urls: Known download URLs, tried in order after the index.
    archive_digest: ``(algorithm, hex digest)`` of the whole archive.
    members: Local file name -> path of that member inside the archive.
    file_sha256: Local file name -> SHA-256 of the extracted file, where known.
  """

  label: str
  format: str
  subdir: str
  archive: str
  index_url: str | None
  urls: tuple[str, ...]
  archive_digest: tuple[str, str]
  members: dict[str, str]
  file_sha256: dict[str, str]


# Every URL and checksum lives here, keyed by dataset name, sources in order of preference.
# Another dataset (ML-1M, say) is one more entry, plus a reader for its layout if it is new.
DATASET_SOURCES: dict[str, tuple[SourceSpec, ...]] = {
    "ml-100k": (
        {
            "label": "GroupLens archive",
            "format": "grouplens",
            "subdir": "ml-100k",
            "archive": "ml-100k.zip",
            "index_url": None,
            "urls": ("https://files.grouplens.org/datasets/movielens/ml-100k.zip",),
            "archive_digest": ("md5", "0e33842e24a9c977be4e0107933c0723"),
            "members": {name: f"ml-100k/{name}" for name in GROUPLENS_FILES},
            "file_sha256": {},  # not published; the manifest is written after the md5 check
        },
        {
            "label": "recbole 1.2.1 wheel on PyPI",
            "format": "recbole",
            "subdir": "ml-100k-recbole",
            "archive": "recbole-1.2.1-py3-none-any.whl",
            "index_url": "https://pypi.org/simple/recbole/",
            "urls": (
                "https://files.pythonhosted.org/packages/ab/fe/"
                "7d606cb7cd2b166a36b100cb9435d21014ceee16c192d972deb0976967a8/"
                "recbole-1.2.1-py3-none-any.whl",
            ),
            "archive_digest": (
                "sha256",
                "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
            ),
            "members": {
                f"ml-100k.{ext}": f"recbole/dataset_example/ml-100k/ml-100k.{ext}"
                for ext in ("inter", "user", "item")
            },
            "file_sha256": {
                "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
                "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
                "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
            },
        },
    ),
    "ml-1m": (
        {
            "label": "GroupLens archive",
            "format": "grouplens-1m",
            "subdir": "ml-1m",
            "archive": "ml-1m.zip",
            "index_url": None,
            "urls": ("https://files.grouplens.org/datasets/movielens/ml-1m.zip",),
            # GroupLens publishes ml-1m.zip.md5 beside the archive.
            "archive_digest": ("md5", "c4d9eecfca2ab87c1945afe126590906"),
            "members": {name: f"ml-1m/{name}" for name in ML1M_FILES},
            "file_sha256": {},  # not published; the manifest is written after the md5 check
        },
    ),
}


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
    source_format: Layout the tables were read from: ``"grouplens"``, ``"grouplens-1m"``, ``"recbole"``.
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


# --------------------------------------------------------------------------------------------
# Field parsing
# --------------------------------------------------------------------------------------------

# ASCII digits only (int() would also take "١", "1_0" or " 1"); 19 digits bound int64 and keep
# int() clear of Python's limit on huge digit strings.
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_FLOAT_RE = re.compile(r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]{1,4})?")
_GROUPLENS_DATE_RE = re.compile(r"[0-9]{1,2}-[A-Za-z]{3}-([0-9]{4})")
_YEAR_RE = re.compile(r"[0-9]{1,4}")
_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_GENDER_CODES = {"M": 0, "F": 1}


def _parse_int(text: str, what: str, path: Path, line: int, bounds: tuple[int, int]) -> int:
  if _INT_RE.fullmatch(text) is None:
    raise DataFormatError(path, line, f"{what} {text!r} is not an integer")
  value = int(text)
  if not bounds[0] <= value <= bounds[1]:
    raise DataFormatError(path, line, f"{what} {value} is out of range")
  return value


def _parse_rating(text: str, path: Path, line: int) -> float:
  value = float(text) if _FLOAT_RE.fullmatch(text) else math.nan
  if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
    raise DataFormatError(path, line, f"rating {text!r} is not a finite number")
  return value


def _parse_timestamp(text: str, path: Path, line: int) -> int:
  if _INT_RE.fullmatch(text):
    return _parse_int(text, "timestamp", path, line, _INT64)
  # RecBole declares timestamps as floats; accept "881250949.0" but nothing fractional.
  value = float(text) if _FLOAT_RE.fullmatch(text) else math.nan
  if not (math.isfinite(value) and value.is_integer() and abs(value) < 2.0**63):
    raise DataFormatError(path, line, f"timestamp {text!r} is not a whole number of seconds")
  return int(value)


def _parse_gender(text: str, path: Path, line: int) -> int:
  code = _GENDER_CODES.get(text)
  if code is None:
    raise DataFormatError(path, line, f"gender {text!r} is neither 'M' nor 'F'")
  return code


def _parse_id(text: str, what: str, path: Path, line: int) -> str:
  if not text:
    raise DataFormatError(path, line, f"empty {what} id")
  return text


def _year_from_grouplens_date(text: str) -> int:
  match = _GROUPLENS_DATE_RE.fullmatch(text)
  return int(match.group(1)) if match else 0  # empty or unrecognised: unknown


def _year_from_recbole(text: str) -> int:
  return int(text) if _YEAR_RE.fullmatch(text) else 0  # "", "unkonwn", "V": unknown


# --------------------------------------------------------------------------------------------
# Reading files
# --------------------------------------------------------------------------------------------


def _data_lines(path: Path, encoding: str) -> list[tuple[int, str]]:
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


def _split(line: str, separator: str, expected: int, path: Path, number: int) -> list[str]:
  fields = line.split(separator)
  if len(fields) != expected:
    kind = "tab" if separator == "\t" else repr(separator)
    raise DataFormatError(
        path, number, f"expected {expected} {kind}-separated fields, got {len(fields)}"
    )
  return fields


class _User(NamedTuple):
  line: int
  raw_id: str
  age: int
  gender: int
  occupation: str
  zip_code: str


class _Item(NamedTuple):
  line: int
  raw_id: str
  year: int
  genres: tuple[int, ...]  # indices into GENRES


@dataclasses.dataclass
class _Ratings:
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


class _Files(NamedTuple):
  ratings: Path
  users: Path
  items: Path


# ---- GroupLens ------------------------------------------------------------------------------


def _grouplens_ratings(path: Path, separator: str = "\t") -> _Ratings:
  """user, item, rating, timestamp per line: ML-100K's u.data (tabs), ML-1M's ratings.dat (::)."""
  ratings = _Ratings()
  for number, line in _data_lines(path, "latin-1"):
    user, item, value, timestamp = _split(line, separator, 4, path, number)
    ratings.append(
        number,
        _parse_id(user, "user", path, number),
        _parse_id(item, "item", path, number),
        _parse_rating(value, path, number),
        _parse_timestamp(timestamp, path, number),
    )
  return ratings


def _grouplens_users(path: Path) -> list[_User]:
  users = []
  for number, line in _data_lines(path, "latin-1"):
    user, age, gender, occupation, zip_code = _split(line, "|", 5, path, number)
    users.append(
        _User(
            number,
            _parse_id(user, "user", path, number),
            _parse_int(age, "age", path, number, _INT32),
            _parse_gender(gender, path, number),
            occupation,
            zip_code,
        )
    )
  return users


def _grouplens_items(path: Path) -> list[_Item]:
  items = []
  for number, line in _data_lines(path, "latin-1"):
    # id | title | release date | video release date | IMDb URL | 19 genre flags
    fields = _split(line, "|", 5 + len(GENRES), path, number)
    flags = fields[5:]
    for genre, flag in zip(GENRES, flags):
      if flag not in ("0", "1"):
        raise DataFormatError(path, number, f"genre flag for {genre!r} is {flag!r}, not 0 or 1")
    items.append(
        _Item(
            number,
            _parse_id(fields[0], "item", path, number),
            _year_from_grouplens_date(fields[2]),
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
  files = _Files(folder / "u.data", folder / "u.user", folder / "u.item")
  return _assemble(
      name or folder.resolve().name,
      "grouplens",
      files,
      _grouplens_users(files.users),
      _grouplens_items(files.items),
      _grouplens_ratings(files.ratings),
  )


# ---- GroupLens ML-1M ------------------------------------------------------------------------

_TITLE_YEAR_RE = re.compile(r".*\(([0-9]{4})\)\s*")


def _ml1m_users(path: Path) -> list[_User]:
  users = []
  for number, line in _data_lines(path, "latin-1"):
    user, gender, age, occupation, zip_code = _split(line, "::", 5, path, number)
    users.append(
        _User(
            number,
            _parse_id(user, "user", path, number),
            # The age bucket's lower bound (1 = under 18): the dataset buckets ages at the same
            # edges, so ML-100K's exact ages and ML-1M's codes encode alike.
            _parse_int(age, "age", path, number, _INT32),
            _parse_gender(gender, path, number),
            _parse_id(occupation, "occupation", path, number),
            zip_code,
        )
    )
  return users


def _ml1m_items(path: Path) -> list[_Item]:
  items = []
  for number, line in _data_lines(path, "latin-1"):
    item, title, genres = _split(line, "::", 3, path, number)
    indices = []
    for genre in genres.split("|"):
      if genre not in _GENRE_INDEX:
        raise DataFormatError(path, number, f"unknown genre {genre!r}")
      indices.append(_GENRE_INDEX[genre])
    year = _TITLE_YEAR_RE.fullmatch(title)
    items.append(_Item(number, _parse_id(item, "item", path, number),
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
  files = _Files(folder / "ratings.dat", folder / "users.dat", folder / "movies.dat")
  return _assemble(
      name or folder.resolve().name,
      "grouplens-1m",
      files,
      _ml1m_users(files.users),
      _ml1m_items(files.items),
      _grouplens_ratings(files.ratings, "::"),
  )


# ---- RecBole --------------------------------------------------------------------------------

_RECBOLE_COLUMNS = {
    "inter": ("user_id", "item_id", "rating", "timestamp"),
    "user": ("user_id", "age", "gender", "occupation", "zip_code"),
    "item": ("item_id", "release_year", "class"),
}


def _atomic_rows(path: Path, required: Sequence[str]) -> list[tuple[int, list[str]]]:
  """Reads a RecBole atomic file into rows holding just the `required` columns, in that order.

  Raises:
    DataFormatError: Missing or malformed file, header lacking a required column, a row whose
      field count differs from the header's.
  """
  lines = _data_lines(path, "utf-8-sig")
  header_line, header = lines[0]
  # "user_id:token" -> "user_id"; the declared type is not needed to read the value.
  names = [column.split(":", 1)[0].strip() for column in header.split("\t")]
  position: dict[str, int] = {}
  for k, column in enumerate(names):
    if column in position:
      raise DataFormatError(path, header_line, f"header repeats column {column!r}")
    position[column] = k
  missing = [column for column in required if column not in position]
  if missing:
    raise DataFormatError(
        path, header_line, f"header lacks column(s) {', '.join(missing)} (found: {header!r})"
    )
  picks = [position[column] for column in required]
  rows = []
  for number, line in lines[1:]:
    fields = _split(line, "\t", len(names), path, number)
    rows.append((number, [fields[k] for k in picks]))
  if not rows:
    raise DataFormatError(path, None, "file has a header but no data rows")
  return rows


def _recbole_ratings(path: Path) -> _Ratings:
  ratings = _Ratings()
  for number, (user, item, value, timestamp) in _atomic_rows(path, _RECBOLE_COLUMNS["inter"]):
    ratings.append(
        number,
        _parse_id(user, "user", path, number),
        _parse_id(item, "item", path, number),
        _parse_rating(value, path, number),
        _parse_timestamp(timestamp, path, number),
    )
  return ratings


def _recbole_users(path: Path) -> list[_User]:
  return [
      _User(
          number,
          _parse_id(user, "user", path, number),
          _parse_int(age, "age", path, number, _INT32),
          _parse_gender(gender, path, number),
          occupation,
          zip_code,
      )
      for number, (user, age, gender, occupation, zip_code) in _atomic_rows(
          path, _RECBOLE_COLUMNS["user"]
      )
  ]


def _recbole_items(path: Path) -> list[_Item]:
  items = []
  for number, (item, year, classes) in _atomic_rows(path, _RECBOLE_COLUMNS["item"]):
    genres = []
    for genre in classes.split(" "):
      if not genre:
        continue  # tolerate doubled or trailing spaces
      if genre not in _GENRE_INDEX:
        raise DataFormatError(path, number, f"unknown genre {genre!r} (expected one of GENRES)")
      genres.append(_GENRE_INDEX[genre])
    items.append(
        _Item(
            number,
            _parse_id(item, "item", path, number),
            _year_from_recbole(year),
            tuple(sorted(set(genres))),
        )
    )
  return items


def _recbole_prefix(folder: Path) -> str:
  candidates = sorted(path.stem for path in folder.glob("*.inter") if path.is_file())
  if len(candidates) != 1:
    found = ", ".join(f"{stem}.inter" for stem in candidates) or "none"
    raise DataFormatError(
        folder, None, f"expected exactly one RecBole *.inter file, found {found}; pass prefix="
    )
  return candidates[0]


def read_recbole(
    directory: str | os.PathLike[str], prefix: str | None = None, *, name: str | None = None
) -> MovieLensTables:
  """Parses RecBole atomic files ``<prefix>.inter``, ``<prefix>.user``, ``<prefix>.item``.

  Each file is UTF-8, tab-separated, with a ``name:type`` header; columns may come in any
  order and extra columns are ignored. No checksums are checked.

  Args:
    directory: Folder holding the three files.
    prefix: File name stem; by default that of the folder's only ``*.inter`` file.
    name: Dataset name to record; defaults to `prefix`.

  Returns:
    The parsed tables, ``source_format="recbole"``.

  Raises:
    DataFormatError: A file is missing or malformed (the message names file and line).
  """
  folder = Path(directory)
  if prefix is None:
    prefix = _recbole_prefix(folder)
  files = _Files(folder / f"{prefix}.inter", folder / f"{prefix}.user", folder / f"{prefix}.item")
  return _assemble(
      name or prefix,
      "recbole",
      files,
      _recbole_users(files.users),
      _recbole_items(files.items),
      _recbole_ratings(files.ratings),
  )


# ---- Assembly -------------------------------------------------------------------------------


def _dense_order(rows: Sequence[_User] | Sequence[_Item], path: Path, what: str) -> list:
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
    raw_ids: Sequence[str], lines: Sequence[int], rows: Sequence[_User] | Sequence[_Item],
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


def _assemble(
    name: str,
    source_format: str,
    files: _Files,
    users: list[_User],
    items: list[_Item],
    ratings: _Ratings,
) -> MovieLensTables:
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


# --------------------------------------------------------------------------------------------
# Fetching and caching
# --------------------------------------------------------------------------------------------

# What a failed source may raise; anything else is a bug and propagates.
_FETCH_ERRORS = (OSError, ValueError, http.client.HTTPException, zipfile.BadZipFile, zlib.error)


def default_cache_dir() -> Path:
  """Returns ``$PPRSF_DATA_DIR`` if set, else ``~/.cache/pprsf_jax``."""
  configured = os.environ.get(CACHE_ENV_VAR)
  if configured:
    return Path(configured).expanduser()
  return Path.home() / ".cache" / "pprsf_jax"


def _download(url: str, timeout: float = DOWNLOAD_TIMEOUT_S) -> bytes:
  """Returns the body at `url`. All network access of this module goes through here."""
  request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
  with urllib.request.urlopen(request, timeout=timeout) as response:
    # http.client raises IncompleteRead if the body is shorter than Content-Length.
    return response.read()


def _hexdigest(data: bytes, algorithm: str) -> str:
  return hashlib.new(algorithm, data, usedforsecurity=False).hexdigest()


def _verify(data: bytes, algorithm: str, expected: str, what: str) -> None:
  actual = _hexdigest(data, algorithm)
  if actual != expected.lower():
    raise ChecksumError(f"{what}: {algorithm} mismatch, expected {expected}, got {actual}")


def _atomic_write(path: Path, data: bytes) -> None:
  """Writes via a temporary file and os.replace, so `path` is either absent or complete."""
  path.parent.mkdir(parents=True, exist_ok=True)
  handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
  try:
    with os.fdopen(handle, "wb") as stream:
      stream.write(data)
      stream.flush()
      os.fsync(stream.fileno())
    os.chmod(temporary, 0o644)  # mkstemp makes files private; cached data need not be
    os.replace(temporary, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(temporary)
    raise


def _read_manifest(folder: Path) -> dict[str, str]:
  try:
    text = (folder / _MANIFEST).read_text(encoding="utf-8")
  except (OSError, UnicodeDecodeError):
    return {}
  digests = {}
  for line in text.splitlines():
    digest, _, name = line.partition("  ")
    if name and re.fullmatch(r"[0-9a-f]{64}", digest):
      digests[name] = digest
  return digests


def _cache_problem(folder: Path, source: SourceSpec) -> str | None:
  """Returns why the cached copy of `source` is not usable, or None when every file verifies."""
  expected = {**_read_manifest(folder), **source["file_sha256"]}  # the table wins
  for name in source["members"]:
    path = folder / name
    if not path.is_file():
      return f"{name} is missing"
    if name not in expected:
      return f"{name} has no recorded checksum"
    try:
      actual = _hexdigest(path.read_bytes(), "sha256")
    except OSError as err:
      return f"{name} cannot be read ({err})"
    if actual != expected[name].lower():
      return f"{name}: sha256 mismatch, expected {expected[name]}, got {actual}"
  return None


def _install(archive: bytes, origin: str, source: SourceSpec, cache: Path) -> Path:
  """Verifies an archive, extracts the data files into the cache, returns their folder.

  Everything is verified in memory before the first write, so a bad archive leaves nothing.
  """
  algorithm, expected = source["archive_digest"]
  _verify(archive, algorithm, expected, origin)
  payloads = {}
  with zipfile.ZipFile(io.BytesIO(archive)) as bundle:
    for name, member in source["members"].items():
      try:
        data = bundle.read(member)
      except KeyError:
        raise zipfile.BadZipFile(f"{origin}: no member {member}") from None
      if name in source["file_sha256"]:
        _verify(data, "sha256", source["file_sha256"][name], f"{member} in {origin}")
      payloads[name] = data
  folder = cache / source["subdir"]
  for name, data in payloads.items():
    _atomic_write(folder / name, data)
  # Written last: an interrupted install leaves files that do not verify, so it is redone.
  manifest = "".join(f"{_hexdigest(data, 'sha256')}  {name}\n" for name, data in payloads.items())
  _atomic_write(folder / _MANIFEST, manifest.encode("utf-8"))
  return folder


class _LinkCollector(html.parser.HTMLParser):
  def __init__(self):
    super().__init__()
    self.hrefs: list[str] = []

  def handle_starttag(self, tag, attrs):
    if tag == "a":
      self.hrefs.extend(value for key, value in attrs if key == "href" and value)


def _find_archive_link(page: str, filename: str, base_url: str) -> str | None:
  """Returns the absolute URL (fragment dropped) of the link to `filename` on an index page."""
  collector = _LinkCollector()
  collector.feed(page)
  for href in collector.hrefs:
    url = urllib.parse.urldefrag(urllib.parse.urljoin(base_url, href)).url
    if urllib.parse.unquote(urllib.parse.urlsplit(url).path).rsplit("/", 1)[-1] == filename:
      return url
  return None


def _describe(err: BaseException) -> str:
  return f"{type(err).__name__}: {err}"


def _archive_urls(source: SourceSpec, attempts: list[tuple[str, str]]) -> list[str]:
  """Download URLs for `source`: the package index's link first (if any), then the known ones."""
  urls = []
  index_url = source["index_url"]
  if index_url:
    where = f"package index {index_url}"
    try:
      page = _download(index_url, DOWNLOAD_TIMEOUT_S).decode("utf-8", errors="replace")
      link = _find_archive_link(page, source["archive"], index_url)
      if link is None:
        attempts.append((where, f"no link to {source['archive']}"))
      else:
        urls.append(link)
    except _FETCH_ERRORS as err:
      attempts.append((where, _describe(err)))
  urls.extend(url for url in source["urls"] if url not in urls)
  return urls


def _manual_instructions(name: str, sources: Sequence[SourceSpec], cache: Path) -> str:
  lines = [f"To install {name} by hand, put one of these in place and call load_movielens again:"]
  for source in sources:
    members = ", ".join(source["members"])
    inside = os.path.dirname(next(iter(source["members"].values()))) or "the top level"
    folder = cache / source["subdir"]
    lines.append(
        f"  - {source['format']}: the archive {source['archive']} into {cache}{os.sep}"
        f" (from {' or '.join(source['urls'])}; {source['archive_digest'][0]}"
        f" {source['archive_digest'][1]}),"
    )
    lines.append(f"    or its files {members} (under {inside} in it) into {folder}{os.sep}")
    if not source["file_sha256"]:
      # Without published digests these files cannot be verified, so they are not picked up.
      lines.append(f"    and call load_movielens({str(folder)!r}) on that folder"
                   f" (with `pprsf run`: data.source={folder})")
  lines.append(
      "Any folder holding u.data, u.user, u.item (GroupLens ML-100K), ratings.dat, users.dat,"
      " movies.dat (GroupLens ML-1M) or <name>.inter, <name>.user, <name>.item (RecBole) can"
      " also be passed to load_movielens(path), which reads it without checksum checks."
  )
  return "\n".join(lines)


def fetch_movielens(name: str = "ml-100k", cache_dir: str | os.PathLike[str] | None = None) -> Path:
  """Returns a folder of verified data files for `name`, downloading only if the cache lacks it.

  Sources, in order: verified files already in the cache (either layout); an archive placed in
  the cache folder by hand; each source of `DATASET_SOURCES[name]` over the network (for
  ML-100K the GroupLens archive, then the ``recbole`` wheel on PyPI, looked up on PyPI's simple
  index with a known URL as fallback). Archives are checked against pinned digests, extracted
  files too where digests are known; nothing unverified is written and every write is atomic.

  Args:
    name: Dataset name, a key of `DATASET_SOURCES`.
    cache_dir: Cache root; defaults to `default_cache_dir()`.

  Returns:
    The folder holding the files, in the layout of the source that provided them.

  Raises:
    ValueError: `name` is not a known dataset.
    DataUnavailableError: No source worked; the message lists each with its error and explains
      where to place the files by hand.
  """
  if name not in DATASET_SOURCES:
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASET_SOURCES))}")
  sources = DATASET_SOURCES[name]
  cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
  attempts: list[tuple[str, str]] = []

  for source in sources:
    folder = cache / source["subdir"]
    problem = _cache_problem(folder, source)
    if problem is None:
      return folder
    if folder.exists():
      attempts.append((f"cached {folder}", problem))

  for source in sources:
    local = cache / source["archive"]
    if local.is_file():
      try:
        return _install(local.read_bytes(), str(local), source, cache)
      except _FETCH_ERRORS as err:
        attempts.append((f"{source['label']} {local}", _describe(err)))

  for source in sources:
    for url in _archive_urls(source, attempts):
      try:
        return _install(_download(url, DOWNLOAD_TIMEOUT_S), url, source, cache)
      except _FETCH_ERRORS as err:
        attempts.append((f"{source['label']} {url}", _describe(err)))

  tried = "\n".join(f"  - {where}: {error}" for where, error in attempts)
  raise DataUnavailableError(
      f"could not obtain dataset {name!r}. Tried:\n{tried}\n"
      + _manual_instructions(name, sources, cache),
      attempts,
  )


def _read_folder(folder: Path, name: str | None = None) -> MovieLensTables:
  if all((folder / file).is_file() for file in GROUPLENS_FILES):
    return read_grouplens(folder, name=name)
  if all((folder / file).is_file() for file in ML1M_FILES):
    return read_grouplens_1m(folder, name=name)
  if any(folder.glob("*.inter")):
    return read_recbole(folder, name=name)
  # Some files of a layout but not all: its reader reports the missing one by name.
  if any((folder / file).is_file() for file in GROUPLENS_FILES):
    return read_grouplens(folder, name=name)
  if any((folder / file).is_file() for file in ML1M_FILES):
    return read_grouplens_1m(folder, name=name)
  raise DataFormatError(
      folder,
      None,
      "holds neither GroupLens files (u.data, u.user, u.item, or ML-1M's ratings.dat,"
      " users.dat, movies.dat) nor RecBole files (<name>.inter, <name>.user, <name>.item)",
  )


def load_movielens(
    source: str | os.PathLike[str] = "ml-100k", cache_dir: str | os.PathLike[str] | None = None
) -> MovieLensTables:
  """Loads MovieLens tables from a folder or, given a dataset name, from the verified cache.

  Args:
    source: An existing folder (GroupLens or RecBole layout, detected; read without checksum
      checks, so users may bring their own files), or a dataset name such as ``"ml-100k"``,
      fetched with `fetch_movielens`.
    cache_dir: Cache root for fetching; defaults to `default_cache_dir()`.

  Returns:
    The parsed tables.

  Raises:
    DataFormatError: A file is missing or malformed.
    DataUnavailableError: `source` is neither a folder nor a known dataset name, or the dataset
      had to be fetched and no source worked.
  """
  folder = Path(source)
  if folder.is_dir():
    return _read_folder(folder)
  if isinstance(source, str) and source in DATASET_SOURCES:
    return _read_folder(fetch_movielens(source, cache_dir), name=source)
  raise DataUnavailableError(
      f"{os.fspath(source)!r} is neither an existing folder nor a known dataset"
      f" ({', '.join(sorted(DATASET_SOURCES))})"
  )
